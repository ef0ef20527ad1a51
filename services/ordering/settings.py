"""ordering's own `PORTAL_*` settings, on top of those every service reads."""

from __future__ import annotations

from services.runtime.instance import Instance
from services.runtime.settings import Settings


class OrderingSettings(Settings):
    # Prefix of the human-readable order numbers: `<prefix>-<year>-<six digits>`.
    ordering_number_prefix: str = "OR"
    # A (device, article) guard entry whose order was never stored (its worker died between the two writes and no
    # copy of the command ran again) stops blocking new orders after this many seconds: longer than a redelivered
    # copy waits for the dead worker's claim (PORTAL_CLAIM_LEASE_SECONDS).
    ordering_guard_grace_seconds: float = 120.0


def ordering_settings(instance: Instance) -> OrderingSettings:
    return instance.settings_as(OrderingSettings)
