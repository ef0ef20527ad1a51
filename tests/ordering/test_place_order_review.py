"""Review findings on `ordering.place_order` claiming with its write (claim_in_write), fixed: each test failed before
its fix. After a collision the handler now reads its order first (stored: it answers with it and takes nothing back),
takes back only its own attempt's entries (each carries a token), and removes entries a copy that died left behind
only while no other copy of the command holds or answered its claim."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.client import PortalClient, PortalError
from services.ordering.orders import guard_key
from services.ordering.store import OrderingStore
from services.runtime.commands import command_id, fingerprint
from services.runtime.mongo import stamp
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import token_for
from tests.ordering.flows import TONER_K, covered_customer, es5462, line, load_consumables, order
from tests.support import outcome

pytestmark = pytest.mark.asyncio


async def test_a_copy_taking_over_the_claim_of_its_stored_order_keeps_the_orders_guard(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy A of a command wrote the claim, the guard entry and the order, and the database stopped before the stored
    reply (the last operation of the same bulk write); copy B, re-sent by a caller that timed out, had read its order
    before A's write landed (not found). B's claim collides, B waits out A's lease, takes the claim over and writes
    again: its guard upsert collides with A's entry (the same order id). Found: the handler took back "this order's"
    entries for every key, i.e. those of the stored order, and answered `conflict`; an identical order was then
    placed."""
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, claims = token_for(settings, customer_number=device["customer_number"])
    body = order(line(device))
    placed = await portal.call("ordering.place_order", body, token=token, message_id="order-9")
    order_id = f"o-{command_id('ordering.place_order', 'order-9', fingerprint(claims, body))}"
    key = guard_key(device["customer_number"], device["device_id"], TONER_K)
    # The database stopped after the order, before the stored reply: the claim is not done, its lease ran out.
    await ordering.db.message_claims.update_one(
        {"_id": "ordering.place_order:order-9"},
        {"$set": {"done": False, "reply": None, "owner": "dead-worker",
                  "lease_until": datetime.now(UTC) - timedelta(seconds=1)}})
    # Copy B read its own order before copy A's write landed.
    original = OrderingStore.order_by_id
    missed: list[str] = []

    async def read_before_the_write(self: OrderingStore, wanted: str) -> Any:
        if wanted == order_id and not missed:
            missed.append(wanted)
            return None
        return await original(self, wanted)

    monkeypatch.setattr(OrderingStore, "order_by_id", read_before_the_write)
    try:
        again = (await portal.call("ordering.place_order", body, token=token, message_id="order-9"))["order_number"]
    except PortalError as error:
        again = error.code
    monkeypatch.undo()
    guard = await ordering.db.guards.find_one({"_id": key})
    assert await ordering.db.orders.count_documents({}) == 1
    assert again == placed["order_number"], (again, guard)  # conflict, and the guard {"count": 0, "open": {}}
    assert guard is not None and guard["count"] == 1 and order_id in guard["open"], guard
    assert await outcome(portal, "ordering.place_order", body, token=token) == "duplicate_order"


async def test_a_late_take_back_by_one_copy_keeps_the_guard_of_the_order_another_copy_placed(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The database stopped in the middle of the bulk write: the claim and the order's guard entry were written, the
    order was not. The command is sent again twice (the caller's retry, and a redelivery). Copy A takes the claim
    over, collides with the entry left behind, and its write releases the claim; before A takes its entries back,
    copy B claims, collides likewise, takes them back, and places the order. Found: A's take-back, late, removed the
    entry of the order B stored: the order was placed and its guard empty."""
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, claims = token_for(settings, customer_number=device["customer_number"])
    body = order(line(device))
    sender = fingerprint(claims, body)
    order_id = f"o-{command_id('ordering.place_order', 'order-7', sender)}"
    key = guard_key(device["customer_number"], device["device_id"], TONER_K)
    now = datetime.now(UTC)
    await ordering.db.guards.insert_one({"_id": key, "count": 1, "open": {order_id: {
        "order_number": "OR-2026-999999", "at": stamp(now - timedelta(seconds=5))}}})
    await ordering.db.message_claims.insert_one({
        "_id": "ordering.place_order:order-7", "done": False, "fingerprint": sender, "owner": "dead-worker",
        "lease_until": now - timedelta(seconds=1), "expires_at": now + timedelta(hours=1)})
    original = OrderingStore.release_guards
    entered = asyncio.Event()

    async def late_take_back(self: OrderingStore, keys: Any, holder: str, **options: Any) -> None:
        if holder == order_id and not entered.is_set():  # copy A's, after its collision
            entered.set()
            for _ in range(100):
                if await self.orders.find_one({"_id": order_id}) is not None:
                    break
                await asyncio.sleep(0.05)
        await original(self, keys, holder, **options)

    monkeypatch.setattr(OrderingStore, "release_guards", late_take_back)
    first = asyncio.create_task(portal.call("ordering.place_order", body, token=token, message_id="order-7"))
    await asyncio.wait_for(entered.wait(), 10)
    second = await portal.call("ordering.place_order", body, token=token, message_id="order-7")
    assert (await first)["order_number"] == second["order_number"]
    monkeypatch.undo()
    assert await ordering.db.orders.count_documents({}) == 1
    guard = await ordering.db.guards.find_one({"_id": key})
    assert guard is not None and guard["count"] == 1 and order_id in guard["open"], guard
    assert await outcome(portal, "ordering.place_order", body, token=token) == "duplicate_order"
