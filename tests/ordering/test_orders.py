"""Finding orders (only one's own: by number, device, status, quick search) and the back office: what to ship,
oldest first, shipping with tracking and delivery, and the transitions it refuses."""

from __future__ import annotations

import pytest

from contracts.accounts import Contract
from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_id, token_for
from tests.ordering.flows import (
    CONTACT,
    FUSER,
    TONER_C,
    covered_customer,
    es5462,
    line,
    load_consumables,
    operator,
    order,
)
from tests.readmodels import provision_customer, today
from tests.support import EventTap, outcome

pytestmark = pytest.mark.asyncio


async def test_a_customer_never_sees_orders_for_or_finds_by_number_another_customers_devices_or_orders(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    mine = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    theirs = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    me, _ = token_for(settings, customer_number=mine["customer_number"])
    them, _ = token_for(settings, customer_number=theirs["customer_number"])
    my_order = await portal.call("ordering.place_order", order(line(mine)), token=me)
    their_order = await portal.call("ordering.place_order", order(line(theirs)), token=them)
    assert await outcome(portal, "ordering.get_order", {"order_number": their_order["order_number"]}, token=me) \
        == "not_found"
    assert await outcome(portal, "ordering.place_order", order(line(theirs, FUSER)), token=me) == "not_found"
    assert await outcome(portal, "ordering.list_orderable", {"device_id": theirs["device_id"]}, token=me) \
        == "not_found"
    listed = await portal.call("ordering.list_orders", {}, token=me)
    assert [item["order_number"] for item in listed["items"]] == [my_order["order_number"]]
    for search in ({"order_number": their_order["order_number"]}, {"device_id": theirs["device_id"]}):
        assert (await portal.call("ordering.list_orders", search, token=me))["total"] == 0
    no_customer, _ = token_for(settings, customer_number=None)
    assert (await portal.call("ordering.list_orders", {}, token=no_customer))["total"] == 0
    assert await outcome(portal, "ordering.get_order", {"order_number": my_order["order_number"]},
                         token=no_customer) == "not_found"


async def test_list_orders_filters_by_device_status_and_part_of_the_number_newest_first(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    first, second = [await es5462(amqp_url, ordering, customer) for _ in range(2)]
    token, _ = token_for(settings, customer_number=customer)
    numbers = [(await portal.call("ordering.place_order", order(*lines), token=token))["order_number"]
               for lines in ([line(first, TONER_C)], [line(second, TONER_C)], [line(first, FUSER)],
                             [line(second, FUSER), line(first)])]
    await portal.call("ordering.operator.mark_shipped", {"order_number": numbers[0], "carrier": "DHL",
                                                         "tracking_number": "00340434"}, token=operator(settings))

    async def listed(**filters: object) -> list[str]:
        reply = await portal.call("ordering.list_orders", filters, token=token)
        return [item["order_number"] for item in reply["items"]]

    assert await listed() == numbers[::-1]
    assert await listed(device_id=first["device_id"]) == [numbers[3], numbers[2], numbers[0]]
    assert await listed(device_id=second["device_id"]) == [numbers[3], numbers[1]]
    assert await listed(status="shipped") == [numbers[0]]
    assert await listed(status="placed", device_id=first["device_id"]) == [numbers[3], numbers[2]]
    assert await listed(order_number=numbers[1]) == [numbers[1]]
    assert await listed(order_number=numbers[1][-6:].lower()) == [numbers[1]]  # a part of it will do
    assert await listed(order_number=".*") == []  # searched for as text, not as a pattern
    page = await portal.call("ordering.list_orders", {"page": 2, "page_size": 2}, token=token)
    assert ([item["order_number"] for item in page["items"]], page["total"]) == ([numbers[1], numbers[0]], 4)
    assert await outcome(portal, "ordering.list_orders", {"status": "cancelled"}, token=token) == "validation_failed"


async def test_a_contract_sign_in_sees_only_its_contracts_devices_and_orders(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = random_id("C-")
    await provision_customer(amqp_url, ordering, customer, contracts=[
        Contract(contract_number=number, type="page_price", start_date=today(), includes_consumables=True)
        for number in ("K-1", "K-2")])
    k1 = await es5462(amqp_url, ordering, customer, contract_number="K-1")
    k2 = await es5462(amqp_url, ordering, customer, contract_number="K-2")
    whole, _ = token_for(settings, customer_number=customer)
    contract, _ = token_for(settings, customer_number=customer, contract_number="K-1")
    both = await portal.call("ordering.place_order", order(line(k1), line(k2)), token=whole)
    only_k2 = await portal.call("ordering.place_order", order(line(k2, FUSER)), token=whole)
    assert await outcome(portal, "ordering.list_orderable", {"device_id": k2["device_id"]}, token=contract) \
        == "not_found"
    assert await outcome(portal, "ordering.place_order", order(line(k2, TONER_C)), token=contract) == "not_found"
    own = await portal.call("ordering.place_order", order(line(k1, FUSER)), token=contract)
    listed = await portal.call("ordering.list_orders", {}, token=contract)
    assert [item["order_number"] for item in listed["items"]] == [own["order_number"]]
    for other in (both, only_k2):
        assert await outcome(portal, "ordering.get_order", {"order_number": other["order_number"]},
                             token=contract) == "not_found"
    everything = await portal.call("ordering.list_orders", {}, token=whole)
    assert everything["total"] == 3


async def test_a_claimant_outside_the_customer_sees_the_orders_of_the_device_they_claimed(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    claimant, claims = token_for(settings, customer_number=random_id("C-"))
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering),
                          claimants=[random_id("u"), claims.user_id])
    member, _ = token_for(settings, customer_number=device["customer_number"])
    placed = await portal.call("ordering.place_order", order(line(device)), token=claimant)
    for token in (claimant, member):
        assert (await portal.call("ordering.get_order", {"order_number": placed["order_number"]},
                                  token=token))["order_number"] == placed["order_number"]


async def test_operator_commands_are_refused_to_customers(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    dealer, _ = token_for(settings, Role.DEALER, customer_number=device["customer_number"])
    placed = await portal.call("ordering.place_order", order(line(device)), token=token)
    number = placed["order_number"]
    for caller in (token, dealer):
        for command, body in (
                ("ordering.operator.upsert_consumables", {"model": "ES5462 MFP", "items": [
                    {"article_number": "1", "description": "x", "kind": "other"}]}),
                ("ordering.operator.mark_shipped", {"order_number": number, "carrier": "DHL",
                                                    "tracking_number": "1"}),
                ("ordering.operator.mark_delivered", {"order_number": number}),
                ("ordering.operator.list_orders", {})):
            assert await outcome(portal, command, body, token=caller) == "forbidden"
    assert await outcome(portal, "ordering.place_order", order(line(device, FUSER))) == "unauthenticated"
    stored = await portal.call("ordering.get_order", {"order_number": number}, token=token)
    assert stored["status"] == "placed"
    assert len((await portal.call("ordering.list_orderable", {"device_id": device["device_id"]},
                                  token=token))["items"]) == 7


async def test_the_back_office_lists_what_to_ship_oldest_first_with_devices_and_address(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    placed = []
    for _ in range(3):
        device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
        token, _ = token_for(settings, customer_number=device["customer_number"])
        reply = await portal.call("ordering.place_order", order(line(device), delivery={"attention": "Lager"}),
                                  token=token)
        placed.append((reply["order_number"], device))
    await portal.call("ordering.operator.mark_shipped", {"order_number": placed[1][0], "carrier": "DHL",
                                                         "tracking_number": "1"}, token=operator(settings))
    waiting = await portal.call("ordering.operator.list_orders", {}, token=operator(settings))
    assert [item["order_number"] for item in waiting["items"]] == [placed[0][0], placed[2][0]]
    first = waiting["items"][0]
    assert (first["lines"][0]["serial_number"], first["lines"][0]["device_id"]) == (
        placed[0][1]["serial_number"], placed[0][1]["device_id"])
    assert (first["delivery_address"]["street"], first["delivery_address"]["attention"]) == ("Hansaallee 187",
                                                                                           "Lager")
    assert first["contact"] == CONTACT and first["customer_number"] == placed[0][1]["customer_number"]
    shipped = await portal.call("ordering.operator.list_orders", {"status": "shipped"}, token=operator(settings))
    assert [item["order_number"] for item in shipped["items"]] == [placed[1][0]]
    # The back office also finds any order by its number.
    found = await portal.call("ordering.get_order", {"order_number": placed[2][0]}, token=operator(settings))
    assert found["order_number"] == placed[2][0]


async def test_an_order_is_shipped_with_tracking_and_then_delivered_each_announced_to_its_contact(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    number = (await portal.call("ordering.place_order", order(line(device)), token=token, lang="nb"))["order_number"]
    shipping = {"order_number": number, "carrier": "DHL", "tracking_number": "00340434161094042557",
                "tracking_url": "https://www.dhl.de/track?piececode=00340434161094042557"}
    async with EventTap(amqp_url, "ordering.#") as tap:
        assert await portal.call("ordering.operator.mark_shipped", shipping, token=operator(settings)) == {
            "status": "shipped"}
        shipped = await tap.next("ordering.order.shipped")
        assert await portal.call("ordering.operator.mark_shipped", shipping, token=operator(settings)) == {
            "status": "shipped"}  # sent again: fine, and not announced twice
        stored = await portal.call("ordering.get_order", {"order_number": number}, token=token)
        assert await portal.call("ordering.operator.mark_delivered", {"order_number": number},
                                 token=operator(settings)) == {"status": "delivered"}
        delivered = await tap.next("ordering.order.delivered")
        assert await portal.call("ordering.operator.mark_delivered", {"order_number": number},
                                 token=operator(settings)) == {"status": "delivered"}
    assert (shipped["order_number"], shipped["contact"], shipped["language"]) == (number, CONTACT, "nb")
    assert {key: shipped["tracking"][key] for key in ("carrier", "tracking_number", "tracking_url")} == {
        key: shipping[key] for key in ("carrier", "tracking_number", "tracking_url")}
    assert shipped["lines"][0]["serial_number"] == device["serial_number"]
    assert stored["status"] == "shipped" and stored["tracking"]["tracking_number"] == shipping["tracking_number"]
    assert delivered["order_number"] == number and delivered["delivered_at"]
    assert len(tap.named("ordering.order.shipped")) == 1 and len(tap.named("ordering.order.delivered")) == 1
    final = await portal.call("ordering.get_order", {"order_number": number}, token=token)
    assert final["status"] == "delivered" and final["delivered_at"] and final["tracking"]["carrier"] == "DHL"


async def test_a_status_change_the_life_cycle_does_not_allow_is_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    token, _ = token_for(settings, customer_number=device["customer_number"])
    number = (await portal.call("ordering.place_order", order(line(device)), token=token))["order_number"]
    ship = {"order_number": number, "carrier": "DHL", "tracking_number": "1"}
    assert await outcome(portal, "ordering.operator.mark_delivered", {"order_number": number},
                         token=operator(settings)) == "invalid_transition"
    await portal.call("ordering.operator.mark_shipped", ship, token=operator(settings))
    assert await outcome(portal, "ordering.operator.mark_shipped", {**ship, "tracking_number": "2"},
                         token=operator(settings)) == "invalid_transition"
    await portal.call("ordering.operator.mark_delivered", {"order_number": number}, token=operator(settings))
    assert await outcome(portal, "ordering.operator.mark_shipped", ship, token=operator(settings)) \
        == "invalid_transition"
    for command, body in (("ordering.operator.mark_shipped", {**ship, "order_number": "OR-1999-000001"}),
                          ("ordering.operator.mark_delivered", {"order_number": "OR-1999-000001"})):
        assert await outcome(portal, command, body, token=operator(settings)) == "not_found"
    stored = await portal.call("ordering.get_order", {"order_number": number}, token=token)
    assert (stored["status"], stored["tracking"]["tracking_number"]) == ("delivered", "1")
