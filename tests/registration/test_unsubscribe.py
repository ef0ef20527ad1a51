"""A reminder's unsubscribe link turns that device's reminders off for whoever it was for (CATALOG §7
`notifier.unsubscribe`, `notifier.reminders.unsubscribed`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.client import PortalClient
from contracts.notifier import RemindersUnsubscribed
from contracts.registration import ReminderRecipient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import device_registration, operator_token, publish_event, token_for
from tests.registration.flows import accept_terms, event_handled, terms_handled
from tests.support import EventTap

DEVICE = {"serial_number": "AK5A200001", "model": "ES5431dn", "customer_number": "C-1", "contract_number": "K-1",
          "location": {"street": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin"}}
CUSTOMER = {"customer_number": "C-1", "user_id": None, "email": None}


async def installed_device(portal: PortalClient, settings: Settings) -> str:
    """C-1's device from the installed base, its reminders on to its customer's contacts; its id."""
    await portal.call("registration.operator.import_installed_base", {"devices": [DEVICE]},
                      token=operator_token(settings))
    device = await portal.call("registration.get_device", {"serial_number": DEVICE["serial_number"]},
                               token=owner(settings))
    device_id: str = device["device_id"]
    return device_id


def owner(settings: Settings) -> str:
    return token_for(settings, customer_number="C-1")[0]


async def unsubscribe(amqp_url: str, device_id: str, mailed_to: str, message_id: str | None = None,
                      **recipient: Any) -> str:
    """Publish notifier's `RemindersUnsubscribed` for a reminder mailed to `mailed_to` for `recipient`; its message
    id."""
    event = RemindersUnsubscribed(device_id=device_id, email=mailed_to, recipient=ReminderRecipient(**recipient),
                                  unsubscribed_at=datetime.now(UTC))
    return await publish_event(amqp_url, RemindersUnsubscribed.routing_key, event.model_dump(mode="json"),
                               message_id=message_id)


async def stored_version(registration: ServiceInstance, device_id: str) -> int:
    device = await registration.db.devices.find_one({"_id": device_id})
    assert device is not None
    return int(device["version"])


async def test_the_customers_unsubscribe_turns_the_devices_reminders_off_once(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    device_id = await installed_device(portal, settings)
    await portal.call("registration.set_reminders", {"device_id": device_id, "reminders": True,
                                                     "reminder_email": "meter@example.com"}, token=owner(settings))
    async with EventTap(amqp_url, "registration.device.#") as tap:
        message_id = await unsubscribe(amqp_url, device_id, "Meter@Example.com", customer_number="C-1",
                                       email="meter@example.com")
        event = await tap.next("registration.device.updated")
        # The same message again, and the same unsubscribe as a new message (a second click): nothing more.
        await unsubscribe(amqp_url, device_id, "Meter@Example.com", message_id=message_id, customer_number="C-1",
                          email="meter@example.com")
        await event_handled(registration, await unsubscribe(amqp_url, device_id, "meter@example.com",
                                                            customer_number="C-1", email="meter@example.com"))
        await asyncio.sleep(0.5)  # time for an event that should not come
    assert (event["device_id"], event["reminders"], event["reminder_email"], event["version"]) == (
        device_id, False, "meter@example.com", 3)
    assert event["reminder_recipients"] == []
    assert len(tap.events) == 1 and await stored_version(registration, device_id) == 3
    device = await portal.call("registration.get_device", {"device_id": device_id}, token=owner(settings))
    assert device["reminders"] is False


async def test_a_claimants_unsubscribe_turns_off_their_own_reminders_and_leaves_the_customers_on(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    device_id = await installed_device(portal, settings)
    claimant, claims = token_for(settings, customer_number=None)
    await portal.call("registration.claim_device", {"serial_number": DEVICE["serial_number"],
                                                    "postal_code": "10115"}, token=claimant)
    await portal.call("registration.set_reminders", {"device_id": device_id, "reminders": True,
                                                     "reminder_email": "me@example.com"}, token=claimant)
    async with EventTap(amqp_url, "registration.device.updated") as tap:
        await unsubscribe(amqp_url, device_id, "me@example.com", user_id=claims.user_id, email="me@example.com")
        event = await tap.next("registration.device.updated")
    assert (event["reminders"], event["reminder_recipients"], event["claimants"]) == (
        True, [CUSTOMER], [claims.user_id])
    mine = await portal.call("registration.get_device", {"device_id": device_id}, token=claimant)
    customers = await portal.call("registration.get_device", {"device_id": device_id}, token=owner(settings))
    assert (mine["reminders"], customers["reminders"]) == (False, True)


async def test_the_registering_users_unsubscribe_turns_off_a_device_of_no_customer(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token, claims = token_for(settings, customer_number=None)
    await terms_handled(registration, await accept_terms(registration, amqp_url, claims.user_id))
    device = await portal.call("registration.register_device", device_registration(), token=token)
    async with EventTap(amqp_url, "registration.device.updated") as tap:
        await unsubscribe(amqp_url, device["device_id"], "me@example.com", user_id=claims.user_id)
        event = await tap.next("registration.device.updated")
    assert (event["reminders"], event["reminder_recipients"], event["registered_by"]) == (False, [], claims.user_id)


@pytest.mark.parametrize(("reminder_email_now", "mailed_to", "recipient"), [
    ("new@example.com", "old@example.com", {"customer_number": "C-1", "email": "old@example.com"}),
    ("new@example.com", "contact@example.com", {"customer_number": "C-1"}),  # to the contacts, before one was set
    (None, "old@example.com", {"customer_number": "C-1", "email": "old@example.com"}),  # back to the contacts
    (None, "contact@example.com", {"customer_number": "C-2"}),  # for a customer the device no longer has
], ids=["another-address-now", "an-address-set-since", "address-removed-since", "another-customer"])
async def test_an_unsubscribe_from_an_address_no_longer_on_the_list_changes_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        reminder_email_now: str | None, mailed_to: str, recipient: dict[str, str]) -> None:
    device_id = await installed_device(portal, settings)
    async with EventTap(amqp_url, "registration.device.#") as tap:
        await portal.call("registration.set_reminders", {"device_id": device_id, "reminders": True,
                                                         "reminder_email": reminder_email_now}, token=owner(settings))
        # The relay publishes after the reply: the change's own event must be out before the quiet period starts.
        await tap.next("registration.device.updated")
        tap.events.clear()
        await event_handled(registration, await unsubscribe(amqp_url, device_id, mailed_to, **recipient))
        await asyncio.sleep(0.5)  # time for an event that should not come
    assert tap.events == [] and await stored_version(registration, device_id) == 2
    device = await portal.call("registration.get_device", {"device_id": device_id}, token=owner(settings))
    assert (device["reminders"], device["reminder_email"]) == (True, reminder_email_now)


async def test_an_unsubscribe_for_an_unknown_device_changes_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    device_id = await installed_device(portal, settings)
    async with EventTap(amqp_url, "registration.device.#") as tap:
        await event_handled(registration, await unsubscribe(amqp_url, "no-such-device", "contact@example.com",
                                                            customer_number="C-1"))
        await asyncio.sleep(0.5)  # time for an event that should not come
    assert tap.events == [] and await stored_version(registration, device_id) == 1
