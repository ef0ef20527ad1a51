"""ticketing's own `PORTAL_*` settings, on top of those every service reads."""

from __future__ import annotations

from pydantic import Field

from services.runtime.instance import Instance
from services.runtime.settings import Settings


class TicketingSettings(Settings):
    # The first project number (`<project>/<n>`): the counter counts on from here. Raise it, never lower it, once
    # tickets exist (a lower start hands out numbers again, which the unique index refuses).
    ticketing_first_number: int = Field(default=1_000_001, ge=1)
    # A device's guard held by a ticket that was never stored (its worker died between taking the guard and
    # inserting the ticket, and no copy of the command ran again) stops blocking new tickets after this many
    # seconds: longer than a redelivered copy waits for the dead worker's claim (PORTAL_CLAIM_LEASE_SECONDS).
    ticketing_guard_grace_seconds: float = Field(default=120.0, ge=0)


def ticketing_settings(instance: Instance) -> TicketingSettings:
    return instance.settings_as(TicketingSettings)
