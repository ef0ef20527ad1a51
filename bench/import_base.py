"""The installed-base import: 1,000 and then 10,000 new devices, then the 10,000 again (each a versioned change),
sent as one `registration.operator.import_installed_base` each; devices per second to the reply and to the last
`registration.device.provisioned` published, and the registration process's peak memory after each (goal:
>= 2,000 devices/s at 10,000, memory flat beyond the request itself).

`python -m bench.import_base` runs it alone on its own vhost and nx-27017; `make bench` runs it too.
Registration runs as its own process, as in `bench.bulk`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika

from bench.bulk import peak_rss_mb, service_process, wait_ready
from contracts.client import PortalClient
from contracts.registration import DeviceProvisioned
from contracts.topology import EVENTS_EXCHANGE
from deploy.local.demo import OKI_MODELS
from services.runtime.settings import DEVELOPMENT_TOKEN_SECRET
from services.runtime.tokens import Role, issue_token

# (devices, first serial): new devices twice, then the largest again as re-imports of existing devices.
STEPS = ((1_000, 0, "new"), (10_000, 1_000, "new"), (10_000, 1_000, "re-import"))
GOAL_DEVICES_PER_S = 2_000


@dataclass
class ImportRun:
    devices: int
    kind: str
    body_bytes: int
    seconds_to_reply: float
    seconds_to_events: float | None
    imported: int
    rejected: int
    peak_rss_mb: float

    @property
    def devices_per_s(self) -> float:
        return self.devices / self.seconds_to_reply


def fleet(count: int, first: int, generation: str) -> list[dict[str, Any]]:
    """Devices as a vendor's ERP sends them: customer, contract, address, two counters."""
    read_on = (date.today() - timedelta(days=3)).isoformat()
    return [{
        "serial_number": f"AK5A{first + number:06d}", "model": "ES5431dn",
        "customer_number": f"C-{(first + number) // 20:05d}", "contract_number": f"K-{(first + number) // 20:05d}",
        "location": {"name": f"Site {number // 20}", "street": f"Hauptstraße {number % 200 + 1}",
                     "postal_code": f"{10000 + number % 9000}", "city": "Berlin", "country": "DE",
                     "building_location": f"Floor {number % 7} ({generation})"},
        "counters": [{"name": "mono", "value": 1000 + number, "date": read_on},
                     {"name": "color", "value": 500 + number, "date": read_on}],
        "e_maintenance": number % 3 == 0,
    } for number in range(count)]


class EventCount:
    """Counts `registration.device.provisioned` events as they are published."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.count += 1
        self.last = time.monotonic()

    async def reached(self, target: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while self.count < target:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        return self.last


async def drive(amqp_url: str, registration_pid: int) -> tuple[float, list[ImportRun]]:
    operator, _ = issue_token(DEVELOPMENT_TOKEN_SECRET, user_id="bench-operator", role=Role.OPERATOR,
                              now=datetime.now(UTC), lifetime=timedelta(hours=2))
    runs: list[ImportRun] = []
    async with PortalClient(amqp_url, timeout=900) as portal:
        await wait_ready(portal, "registration")
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
        idle_rss = peak_rss_mb(registration_pid)
        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=DeviceProvisioned.routing_key)
        events = EventCount()
        await queue.consume(events.on_message, no_ack=True)
        for count, first, kind in STEPS:
            devices = fleet(count, first, f"{kind}-{count}")
            body = {"devices": devices}
            size = len(json.dumps(body).encode())
            before = events.count
            started = time.monotonic()
            reply = await portal.call("registration.operator.import_installed_base", body, token=operator)
            replied = time.monotonic()
            last_event = await events.reached(before + count, timeout=600)
            runs.append(ImportRun(count, kind, size, replied - started,
                                  None if last_event is None else last_event - started, reply["imported"],
                                  len(reply["rejected"]), peak_rss_mb(registration_pid)))
        await connection.close()
    return idle_rss, runs


def run_import(amqp_url: str, mongo_url: str) -> tuple[float, list[ImportRun]]:
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")},
           "PORTAL_AMQP_URL": amqp_url, "PORTAL_MONGODB_URL": mongo_url,
           "PORTAL_DATABASE_PREFIX": f"import{uuid.uuid4().hex[:8]}_", "PORTAL_LOG_LEVEL": "WARNING"}
    with service_process("registration", env) as registration:
        return asyncio.run(drive(amqp_url, registration))


def print_import(idle_rss: float, runs: list[ImportRun]) -> None:
    print("\n| devices | kind | body MB | to reply s | devices/s | to last event s | imported | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        events = f"{run.seconds_to_events:.2f}" if run.seconds_to_events is not None else "missing"
        print(f"| {run.devices:,} | {run.kind} | {run.body_bytes / 1024 / 1024:.1f} | {run.seconds_to_reply:.2f} "
              f"| {run.devices_per_s:,.0f} | {events} | {run.imported:,} | {run.peak_rss_mb:.0f} |")
    largest = max((run for run in runs if run.kind == "new"), key=lambda run: run.devices)
    print(f"\nGoal: >= {GOAL_DEVICES_PER_S:,} devices/s at {largest.devices:,} new devices -> "
          f"{'met' if largest.devices_per_s >= GOAL_DEVICES_PER_S else 'MISSED'} "
          f"({largest.devices_per_s:,.0f} devices/s); peak RSS {idle_rss:.0f} MB idle, "
          + ", ".join(f"{run.peak_rss_mb:.0f} MB after {run.devices:,} {run.kind}" for run in runs))


def main() -> None:
    from bench.run import nx_27017, rabbitmq_vhost

    with (tempfile.TemporaryDirectory(prefix="bench-import-") as tmp, rabbitmq_vhost(Path(tmp)) as amqp_url,
          nx_27017(Path(tmp)) as (mongo_url, _)):
        print("installed-base import, " + ", ".join(f"{count:,} {kind}" for count, _, kind in STEPS) + " ...",
              flush=True)
        print_import(*run_import(amqp_url, mongo_url))


if __name__ == "__main__":
    main()
