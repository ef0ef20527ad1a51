"""Placing an order: one delivery address, the device's own consumables, coverage, quantities, the editable address
lines and their defaults; once per command, numbered uniquely, and never twice for an article not delivered yet."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from contracts.accounts import SessionRevoked
from contracts.client import PortalClient, PortalError
from services.ordering.orders import guard_key
from services.runtime.commands import command_id, fingerprint
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.ordering.flows import (
    CONTACT,
    FUSER,
    HANSAALLEE,
    TONER_C,
    TONER_K,
    covered_customer,
    es5462,
    line,
    load_consumables,
    operator,
    order,
)
from tests.readmodels import provision_device, today
from tests.support import EventTap, outcome

pytestmark = pytest.mark.asyncio

NUMBER = re.compile(r"^OR-\d{4}-\d{6}$")


async def refusal(portal: PortalClient, body: dict[str, object], token: str) -> PortalError:
    with pytest.raises(PortalError) as refused:
        await portal.call("ordering.place_order", body, token=token)
    return refused.value


async def test_two_machines_at_one_address_are_one_order_to_their_location_with_the_given_attention(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    first = await es5462(amqp_url, ordering, customer)
    second = await es5462(amqp_url, ordering, customer, model="ES5431dn", location={
        "name": "Kundenbüro", "street": "hansaallee  187", "postal_code": "40549", "city": "DÜSSELDORF"})
    token, claims = token_for(settings, customer_number=customer)
    body = order(line(first, TONER_K, 2), line(second, TONER_C),
                 delivery={"attention": "Frau Zimmermann", "additional_info": "Rampe 3"}, reference="PO-77")
    async with EventTap(amqp_url, "ordering.#") as tap:
        placed = await portal.call("ordering.place_order", body, token=token, lang="de")
        event = await tap.next("ordering.order.placed")
    assert NUMBER.match(placed["order_number"]) and placed["status"] == "placed"
    assert placed["delivery_address"] == {**HANSAALLEE, "building_location": None, "attention": "Frau Zimmermann",
                                          "additional_info": "Rampe 3"}
    assert event["order_number"] == placed["order_number"] and event["customer_number"] == customer
    assert event["contact"] == CONTACT and event["language"] == "de" and event["reference"] == "PO-77"
    assert event["delivery_address"] == placed["delivery_address"]
    assert [(line_["serial_number"], line_["article_number"], line_["description"], line_["quantity"])
            for line_ in event["lines"]] == [
        (first["serial_number"], TONER_K, "TONER-K-ES5431/3452/5462-7K", 2),
        (second["serial_number"], TONER_C, "TONER-C-ES5431/3452/5462-6K", 1)]
    stored = await portal.call("ordering.get_order", {"order_number": placed["order_number"]}, token=token)
    assert (stored["status"], stored["placed_by"], stored["contract_number"]) == ("placed", claims.user_id, "K-1")
    assert stored["lines"] == event["lines"] and stored["tracking"] is None


async def test_machines_at_different_addresses_need_one_order_per_location(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    here = await es5462(amqp_url, ordering, customer)
    there = await es5462(amqp_url, ordering, customer, location={**HANSAALLEE, "street": "Hansaallee 189"})
    token, _ = token_for(settings, customer_number=customer)
    refused = await refusal(portal, order(line(here), line(here, TONER_C), line(there)), token)
    assert (refused.code, refused.fields) == ("multiple_delivery_addresses", {"lines.2.device_id": refused.fields[
        "lines.2.device_id"]})
    assert await ordering.db.orders.count_documents({}) == 0


async def test_an_article_that_is_not_a_consumable_of_the_devices_model_is_refused_naming_its_line(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    es = await es5462(amqp_url, ordering, customer)
    c332 = await es5462(amqp_url, ordering, customer, model="C332")  # no consumables listed for it
    token, _ = token_for(settings, customer_number=customer)
    refused = await refusal(portal, order(line(es), line(es, "46508712")), token)
    assert (refused.code, list(refused.fields)) == ("article_not_for_device", ["lines.1.article_number"])
    refused = await refusal(portal, order(line(c332)), token)
    assert (refused.code, list(refused.fields)) == ("article_not_for_device", ["lines.0.article_number"])
    assert await ordering.db.orders.count_documents({}) == 0


@pytest.mark.parametrize("contract", [
    {"includes_consumables": False},
    {"start_date": today() - timedelta(days=400), "end_date": today() - timedelta(days=1)},
    {"contract_number": "K-OTHER"},
])
async def test_a_device_without_a_running_contract_that_includes_consumables_is_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance,
        contract: dict[str, object]) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering, **contract)
    device = await es5462(amqp_url, ordering, customer)
    token, _ = token_for(settings, customer_number=customer)
    refused = await refusal(portal, order(line(device)), token)
    assert (refused.code, list(refused.fields)) == ("not_covered_by_contract", ["lines.0.device_id"])
    assert await ordering.db.orders.count_documents({}) == 0


@pytest.mark.parametrize("quantity", [0, 11, -1, 1.5, None, "2"])
async def test_a_quantity_outside_1_to_10_is_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance, quantity: object) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    body = order({"device_id": device["device_id"], "article_number": TONER_K, "quantity": quantity})
    refused = await refusal(portal, body, token)
    assert (refused.code, list(refused.fields)) == ("validation_failed", ["lines.0.quantity"])
    for allowed in (1, 10):
        body = order({"device_id": device["device_id"], "article_number": TONER_K, "quantity": allowed},
                     confirm_duplicate=True)
        assert await outcome(portal, "ordering.place_order", body, token=token) == "ok"


@pytest.mark.parametrize("field", ["street", "postal_code", "city", "name"])
async def test_only_attention_and_additional_info_of_the_address_may_be_given(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance, field: str) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    refused = await refusal(portal, order(line(device), delivery={"attention": "Empfang", field: "Elsewhere 1"}),
                            token)
    assert (refused.code, list(refused.fields)) == ("validation_failed", [f"delivery.{field}"])
    assert await ordering.db.orders.count_documents({}) == 0


async def test_another_customers_device_is_not_found_and_nothing_is_ordered(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    mine = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    theirs = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=mine["customer_number"])
    refused = await refusal(portal, order(line(mine), line(theirs)), token)
    assert (refused.code, refused.fields) == ("not_found", {"lines.1.device_id": "not_found"})
    refused = await refusal(portal, order(line({"device_id": "no-such-device"})), token)
    assert refused.code == "not_found"
    assert await ordering.db.orders.count_documents({}) == 0
    assert await ordering.db.guards.count_documents({"count": {"$gt": 0}}) == 0


async def test_a_line_repeated_in_one_order_is_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    refused = await refusal(portal, order(line(device), line(device, FUSER), line(device)), token)
    assert (refused.code, list(refused.fields)) == ("validation_failed", ["lines.2.article_number"])


async def test_saved_attention_and_info_become_the_default_of_each_device_of_the_order(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    first, second, other = [await es5462(amqp_url, ordering, customer) for _ in range(3)]
    token, _ = token_for(settings, customer_number=customer)
    saved = {"attention": "Herr Berg", "additional_info": "Tor 2"}
    await portal.call("ordering.place_order", order(line(first), line(second), delivery={
        **saved, "save_as_default": True}), token=token)
    await portal.call("ordering.place_order", order(line(other, FUSER), delivery={"attention": "Once only"}),
                      token=token)
    for device, defaults in ((first, saved), (second, saved), (other, {"attention": None, "additional_info": None})):
        orderable = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=token)
        assert orderable["delivery_defaults"] == defaults
    # An order without `delivery` goes with the device's defaults.
    placed = await portal.call("ordering.place_order", order(line(first, FUSER)), token=token)
    assert (placed["delivery_address"]["attention"], placed["delivery_address"]["additional_info"]) == (
        "Herr Berg", "Tor 2")


async def test_the_same_order_sent_twice_with_one_message_id_is_placed_once(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    body = order(line(device))
    async with EventTap(amqp_url, "ordering.order.placed") as tap:
        placed = await portal.call("ordering.place_order", body, token=token, message_id="order-1")
        again = await portal.call("ordering.place_order", body, token=token, message_id="order-1")
        await tap.next("ordering.order.placed")
        await asyncio.sleep(0.5)
    assert placed == again
    assert await ordering.db.orders.count_documents({}) == 1
    assert len(tap.named("ordering.order.placed")) == 1


async def test_a_placing_command_run_again_after_a_crash_finds_its_order(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    """The runtime's stored reply is gone (the worker died before storing it): the order's `_id`, derived from the
    command, still makes the second run answer with the first order."""
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    body = order(line(device))
    placed = await portal.call("ordering.place_order", body, token=token, message_id="order-2")
    await ordering.db.message_claims.delete_many({})
    again = await portal.call("ordering.place_order", body, token=token, message_id="order-2")
    assert again == placed
    assert await ordering.db.orders.count_documents({}) == 1


async def test_a_revoked_session_places_nothing_and_spends_no_number(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    """The handler reads while the revocation is looked up (claim_in_write); it asks before its first write."""
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, claims = token_for(settings, customer_number=device["customer_number"])
    now = datetime.now(UTC)
    await ordering.revocations.add(SessionRevoked(session_id=claims.session_id, revoked_at=now,
                                                  until=now + timedelta(hours=2)))
    counters = await ordering.db.counters.find().to_list()
    for body in (order(line(device)), order(line(device, quantity=0))):
        assert await outcome(portal, "ordering.place_order", body, token=token) == "unauthenticated"
    assert await ordering.db.orders.count_documents({}) == 0
    assert await ordering.db.counters.find().to_list() == counters
    assert await ordering.db.guards.count_documents({"count": {"$gt": 0}}) == 0


async def test_a_command_whose_worker_died_between_its_guard_and_its_order_is_placed_once_when_sent_again(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    """The database stopped in the middle of the bulk write: the order's guard entry was written, the order and the
    stored reply were not. The command sent again collides with its own entry, takes it back and is placed once."""
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, claims = token_for(settings, customer_number=device["customer_number"])
    body = order(line(device))
    order_id = f"o-{command_id('ordering.place_order', 'order-3', fingerprint(claims, body))}"
    key = guard_key(device["customer_number"], device["device_id"], TONER_K)
    await ordering.db.guards.insert_one({"_id": key, "count": 1, "open": {order_id: {
        "order_number": "OR-2026-999999", "at": "2026-01-01T00:00:00.000000Z"}}})
    placed = await portal.call("ordering.place_order", body, token=token, message_id="order-3")
    guard = await ordering.db.guards.find_one({"_id": key})
    assert guard is not None and guard["count"] == 1
    assert list(guard["open"]) == [order_id] and guard["open"][order_id]["order_number"] == placed["order_number"]
    assert await ordering.db.orders.count_documents({"_id": order_id}) == 1


async def test_twenty_concurrent_orders_of_one_customer_get_distinct_numbers_from_two_replicas(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance,
        second_replica: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    devices = [await es5462(amqp_url, ordering, customer, wait=False) for _ in range(20)]
    await wait_for_devices(ordering, 20)
    token, _ = token_for(settings, customer_number=customer)
    placed = await asyncio.gather(*(portal.call("ordering.place_order", order(line(device)), token=token)
                                    for device in devices))
    numbers = [reply["order_number"] for reply in placed]
    assert len(set(numbers)) == 20 and all(NUMBER.match(number) for number in numbers)
    assert await ordering.db.orders.count_documents({}) == 20


async def wait_for_devices(ordering: ServiceInstance, count: int) -> None:
    for _ in range(200):
        if await ordering.db.devices.count_documents({}) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("devices not stored")


async def test_an_article_ordered_again_before_the_first_is_delivered_is_refused_naming_it_unless_confirmed(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    first = await portal.call("ordering.place_order", order(line(device)), token=token)
    refused = await refusal(portal, order(line(device, FUSER), line(device, TONER_K, 2)), token)
    assert (refused.code, refused.fields) == ("duplicate_order", {
        "order_number": first["order_number"], "lines.1.article_number": first["order_number"]})
    confirmed = await portal.call("ordering.place_order", order(line(device, TONER_K, 2), confirm_duplicate=True),
                                  token=token)
    # Each undelivered order counts: with the first delivered, the confirmed one is still on its way.
    for status in ("mark_shipped", "mark_delivered"):
        await portal.call(f"ordering.operator.{status}", {"order_number": first["order_number"], "carrier": "DHL",
                                                          "tracking_number": "1"} if status == "mark_shipped" else
                          {"order_number": first["order_number"]}, token=operator(settings))
    refused = await refusal(portal, order(line(device)), token)
    assert refused.fields["order_number"] == confirmed["order_number"]
    await portal.call("ordering.operator.mark_shipped", {"order_number": confirmed["order_number"],
                                                         "carrier": "DHL", "tracking_number": "2"},
                      token=operator(settings))
    await portal.call("ordering.operator.mark_delivered", {"order_number": confirmed["order_number"]},
                      token=operator(settings))
    assert await outcome(portal, "ordering.place_order", order(line(device)), token=token) == "ok"


async def test_of_identical_orders_sent_at_the_same_moment_one_is_placed_and_the_others_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance,
        second_replica: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    devices = [await es5462(amqp_url, ordering, customer) for _ in range(4)]
    token, _ = token_for(settings, customer_number=customer)
    results = await asyncio.gather(*(outcome(portal, "ordering.place_order", order(line(device)), token=token)
                                     for device in devices for _ in range(3)))
    for index in range(len(devices)):
        assert sorted(results[index * 3:index * 3 + 3]) == ["duplicate_order", "duplicate_order", "ok"]
    assert await ordering.db.orders.count_documents({}) == len(devices)
    assert [guard["count"] async for guard in ordering.db.guards.find({})] == [1] * len(devices)


async def test_of_identical_orders_of_several_lines_sent_at_once_in_any_line_order_one_is_placed(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    first, second = [await es5462(amqp_url, ordering, customer) for _ in range(2)]
    token, _ = token_for(settings, customer_number=customer)
    lines = [line(first), line(second), line(first, FUSER), line(second, TONER_C)]
    for _ in range(3):
        results = await asyncio.gather(*(outcome(portal, "ordering.place_order", order(*shuffled), token=token)
                                         for shuffled in (lines, lines[::-1], lines[1:] + lines[:1])))
        assert sorted(results).count("ok") == 1, results
        ordered = await ordering.db.orders.find_one({"status": "placed"})
        assert ordered is not None
        for status in ("mark_shipped", "mark_delivered"):
            await portal.call(f"ordering.operator.{status}", {"order_number": ordered["order_number"], **(
                {"carrier": "DHL", "tracking_number": "1"} if status == "mark_shipped" else {})},
                token=operator(settings))


async def test_guard_entries_of_an_order_that_was_never_stored_stop_blocking_after_a_grace_period(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    """A worker died between entering its order in the guard and storing the order, and its command never ran again:
    within the grace period the entry counts (it may be an order being placed this moment), after it no more."""
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    recent, old = datetime.now(UTC), datetime.now(UTC) - timedelta(minutes=10)
    for article, at, number in ((TONER_K, recent, "OR-2026-900001"), (FUSER, old, "OR-2026-900002")):
        await ordering.db.guards.insert_one({"_id": guard_key(device["customer_number"], device["device_id"], article),
                                             "count": 1, "open": {
            random_id("o-"): {"order_number": number, "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}})
    refused = await refusal(portal, order(line(device, TONER_K)), token)
    assert (refused.code, refused.fields["order_number"]) == ("duplicate_order", "OR-2026-900001")
    assert await outcome(portal, "ordering.place_order", order(line(device, FUSER)), token=token) == "ok"


async def test_a_device_of_no_customer_registered_by_the_caller_has_no_contract_to_order_under(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    token, claims = token_for(settings, customer_number=None)
    device = await provision_device(amqp_url, ordering, customer_number=None, contract_number=None,
                                    model="ES5462 MFP", registered_by=claims.user_id, location=HANSAALLEE)
    refused = await refusal(portal, order(line(device)), token)
    assert refused.code == "not_covered_by_contract"
