"""ticketing's composition root: the service declaration with its handlers and its read model."""

from __future__ import annotations

from contracts import ticketing as api
from services.runtime.service import Service
from services.ticketing.handlers import create_indexes, router
from services.ticketing.store import OUTBOX_COLLECTIONS

service = Service(
    "ticketing",
    description="Service requests and their life cycle (CATALOG §6).",
    outbox_collections=OUTBOX_COLLECTIONS,
    emits=[api.TicketOpened, api.TicketUpdated, api.TicketStatusChanged],
    routers=[router],
)
service.on_startup(create_indexes)
