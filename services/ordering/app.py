"""ordering's composition root: the service declaration with its handlers and read models."""

from __future__ import annotations

from contracts import ordering as api
from services.ordering.handlers import create_indexes, router
from services.ordering.store import OUTBOX_COLLECTIONS
from services.runtime.service import Service

service = Service(
    "ordering",
    description="Consumables catalogue per model, orders and shipping (CATALOG §5).",
    outbox_collections=OUTBOX_COLLECTIONS,
    emits=[api.OrderPlaced, api.OrderShipped, api.OrderDelivered],
    routers=[router],
)
service.on_startup(create_indexes)
