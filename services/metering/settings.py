"""metering's own `PORTAL_*` settings, on top of those every service reads."""

from __future__ import annotations

from services.runtime.instance import Instance
from services.runtime.settings import Settings

MB = 1024 * 1024
# `submit_bulk` and `usage` carry files: how many of their messages one replica holds at once.
FILE_PREFETCH = 2


class MeteringSettings(Settings):
    # How often the built-in scheduler looks whether a day's reminders are still to run (each day runs once
    # per replica and sends each reminder once however many replicas run).
    metering_scheduler_seconds: float = 300.0
    # A scheduler that was down catches up on at most this many past days.
    metering_catch_up_days: int = 14
    # Readings files: bigger ones are refused with `file_too_large`, longer ones with `too_many_rows`.
    metering_file_max_bytes: int = 5 * MB  # base64 in a message of at most PORTAL_MAX_BODY_BYTES (10 MB)
    metering_file_max_rows: int = 10_000
    # Devices judged and stored per write of `submit_bulk`.
    metering_batch_devices: int = 500
    # Plausibility: a reading is flagged when the pages per day since the last reading exceed this many times the
    # device's own average, and are at least `metering_plausible_pages` pages.
    metering_plausibility_factor: float = 5.0
    metering_plausible_pages: int = 500
    # Reminder documents (one per recipient) written per round trip.
    metering_reminder_batch: int = 500


def metering_settings(instance: Instance) -> MeteringSettings:
    return instance.settings_as(MeteringSettings)
