"""`ordering.place_order` as a subject of the round trips (`bench.roundtrip`).

The ordering service runs as its own process with a customer under a contract that includes consumables, `devices`
devices at one address and the seed's consumables. Every call places a real one-line order of a (device, article) not
ordered before, so each pays every rule, the order number, the guard against a second undelivered order and the order
with its `ordering.order.placed`. An order refused counts as an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from bench.rounds import Prepare, Subject
from bench.world import World, fresh_prefix, publish_events, wait_ready, wait_until
from contracts.accounts import Contract, CustomerProvisioned
from contracts.client import PortalClient
from contracts.ordering import OrderPlaced, PlaceOrder
from contracts.registration import DeviceProvisioned, Location
from deploy.local.demo import OKI_CONSUMABLES
from services.runtime.tokens import Role

CUSTOMER, CONTRACT, MODEL = "C-BENCH-ORDER", "K-BENCH", "ES5462 MFP"
ARTICLES = [item["article_number"] for item in OKI_CONSUMABLES[MODEL]]


class Orders:
    """`place_order` bodies (`bench.client.Payload`): each a (device, article) of its own; confirmed duplicates once
    every pair was used."""

    def __init__(self, device_ids: list[str]) -> None:
        self.pairs = [(device_id, article) for article in ARTICLES for device_id in device_ids]
        self.next = 0

    def __call__(self, caller: int, concurrency: int) -> bytes:
        device_id, article = self.pairs[self.next % len(self.pairs)]
        self.next += 1
        return json.dumps(PlaceOrder.model_validate({
            "lines": [{"device_id": device_id, "article_number": article, "quantity": 1}],
            "contact": {"name": "Bench Buyer", "email": "buyer@example.com"},
            "delivery": {"attention": "Wareneingang", "additional_info": "Rampe 2"}, "reference": f"B-{self.next}",
            "confirm_duplicate": self.next > len(self.pairs)}).model_dump(mode="json")).encode()


def fleet(count: int) -> list[DeviceProvisioned]:
    """The customer's devices at one address, as registration announces them."""
    site = Location(name="Zentrale", street="Hansaallee 187", postal_code="40549", city="Düsseldorf", country="DE")
    return [DeviceProvisioned(device_id=f"d-order-{number:05d}", serial_number=f"AK5M{number:06d}", model=MODEL,
                              counters=["mono", "color", "scan"], customer_number=CUSTOMER, contract_number=CONTRACT,
                              location=site, version=1) for number in range(count)]


async def prepare(world: World, devices: list[DeviceProvisioned]) -> None:
    """The catalogue, the customer and the devices, until ordering offers the last device under the contract."""
    buyer = world.token(Role.CUSTOMER, CUSTOMER)
    async with PortalClient(world.amqp_url, timeout=30) as portal:
        await wait_ready(portal, "ordering")
        operator = world.token(Role.OPERATOR)
        for model, items in OKI_CONSUMABLES.items():
            await portal.call("ordering.operator.upsert_consumables", {"model": model, "items": items},
                              token=operator)
        customer = CustomerProvisioned(customer_number=CUSTOMER, customer_name="Bench GmbH", version=1, contracts=[
            Contract(contract_number=CONTRACT, type="page_price", start_date=date(2010, 1, 1),
                     includes_consumables=True)])
        await publish_events(world.amqp_url, [customer, *devices])

        async def covered() -> bool:
            try:
                reply = await portal.call("ordering.list_orderable", {"device_id": devices[-1].device_id},
                                          token=buyer)
            except Exception:  # not known yet: refused until the device's event is in
                return False
            return bool(reply["covered"])

        await wait_until(covered, "ordering took in the devices' and the customer's events")


@contextmanager
def place_order(world: World, devices: int) -> Iterator[tuple[Subject, Prepare]]:
    """The ordering process; the subject and the step that seeds it (run before measuring)."""
    fleet_ = fleet(devices)
    with world.service("ordering", fresh_prefix("ordering")) as pid:
        yield (Subject("ordering.place_order", PlaceOrder.routing_key, pid,
                       payload=Orders([device.device_id for device in fleet_]),
                       headers={"authorization": f"Bearer {world.token(Role.CUSTOMER, CUSTOMER)}"},
                       event=OrderPlaced.routing_key),
               lambda: prepare(world, fleet_))
