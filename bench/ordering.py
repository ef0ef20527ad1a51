"""`ordering.place_order` as a ratio to the raw round trip: calls per second and p99 at concurrency 1 and 32.

The ordering service runs as its own process (as deployed) against the benchmark's vhost and nx-27017, with a customer
under a contract that includes consumables, DEVICES devices at one address and the seed's consumables. Every call
places a real one-line order of a (device, article) not ordered before, so each pays every rule, the order number,
the guard against a second undelivered order and the order with its event; the raw echo server answers the same
bodies over the same client. An order refused counts as an error.

`python -m bench.ordering` runs it alone on its own vhost and nx-27017; `make bench` runs it too (`--only ordering`).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika

from bench.bulk import wait_ready
from bench.client import Caller, Cell
from bench.server import RAW_QUEUE, launched
from contracts.accounts import Contract, CustomerProvisioned
from contracts.client import PortalClient
from contracts.ordering import PlaceOrder
from contracts.registration import DeviceProvisioned, Location
from contracts.topology import EVENTS_EXCHANGE
from deploy.local import deps
from deploy.local.demo import OKI_CONSUMABLES
from services.runtime.settings import DEVELOPMENT_TOKEN_SECRET
from services.runtime.tokens import Role, issue_token

CONCURRENCIES = (1, 32)
DEVICES = 1_000  # x 7 articles: more fresh (device, article) pairs than a run places
CUSTOMER, CONTRACT, MODEL = "C-BENCH-ORDER", "K-BENCH", "ES5462 MFP"
ARTICLES = [item["article_number"] for item in OKI_CONSUMABLES[MODEL]]


@dataclass
class OrderingRun:
    cells: dict[str, list[Cell]]  # "raw" and "place_order", one cell per concurrency
    orders: int  # orders stored by the service (warm-ups included)
    placed: int  # ok replies (warm-ups included)

    def ratios(self) -> list[dict[str, Any]]:
        return [{"concurrency": raw.concurrency, "throughput": round(ours.calls_per_s / raw.calls_per_s, 2),
                 "p99": round(ours.percentile_ms(0.99) / raw.percentile_ms(0.99), 2)}
                for raw, ours in zip(self.cells["raw"], self.cells["place_order"], strict=True)]


class Orders:
    """`place_order` bodies (`bench.client.Payload`): each a (device, article) of its own; confirmed duplicates once
    every pair was used."""

    def __init__(self, device_ids: list[str]) -> None:
        self.pairs = [(device_id, article) for article in ARTICLES for device_id in device_ids]
        self.next = 0

    def __call__(self, caller: int) -> bytes:
        device_id, article = self.pairs[self.next % len(self.pairs)]
        self.next += 1
        return json.dumps(PlaceOrder.model_validate({
            "lines": [{"device_id": device_id, "article_number": article, "quantity": 1}],
            "contact": {"name": "Bench Buyer", "email": "buyer@example.com"},
            "delivery": {"attention": "Wareneingang", "additional_info": "Rampe 2"}, "reference": f"B-{self.next}",
            "confirm_duplicate": self.next > len(self.pairs)}).model_dump(mode="json")).encode()


def fleet() -> list[DeviceProvisioned]:
    """The customer's devices at one address, as registration announces them."""
    site = Location(name="Zentrale", street="Hansaallee 187", postal_code="40549", city="Düsseldorf", country="DE")
    return [DeviceProvisioned(device_id=f"d-bench-{number:05d}", serial_number=f"AK5M{number:06d}", model=MODEL,
                              counters=["mono", "color", "scan"], customer_number=CUSTOMER, contract_number=CONTRACT,
                              location=site, version=1) for number in range(DEVICES)]


async def publish(amqp_url: str, events: list[CustomerProvisioned | DeviceProvisioned]) -> None:
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for event in events:
            await exchange.publish(aio_pika.Message(event.model_dump_json().encode(), content_type="application/json",
                                                    message_id=uuid.uuid4().hex), routing_key=event.routing_key)


def token(role: Role, customer_number: str | None) -> str:
    issued, _ = issue_token(DEVELOPMENT_TOKEN_SECRET, user_id=f"bench-{role.value}", role=role,
                            now=datetime.now(UTC), lifetime=timedelta(hours=2), customer_number=customer_number)
    return issued


async def drive(amqp_url: str, ordering_pid: int, raw_pid: int, watch: dict[str, int], seconds: float,
                warmup: float) -> OrderingRun:
    async with PortalClient(amqp_url, timeout=30) as portal:
        await wait_ready(portal, "ordering")
        operator = token(Role.OPERATOR, None)
        for model, items in OKI_CONSUMABLES.items():
            await portal.call("ordering.operator.upsert_consumables", {"model": model, "items": items},
                              token=operator)
        devices = fleet()
        customer = CustomerProvisioned(customer_number=CUSTOMER, customer_name="Bench GmbH", version=1, contracts=[
            Contract(contract_number=CONTRACT, type="page_price", start_date=date(2010, 1, 1),
                     includes_consumables=True)])
        await publish(amqp_url, [customer, *devices])
        orderable = {"device_id": devices[-1].device_id}
        buyer = token(Role.CUSTOMER, CUSTOMER)
        for _ in range(1200):  # until the last device and the contract are in ordering's read models
            try:
                if (await portal.call("ordering.list_orderable", orderable, token=buyer))["covered"]:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.1)
        else:
            raise deps.DependencyError("ordering did not take in the devices' and the customer's events")
        device_ids = [device.device_id for device in devices]
        orders, echoed = Orders(device_ids), Orders(device_ids)  # the echo's bodies use up no pairs of the orders
        cells: dict[str, list[Cell]] = {"raw": [], "place_order": []}
        async with Caller(amqp_url, headers={"authorization": f"Bearer {buyer}"}) as caller:
            for concurrency in CONCURRENCIES:
                cells["raw"].append(await caller.cell(RAW_QUEUE, concurrency, seconds, warmup,
                                                      {"server": raw_pid, **watch}, payload=echoed))
                cells["place_order"].append(await caller.cell(
                    PlaceOrder.routing_key, concurrency, seconds, warmup, {"server": ordering_pid, **watch},
                    payload=orders, accept=lambda reply: bool(json.loads(reply).get("ok"))))
        listed = await portal.call("ordering.operator.list_orders", {"page_size": 1}, token=operator)
    placed = sum(measured.replies for measured in cells["place_order"])
    return OrderingRun(cells, int(listed["total"]), placed)


def run_ordering(amqp_url: str, mongo_url: str, nx_pid: int, seconds: float, warmup: float) -> OrderingRun:
    print(f"ordering.place_order against the raw echo, c={CONCURRENCIES}, {seconds:g} s each ...", flush=True)
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")},
           "PORTAL_AMQP_URL": amqp_url, "PORTAL_MONGODB_URL": mongo_url,
           "PORTAL_DATABASE_PREFIX": f"ordering{uuid.uuid4().hex[:8]}_", "PORTAL_LOG_LEVEL": "WARNING"}
    with launched("service", "ordering", env=env) as ordering_pid, launched("raw", amqp_url) as raw_pid:
        return asyncio.run(drive(amqp_url, ordering_pid, raw_pid, {"nx": nx_pid, "client": os.getpid()}, seconds,
                                 warmup))


def print_ordering(run: OrderingRun) -> None:
    print("\n| server | c | calls/s | p50 ms | p99 ms | errors | CPU % server / nx-27017 / client |")
    print("|---|---|---|---|---|---|---|")
    for name, cells in run.cells.items():
        for measured in cells:
            cpu = measured.cpu_percent
            print(f"| {name} | {measured.concurrency} | {measured.calls_per_s:,.0f} "
                  f"| {measured.percentile_ms(0.5):.2f} | {measured.percentile_ms(0.99):.2f} | {measured.errors} "
                  f"| {cpu.get('server', 0):.0f} / {cpu.get('nx', 0):.0f} / {cpu.get('client', 0):.0f} |")
    print("\nplace_order / raw: " + ", ".join(f"c={row['concurrency']}: throughput {row['throughput']:.2f}x, "
                                               f"p99 {row['p99']:.2f}x" for row in run.ratios()))
    if run.orders != run.placed:
        print(f"WARNING: {run.placed} orders placed but {run.orders} stored")


def ordering_json(run: OrderingRun) -> dict[str, Any]:
    return {"results": {name: [measured.summary() for measured in cells] for name, cells in run.cells.items()},
            "ratios": run.ratios(), "orders_stored": run.orders, "orders_placed": run.placed}


def main() -> None:
    from bench.run import nx_27017, rabbitmq_vhost

    with (tempfile.TemporaryDirectory(prefix="bench-ordering-") as tmp, rabbitmq_vhost(Path(tmp)) as amqp_url,
          nx_27017(Path(tmp)) as (mongo_url, nx_pid)):
        print_ordering(run_ordering(amqp_url, mongo_url, nx_pid, 5.0, 1.0))


if __name__ == "__main__":
    main()
