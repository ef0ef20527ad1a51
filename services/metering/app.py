"""metering's composition root: the service declaration its handlers register on."""

from __future__ import annotations

from services.runtime.service import Service

service = Service(
    "metering",
    description="Counters, meter readings, billing periods and reading reminders (CATALOG §4).",
)
