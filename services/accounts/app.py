"""accounts' composition root: the service declaration with its handlers and start-up."""

from __future__ import annotations

from contracts import accounts as api
from services.accounts.handlers import bootstrap, router
from services.accounts.store import OUTBOX_COLLECTIONS
from services.runtime.service import Service

service = Service(
    "accounts",
    description="People, customers, contracts, sessions and access tokens (CATALOG §2).",
    outbox_collections=OUTBOX_COLLECTIONS,
    emits=[api.UserRegistered, api.EmailConfirmationRequested, api.EmailChangeRequested, api.UserActivated,
           api.VerificationDecided, api.PasswordResetRequested, api.PasswordChanged, api.UsernameReminderRequested,
           api.ProfileUpdated, api.TermsAccepted, api.SessionRevoked, api.CustomerProvisioned],
    routers=[router],
)
service.on_startup(bootstrap)
