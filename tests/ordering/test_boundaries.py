"""Where one customer's ordering ends and another's begins (found by an adversarial review): orders seen only by
their customer and whoever placed them, one customer per order, defaults per view, devices that change customer,
and devices without an address to deliver to."""

from __future__ import annotations

import json

import pytest

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.ordering.flows import FUSER, HANSAALLEE, TONER_C, covered_customer, es5462, line, load_consumables, order
from tests.readmodels import provision_device
from tests.support import outcome

pytestmark = pytest.mark.asyncio


async def test_a_claimant_sees_neither_the_customers_orders_nor_their_other_devices(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    claimant, claims = token_for(settings, customer_number=random_id("C-"))
    claimed = await es5462(amqp_url, ordering, customer, claimants=[claims.user_id])
    hidden = await es5462(amqp_url, ordering, customer)
    member, _ = token_for(settings, customer_number=customer)
    placed = await portal.call("ordering.place_order", order(line(claimed), line(hidden), reference="X-SECRET-PO"),
                               token=member)
    assert await outcome(portal, "ordering.get_order", {"order_number": placed["order_number"]},
                         token=claimant) == "not_found"
    listed = await portal.call("ordering.list_orders", {"device_id": claimed["device_id"]}, token=claimant)
    assert listed["total"] == 0 and "X-SECRET-PO" not in str(listed)
    own = await portal.call("ordering.place_order", order(line(claimed, FUSER)), token=claimant)
    assert (await portal.call("ordering.get_order", {"order_number": own["order_number"]}, token=claimant))[
        "order_number"] == own["order_number"]


async def test_an_order_for_the_devices_of_two_customers_is_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    first, second = await covered_customer(amqp_url, ordering), await covered_customer(amqp_url, ordering)
    claimant, claims = token_for(settings, customer_number=second)
    claimed = await es5462(amqp_url, ordering, first, claimants=[claims.user_id])
    own = await es5462(amqp_url, ordering, second)
    envelope = await portal.send("ordering.place_order", json.dumps(order(line(claimed), line(own))).encode(),
                                 token=claimant)
    assert envelope["error"]["code"] == "multiple_customers"
    assert list(envelope["error"]["fields"]) == ["lines.1.device_id"]
    assert await ordering.db.orders.count_documents({}) == 0


async def test_a_claimants_saved_delivery_defaults_stay_their_own(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    claimant, claims = token_for(settings, customer_number=random_id("C-"))
    device = await es5462(amqp_url, ordering, customer, claimants=[claims.user_id])
    member, _ = token_for(settings, customer_number=customer)
    await portal.call("ordering.place_order", order(line(device), delivery={
        "attention": "Mallory (other company)", "additional_info": "leave at gate", "save_as_default": True}),
        token=claimant)
    seen = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=member)
    assert seen["delivery_defaults"] == {"attention": None, "additional_info": None}
    placed = await portal.call("ordering.place_order", order(line(device, FUSER), delivery={
        "attention": "Empfang", "save_as_default": True}), token=member)
    assert placed["delivery_address"]["attention"] == "Empfang"
    mine = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=claimant)
    assert mine["delivery_defaults"]["attention"] == "Mallory (other company)"


async def test_a_device_that_moved_to_another_customer_shows_and_blocks_nothing_of_the_old_ones_orders(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    old_customer, new_customer = await covered_customer(amqp_url, ordering), await covered_customer(amqp_url,
                                                                                                     ordering)
    device = await es5462(amqp_url, ordering, old_customer)
    old, _ = token_for(settings, customer_number=old_customer)
    placed = await portal.call("ordering.place_order", order(line(device), reference="X-INTERNAL"), token=old)
    await provision_device(amqp_url, ordering, device_id=device["device_id"], customer_number=new_customer,
                           serial_number=device["serial_number"], model="ES5462 MFP", location=HANSAALLEE, version=2)
    new, _ = token_for(settings, customer_number=new_customer)
    assert await outcome(portal, "ordering.get_order", {"order_number": placed["order_number"]}, token=new) \
        == "not_found"
    assert await outcome(portal, "ordering.place_order", order(line(device)), token=new) == "ok"
    assert await outcome(portal, "ordering.get_order", {"order_number": placed["order_number"]}, token=old) == "ok"


async def test_a_device_without_a_complete_location_cannot_be_ordered_for(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    device = await es5462(amqp_url, ordering, customer, location={"name": "Büro", "city": "Düsseldorf"})
    token, _ = token_for(settings, customer_number=customer)
    assert await outcome(portal, "ordering.place_order", order(line(device, TONER_C)), token=token) \
        == "no_delivery_address"
    assert await ordering.db.orders.count_documents({}) == 0
