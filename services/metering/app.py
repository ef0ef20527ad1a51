"""metering's composition root: the service declaration with its handlers, read models and scheduler."""

from __future__ import annotations

from contracts import metering as api
from services.metering import reminders
from services.metering.handlers import create_indexes, router
from services.metering.store import OUTBOX_COLLECTIONS
from services.runtime.service import Service

service = Service(
    "metering",
    description="Counters, meter readings, billing periods and reading reminders (CATALOG §4).",
    outbox_collections=OUTBOX_COLLECTIONS,
    emits=[api.ReadingSubmitted, api.ReminderDue, api.ReadingOverdue],
    routers=[router, reminders.router],
)
service.on_startup(create_indexes)
service.background(reminders.scheduler)
