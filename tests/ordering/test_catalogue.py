"""The consumables catalogue per model and what a device can order: the seed's OKI list, coverage by the contract,
saved delivery defaults; and the read models behind it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from contracts.client import PortalClient
from contracts.registration import DeviceDeregistered
from deploy.local.demo import ES54_CONSUMABLES
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.ordering.flows import HANSAALLEE, covered_customer, es5462, load_consumables, operator
from tests.readmodels import provision_customer, provision_device, today
from tests.support import outcome

pytestmark = pytest.mark.asyncio


async def test_an_es5462_orders_the_seeds_oki_list_without_knowing_article_numbers(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering)
    device = await es5462(amqp_url, ordering, customer)
    token, _ = token_for(settings, customer_number=customer)
    orderable = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=token)
    assert [(item["article_number"], item["description"]) for item in orderable["items"]] == [
        ("44472202", "BELT-UNIT-C310-331/510-531/MC352-562"), ("01282903", "EP-CART-ES5431/3452/5462"),
        ("44472603", "FUSER-UNIT-C310-331/510-531/MC352-562"), ("44973511", "TONER-C-ES5431/3452/5462-6K"),
        ("44973512", "TONER-K-ES5431/3452/5462-7K"), ("44973510", "TONER-M-ES5431/3452/5462-6K"),
        ("44973509", "TONER-Y-ES5431/3452/5462-6K")]
    assert [(item["kind"], item["color"]) for item in orderable["items"]][3:5] == [("toner", "cyan"),
                                                                                  ("toner", "black")]
    assert orderable["covered"] is True
    assert (orderable["serial_number"], orderable["model"]) == (device["serial_number"], "ES5462 MFP")
    assert orderable["location"]["street"] == HANSAALLEE["street"]
    assert orderable["delivery_defaults"] == {"attention": None, "additional_info": None}


async def test_upserting_a_models_list_again_replaces_it_whatever_the_models_spelling(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    model = random_id("ES")
    assert await portal.call("ordering.operator.upsert_consumables", {"model": model, "items": ES54_CONSUMABLES},
                             token=operator(settings)) == {"count": 7}
    assert await portal.call("ordering.operator.upsert_consumables", {
        "model": f" {model.lower()} ", "items": ES54_CONSUMABLES[3:5]}, token=operator(settings)) == {"count": 2}
    device = await provision_device(amqp_url, ordering, model=model)
    token, _ = token_for(settings, customer_number="C-1000")
    orderable = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=token)
    assert [item["article_number"] for item in orderable["items"]] == ["44973511", "44973512"]


async def test_a_list_naming_an_article_twice_is_refused_and_changes_nothing(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    model = random_id("ES")
    body = {"model": model, "items": [*ES54_CONSUMABLES, ES54_CONSUMABLES[0]]}
    assert await outcome(portal, "ordering.operator.upsert_consumables", body, token=operator(settings)) \
        == "validation_failed"
    for kind in ("staples", ""):
        bad = {"model": model, "items": [{**ES54_CONSUMABLES[0], "kind": kind}]}
        assert await outcome(portal, "ordering.operator.upsert_consumables", bad, token=operator(settings)) \
            == "validation_failed"
    assert await ordering.db.consumables.count_documents({}) == 0


@pytest.mark.parametrize("contract", [
    {"includes_consumables": False},
    {"end_date": today() - timedelta(days=1), "start_date": today() - timedelta(days=400)},
    {"start_date": today() + timedelta(days=1)},
    {"contract_number": "K-OTHER"},
])
async def test_a_device_is_not_covered_without_a_running_contract_that_includes_consumables(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance,
        contract: dict[str, object]) -> None:
    await load_consumables(portal, settings)
    customer = await covered_customer(amqp_url, ordering, **contract)
    device = await es5462(amqp_url, ordering, customer)
    token, _ = token_for(settings, customer_number=customer)
    orderable = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=token)
    assert orderable["covered"] is False
    assert len(orderable["items"]) == 7  # what it would order is still shown


async def test_a_device_whose_contract_is_not_known_yet_is_covered_once_accounts_announces_it(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    customer = random_id("C-")
    device = await es5462(amqp_url, ordering, customer)
    token, _ = token_for(settings, customer_number=customer)
    body = {"device_id": device["device_id"]}
    assert (await portal.call("ordering.list_orderable", body, token=token))["covered"] is False
    await provision_customer(amqp_url, ordering, customer, includes_consumables=True, version=2)
    await provision_customer(amqp_url, ordering, customer, includes_consumables=False, version=1, wait=False)
    await asyncio.sleep(0.3)  # the older provisioning, arriving late, changes nothing
    assert (await portal.call("ordering.list_orderable", body, token=token))["covered"] is True


async def test_another_customers_device_is_not_found(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    device = await es5462(amqp_url, ordering, await covered_customer(amqp_url, ordering))
    stranger, _ = token_for(settings, customer_number=random_id("C-"))
    assert await outcome(portal, "ordering.list_orderable", {"device_id": device["device_id"]}, token=stranger) \
        == "not_found"
    assert await outcome(portal, "ordering.list_orderable", {"device_id": "no-such-device"}, token=stranger) \
        == "not_found"
    assert await outcome(portal, "ordering.list_orderable", {"device_id": device["device_id"]}) == "unauthenticated"


async def test_an_older_device_event_arriving_late_changes_nothing_and_a_deregistered_device_is_not_found(
        settings: Settings, portal: PortalClient, amqp_url: str, ordering: ServiceInstance) -> None:
    customer = await covered_customer(amqp_url, ordering)
    moved = {**HANSAALLEE, "street": "Kaiserswerther Straße 115", "postal_code": "40474"}
    device = await es5462(amqp_url, ordering, customer, version=3, location=moved)
    same = {"device_id": device["device_id"], "serial_number": device["serial_number"]}
    await es5462(amqp_url, ordering, customer, version=2, wait=False, **same)
    await asyncio.sleep(0.5)
    token, _ = token_for(settings, customer_number=customer)
    orderable = await portal.call("ordering.list_orderable", {"device_id": device["device_id"]}, token=token)
    assert orderable["location"]["street"] == "Kaiserswerther Straße 115"
    await es5462(amqp_url, ordering, customer, version=4, visible=False, routing_key=DeviceDeregistered.routing_key,
                 **same)
    assert await outcome(portal, "ordering.list_orderable", {"device_id": device["device_id"]}, token=token) \
        == "not_found"
