"""`ticketing.open_ticket` as a subject of the round trips (`bench.roundtrip`).

The ticketing service runs as its own process with `devices` devices of one customer in its read model (written
directly through its own handler, `bench.seeding`). A device holds one open ticket at a time, so every call opens a
ticket for a device of its own (its guard, project number, ticket and `ticketing.ticket.opened`); a run needs more
devices than calls, and a call refused (`open_ticket_exists` once they ran out) counts as an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.rounds import Prepare, Subject
from bench.seeding import seed
from bench.world import World, fresh_prefix
from contracts.base import Event
from contracts.registration import DeviceProvisioned, Location
from contracts.ticketing import OpenTicket, TicketOpened
from services.runtime.events import EventContext
from services.runtime.tokens import Role
from services.ticketing import handlers

CUSTOMER, CONTRACT = "C-BENCH-TICKET", "K-BENCH-TICKET"


class Tickets:
    """`open_ticket` bodies (`bench.client.Payload`): the next device not used yet, in turn."""

    def __init__(self, device_ids: list[str]) -> None:
        self.device_ids = device_ids
        self.next = 0

    def __call__(self, caller: int, concurrency: int) -> bytes:
        device_id = self.device_ids[self.next % len(self.device_ids)]
        self.next += 1
        return json.dumps(OpenTicket.model_validate({
            "device_id": device_id, "contact": {"name": "Bench Caller", "email": "desk@bench.example",
                                                "phone": "0211/5266-252"},
            "description": f"Paper jam in tray 2 (call {self.next}).", "category": "malfunction",
        }).model_dump(mode="json", exclude_none=True)).encode()


def fleet(count: int) -> list[DeviceProvisioned]:
    """The customer's devices, each at an address a technician can find."""
    return [DeviceProvisioned(
        device_id=f"d-ticket-{number:06d}", serial_number=f"AK7T{number:06d}", model="ES5431dn",
        counters=["mono", "color"], customer_number=CUSTOMER, contract_number=CONTRACT,
        location=Location(name=f"Site {number // 50}", street=f"Hansaallee {number % 300 + 1}", postal_code="40549",
                          city="Düsseldorf", country="DE"), version=1) for number in range(count)]


async def remember(event: Event, ctx: EventContext) -> None:
    assert isinstance(event, DeviceProvisioned)
    await handlers.remember_device(event, ctx)


async def prepare(world: World, database: str, devices: list[DeviceProvisioned]) -> None:
    """The devices, written as ticketing's handler stores them: as events, the other services would take them in too,
    for minutes."""
    await world.with_db(database, lambda db: seed(db, remember, devices))


@contextmanager
def open_ticket(world: World, devices: int) -> Iterator[tuple[Subject, Prepare]]:
    """The ticketing process; the subject and the step that seeds it (run before measuring)."""
    fleet_ = fleet(devices)
    prefix = fresh_prefix("ticketing")
    headers: dict[str, Any] = {"authorization": f"Bearer {world.token(Role.CUSTOMER, CUSTOMER)}"}
    with world.service("ticketing", prefix) as pid:
        yield (Subject("ticketing.open_ticket", OpenTicket.routing_key, pid,
                       payload=Tickets([device.device_id for device in fleet_]), headers=headers,
                       event=TicketOpened.routing_key),
               lambda: prepare(world, f"{prefix}ticketing", fleet_))
