"""Steps that many registration tests take."""

from __future__ import annotations

from datetime import datetime

from contracts.accounts import TermsAccepted
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import publish_event, token_for
from tests.support import eventually


async def accept_terms(registration: ServiceInstance, amqp_url: str, user_id: str, *,
                       terms_version: str | None = None, privacy_version: str | None = None,
                       accepted_at: datetime | None = None) -> str:
    """Publish accounts' `TermsAccepted` for the user, by default for the versions current in registration's
    settings (as accounts sends them from `accounts.accept_terms`); its message id."""
    event = TermsAccepted(user_id=user_id, terms_version=terms_version or registration.settings.terms_version,
                          privacy_version=privacy_version or registration.settings.privacy_version,
                          accepted_at=accepted_at)
    return await publish_event(amqp_url, TermsAccepted.routing_key, event.model_dump(mode="json"))


async def terms_handled(registration: ServiceInstance, message_id: str) -> None:
    """Wait until registration handled that `TermsAccepted` (its claim is done), whether it changed anything."""
    await event_handled(registration, message_id)


async def event_handled(registration: ServiceInstance, message_id: str) -> None:
    """Wait until registration handled the event it got with that message id (its claim is done), whether it
    changed anything."""
    async def handled() -> bool:
        claim = await registration.db.message_claims.find_one({"_id": {"$regex": f":{message_id}$"}, "done": True})
        return claim is not None
    await eventually(handled)


async def customer(settings: Settings, registration: ServiceInstance, amqp_url: str, *, accept: bool = True,
                   role: Role = Role.CUSTOMER, customer_number: str | None = "C-1") -> str:
    token, claims = token_for(settings, role, customer_number=customer_number)
    if accept:
        await accept_terms(registration, amqp_url, claims.user_id)

        async def known() -> bool:
            return await registration.db.terms_accepted.find_one({"_id": claims.user_id}) is not None
        await eventually(known)
    return token
