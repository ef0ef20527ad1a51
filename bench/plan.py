"""How much one run measures: the full run of `make bench`, and `--quick`, a smoke run of every part in seconds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Plan:
    seconds: float  # measured per round-trip cell
    warmup: float  # unmeasured first, per cell
    repeats: int  # of every round-trip cell and bulk measurement
    concurrencies: tuple[int, ...]
    submit_devices: int  # metering: callers take turns over them
    order_devices: int  # ordering: x 7 articles, one order each
    ticket_devices: int  # ticketing: one ticket each, so more than the calls of a run
    replicas: tuple[int, ...]  # metering replicas, measured in this order (balanced against drift)
    file_devices: int  # metering: 2 counters each, so twice as many rows
    registration_rows: int
    import_devices: int
    reminder_devices: int
    mails: int

    def json(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan(seconds=2.0, warmup=0.5, repeats=3, concurrencies=(1, 32), submit_devices=512, order_devices=1_000,
            ticket_devices=6_000, replicas=(1, 2, 4, 4, 2, 1, 1, 2, 4), file_devices=5_000, registration_rows=25,
            import_devices=10_000, reminder_devices=100_000, mails=500)
QUICK = Plan(seconds=0.3, warmup=0.1, repeats=1, concurrencies=(1, 32), submit_devices=64, order_devices=20,
             ticket_devices=400, replicas=(1, 2), file_devices=50, registration_rows=25, import_devices=100,
             reminder_devices=500, mails=10)
