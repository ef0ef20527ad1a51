"""Listing, searching and changing one's devices; no customer ever sees another's (CATALOG §3, Canon, OneRicoh)."""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import device_registration, operator_token, random_serial, token_for
from tests.registration.flows import accept_terms, customer, terms_handled
from tests.support import EventTap, eventually, outcome

FLEET = [
    {"serial_number": "AK5A000001", "model": "ES5431dn", "customer_number": "C-1", "contract_number": "K-1",
     "location": {"name": "HQ", "street": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin"}},
    {"serial_number": "AK5M000002", "model": "ES5462 MFP", "customer_number": "C-1", "contract_number": "K-2",
     "location": {"name": "Lager", "street": "Hafenweg 9", "postal_code": "20457", "city": "Hamburg"}},
    {"serial_number": "AK6C000003", "model": "C332", "customer_number": "C-2", "contract_number": "K-3",
     "location": {"name": "Kontor", "street": "Bryggen 1", "postal_code": "5003", "city": "Bergen"}},
]


async def import_fleet(portal: PortalClient, settings: Settings) -> None:
    operator = operator_token(settings)
    await portal.call("registration.operator.import_installed_base", {"devices": FLEET}, token=operator)


async def serials(portal: PortalClient, token: str, **filters: object) -> list[str]:
    page = await portal.call("registration.list_devices", filters, token=token)
    assert page["total"] == len(page["items"])
    return [device["serial_number"] for device in page["items"]]


async def test_every_device_of_the_callers_customer_is_listed_and_no_other(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    first, _ = token_for(settings, customer_number="C-1")
    second, _ = token_for(settings, customer_number="C-2")
    loner, _ = token_for(settings, customer_number=None)
    assert await serials(portal, first) == ["AK5A000001", "AK5M000002"]
    assert await serials(portal, second) == ["AK6C000003"]
    assert await serials(portal, loner) == []


async def test_a_contract_sign_in_sees_only_that_contracts_devices(registration: ServiceInstance,
                                                                    portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    contract, _ = token_for(settings, customer_number="C-1", contract_number="K-2")
    assert await serials(portal, contract) == ["AK5M000002"]
    assert await outcome(portal, "registration.get_device", {"serial_number": "AK5A000001"}, contract) == "not_found"


async def test_filters_narrow_the_list(registration: ServiceInstance, portal: PortalClient,
                                       settings: Settings) -> None:
    await import_fleet(portal, settings)
    token, _ = token_for(settings, customer_number="C-1")
    assert await serials(portal, token, model="es5462") == ["AK5M000002"]
    assert await serials(portal, token, city="berlin") == ["AK5A000001"]
    assert await serials(portal, token, postal_code="20457") == ["AK5M000002"]
    assert await serials(portal, token, location="lag") == ["AK5M000002"]
    assert await serials(portal, token, serial_number="ak5a") == ["AK5A000001"]
    assert await serials(portal, token, text="hafenweg") == ["AK5M000002"]
    assert await serials(portal, token, text="Kontor") == []  # another customer's location
    page = await portal.call("registration.list_devices", {"page": 2, "page_size": 1}, token=token)
    assert (page["total"], [device["serial_number"] for device in page["items"]]) == (2, ["AK5M000002"])


async def test_another_customers_device_is_not_found_for_reading_or_changing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    stranger, _ = token_for(settings, customer_number="C-2")
    owner, _ = token_for(settings, customer_number="C-1")
    device = await portal.call("registration.get_device", {"serial_number": "AK5A000001"}, token=owner)
    device_id = device["device_id"]
    for command, body in (("registration.get_device", {"device_id": device_id}),
                          ("registration.rename_device", {"device_id": device_id, "friendly_name": "mine"}),
                          ("registration.set_reminders", {"device_id": device_id, "reminders": False}),
                          ("registration.deregister_devices", {"device_ids": [device_id]})):
        assert await outcome(portal, command, body, stranger) == "not_found", command
    unchanged = await portal.call("registration.get_device", {"device_id": device_id}, token=owner)
    assert unchanged == device


async def test_renaming_and_reminders_are_kept_and_announced(registration: ServiceInstance, portal: PortalClient,
                                                             settings: Settings, amqp_url: str) -> None:
    await import_fleet(portal, settings)
    token, _ = token_for(settings, customer_number="C-1")
    device = await portal.call("registration.get_device", {"serial_number": "AK5A000001"}, token=token)
    device_id = device["device_id"]
    async with EventTap(amqp_url, "registration.device.updated") as tap:
        await portal.call("registration.rename_device", {"device_id": device_id, "friendly_name": "Empfang"},
                          token=token)
        await portal.call("registration.set_reminders", {"device_id": device_id, "reminders": False,
                                                         "reminder_email": "meter@example.com"}, token=token)
        last = await tap.next("registration.device.updated", lambda body: body["reminders"] is False)
    assert (last["friendly_name"], last["reminder_email"], last["version"]) == ("Empfang", "meter@example.com", 3)
    device = await portal.call("registration.get_device", {"device_id": device_id}, token=token)
    assert (device["friendly_name"], device["reminders"]) == ("Empfang", False)


async def test_a_deregistered_device_disappears_from_the_view_but_keeps_its_contract(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    await import_fleet(portal, settings)
    token, _ = token_for(settings, customer_number="C-1")
    device = await portal.call("registration.get_device", {"serial_number": "AK5A000001"}, token=token)
    device_id = device["device_id"]
    async with EventTap(amqp_url, "registration.device.deregistered") as tap:
        assert await portal.call("registration.deregister_devices", {"device_ids": [device_id]}, token=token) == {
            "count": 1}
        event = await tap.next("registration.device.deregistered")
    assert (event["visible"], event["reminders"], event["contract_number"]) == (False, False, "K-1")
    assert await serials(portal, token) == ["AK5M000002"]
    stored = await registration.db.devices.find_one({"_id": device_id})
    assert stored is not None and stored["contract_number"] == "K-1" and stored["customer_number"] == "C-1"


async def test_a_user_without_a_customer_sees_the_devices_they_registered(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url, customer_number=None)
    serial = random_serial()
    await portal.call("registration.register_device", device_registration(serial_number=serial), token=token)
    assert await serials(portal, token) == [serial]


async def device_id_of(portal: PortalClient, token: str, serial_number: str) -> str:
    device = await portal.call("registration.get_device", {"serial_number": serial_number}, token=token)
    device_id: str = device["device_id"]
    return device_id


async def test_concurrent_changes_issue_each_version_once_and_the_highest_one_is_what_is_stored(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    await import_fleet(portal, settings)
    token, _ = token_for(settings, customer_number="C-1")
    device_id = await device_id_of(portal, token, "AK5A000001")

    def change(number: int) -> Any:
        if number % 2:
            return portal.call("registration.rename_device", {"device_id": device_id,
                                                              "friendly_name": f"Name {number}"}, token=token)
        return portal.call("registration.set_reminders", {"device_id": device_id, "reminders": number % 4 == 0,
                                                          "reminder_email": f"m{number}@example.com"}, token=token)
    async with EventTap(amqp_url, "registration.device.updated") as tap:
        await asyncio.gather(*(change(number) for number in range(12)))

        async def all_published() -> bool:
            return len(tap.named("registration.device.updated")) >= 12
        await eventually(all_published)
    events = tap.named("registration.device.updated")
    assert sorted(event["version"] for event in events) == list(range(2, 14))
    last = max(events, key=lambda event: event["version"])
    stored = await portal.call("registration.get_device", {"device_id": device_id}, token=token)
    assert (stored["friendly_name"], stored["reminders"], stored["reminder_email"]) == (
        last["friendly_name"], last["reminders"], last["reminder_email"])
    raw = await registration.db.devices.find_one({"_id": device_id})
    assert raw is not None and raw["version"] == 13


async def test_deregistering_a_list_naming_a_device_the_caller_may_not_see_changes_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    await import_fleet(portal, settings)
    token, _ = token_for(settings, customer_number="C-1")
    own = await device_id_of(portal, token, "AK5A000001")
    foreign = await device_id_of(portal, token_for(settings, customer_number="C-2")[0], "AK6C000003")
    async with EventTap(amqp_url, "registration.device.#") as tap:
        for device_ids in ([own, "unknown"], [own, foreign], ["unknown", own]):
            assert await outcome(portal, "registration.deregister_devices", {"device_ids": device_ids},
                                 token) == "not_found", device_ids
        await asyncio.sleep(0.5)  # time for an event that should not come
    assert tap.events == []
    assert await serials(portal, token) == ["AK5A000001", "AK5M000002"]
    stored = await registration.db.devices.find_one({"_id": own})
    assert stored is not None and stored["version"] == 1 and stored["visible"]


async def test_every_event_of_a_registered_device_names_the_user_who_registered_it(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token, claims = token_for(settings, customer_number=None)
    await terms_handled(registration, await accept_terms(registration, amqp_url, claims.user_id))
    async with EventTap(amqp_url, "registration.device.#") as tap:
        device = await portal.call("registration.register_device", device_registration(), token=token)
        await portal.call("registration.rename_device", {"device_id": device["device_id"],
                                                         "friendly_name": "Home office"}, token=token)
        registered = await tap.next("registration.device.registered")
        renamed = await tap.next("registration.device.updated")
    assert registered["registered_by"] == renamed["registered_by"] == claims.user_id
    assert renamed["claimants"] == []
