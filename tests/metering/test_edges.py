"""Edges an adversarial review found: billing periods ending on one day, links outliving their device, values
in files, addresses shared by customers, dates out of order, parallel submits on two replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest

from contracts.accounts import Contract, CustomerProvisioned
from contracts.client import PortalClient
from contracts.registration import DeviceDeregistered, ReminderRecipient
from services.metering import periods
from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import publish_event, random_id, token_for
from tests.metering.test_bulk import file_of, reading_sheet
from tests.metering.test_reminders import OPENING, reminded, run_reminders
from tests.readmodels import provision_customer, provision_device, today
from tests.support import EventTap, eventually, outcome, running

pytestmark = pytest.mark.asyncio


async def two_contracts(amqp_url: str, metering: ServiceInstance, customer: str) -> None:
    event = CustomerProvisioned(customer_number=customer, customer_name="Zimmermann GmbH", version=1, contracts=[
        Contract(contract_number="K-M", type="page_price", billing_period="monthly", start_date=date(2010, 1, 1)),
        Contract(contract_number="K-Q", type="page_price", billing_period="quarterly", start_date=date(2010, 1, 1))])
    await publish_event(amqp_url, CustomerProvisioned.routing_key, event.model_dump(mode="json"))

    async def known() -> bool:
        return await metering.db.customers.find_one({"_id": customer}) is not None
    await eventually(known)


async def test_quarterly_devices_of_a_recipient_who_also_has_a_monthly_device_are_reminded(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await two_contracts(amqp_url, metering, customer)
    monthly = await provision_device(amqp_url, metering, customer_number=customer, contract_number="K-M")
    quarterly = await provision_device(amqp_url, metering, customer_number=customer, contract_number="K-Q")
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, OPENING)  # 2025-12-24: both the month's and the quarter's window
        await asyncio.sleep(1.0)
    listed = {device["device_id"] for event in reminded(tap) for device in event["devices"]}
    assert monthly["device_id"] in listed
    assert quarterly["device_id"] in listed, "the quarterly device is in no reminder at all"


async def _link(portal: PortalClient, settings: Settings, amqp_url: str, day: date) -> str:
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, day)
        event = await tap.next("metering.reminder.due")
    return str(event["reading_url"].split("token=", 1)[1])


async def test_personal_link_refuses_a_device_its_customer_deregistered_since(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer, billing_period="monthly")
    window = periods.Window(periods.period_end(today(), "monthly"))
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=window.period_end - timedelta(days=60))
    token = await _link(portal, settings, amqp_url, window.opens)
    # the customer deregisters the device (registration's event)
    await provision_device(amqp_url, metering, customer_number=customer, device_id=device["device_id"],
                           serial_number=device["serial_number"], version=2, visible=False, reminders=False,
                           reminder_recipients=[], routing_key=DeviceDeregistered.routing_key)
    own, _ = token_for(settings, customer_number=customer)
    assert await outcome(portal, "metering.history", {"device_id": device["device_id"]}, token=own) == "not_found"
    reply = await portal.call("metering.submit_by_link", {"token": token, "readings": [
        {"device_id": device["device_id"], "counter": "mono", "value": 150},
        {"device_id": device["device_id"], "counter": "color", "value": 60}]})
    assert reply["accepted"] == 0 and reply["rejected"][0]["code"] == "not_found"


async def test_personal_link_of_the_old_customer_cannot_read_or_write_a_device_now_of_another(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    old, new = random_id("C-"), random_id("C-")
    await provision_customer(amqp_url, metering, old, billing_period="monthly")
    window = periods.Window(periods.period_end(today(), "monthly"))
    device = await provision_device(amqp_url, metering, customer_number=old, last={"mono": 100, "color": 50},
                                    last_date=window.period_end - timedelta(days=60))
    token = await _link(portal, settings, amqp_url, window.opens)
    await provision_device(amqp_url, metering, customer_number=new, device_id=device["device_id"],
                           serial_number=device["serial_number"], version=2, last={"mono": 100, "color": 50},
                           last_date=window.period_end - timedelta(days=60))
    reply = await portal.call("metering.submit_by_link", {"token": token, "readings": [
        {"device_id": device["device_id"], "counter": "mono", "value": 150},
        {"device_id": device["device_id"], "counter": "color", "value": 60}]})
    assert reply["accepted"] == 0, "the old customer's link wrote a reading on the new customer's device"


async def test_file_values_obey_the_same_bounds_as_a_list(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=today() - timedelta(days=30))
    token, _ = token_for(settings, customer_number=customer)
    huge = 10 ** 15
    assert await outcome(portal, "metering.submit_bulk", {"readings": [
        {"serial_number": device["serial_number"], "counter": "mono", "value": huge},
        {"serial_number": device["serial_number"], "counter": "color", "value": 60}]},
        token=token) == "validation_failed"
    content = reading_sheet([(device["serial_number"], "mono", None, None, huge, None),
                             (device["serial_number"], "color", None, None, 60, None)])
    reply = await portal.call("metering.submit_bulk", {"file": file_of(content)}, token=token)
    assert reply["accepted"] == 0, f"file accepted {huge} pages: {reply}"


async def test_a_number_beyond_64_bits_in_an_xlsx_is_a_row_refusal_not_internal(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=today() - timedelta(days=30))
    token, _ = token_for(settings, customer_number=customer)
    content = reading_sheet([(device["serial_number"], "mono", None, None, 1e20, None),
                             (device["serial_number"], "color", None, None, 60, None)])
    assert await outcome(portal, "metering.submit_bulk", {"file": file_of(content)}, token=token) == "ok"


async def test_a_superscript_digit_in_a_csv_is_a_row_refusal_not_internal(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=today() - timedelta(days=30))
    token, _ = token_for(settings, customer_number=customer)
    csv = f"serial_number;counter;value\n{device['serial_number']};mono;2\u00b2\n{device['serial_number']};color;60\n"
    assert await outcome(portal, "metering.submit_bulk", {"file": file_of(csv.encode(), "r.csv")},
                         token=token) == "ok"


@pytest.fixture
async def small_batches(metering_settings: MeteringSettings) -> AsyncIterator[ServiceInstance]:
    async with running(metering_service, metering_settings.model_copy(update={"metering_batch_devices": 1})) as i:
        yield i


async def test_a_failing_file_stores_nothing(
        settings: Settings, portal: PortalClient, amqp_url: str, small_batches: ServiceInstance) -> None:
    metering = small_batches
    customer = random_id("C-")
    first = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                   last_date=today() - timedelta(days=30))
    second = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=today() - timedelta(days=30))
    token, _ = token_for(settings, customer_number=customer)
    content = reading_sheet([(first["serial_number"], "mono", None, None, 150, None),
                             (first["serial_number"], "color", None, None, 60, None),
                             (second["serial_number"], "mono", None, None, 1e20, None),
                             (second["serial_number"], "color", None, None, 60, None)])
    code = await outcome(portal, "metering.submit_bulk", {"file": file_of(content)}, token=token)
    stored = await metering.db.readings.count_documents({"device_id": first["device_id"]})
    assert not (code != "ok" and stored), f"refused with {code} yet {stored} reading stored"


async def test_one_address_for_two_customers_gets_a_reminder_whose_unsubscribe_works_for_each_device(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    from contracts.registration import ReminderRecipient as Recipient
    from services.registration.devices import reminders_off
    first, second = random_id("C-"), random_id("C-")
    address = f"{random_id('facility')}@example.com"
    for customer in (first, second):
        await provision_customer(amqp_url, metering, customer)
    one = await provision_device(amqp_url, metering, customer_number=first, reminder_email=address,
                                 reminder_recipients=[ReminderRecipient(customer_number=first, email=address)])
    two = await provision_device(amqp_url, metering, customer_number=second, reminder_email=address,
                                 reminder_recipients=[ReminderRecipient(customer_number=second, email=address)])
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, OPENING)
        await asyncio.sleep(1.0)
    events = [event for event in reminded(tap) if event["recipient"].get("email") == address]
    assert len(events) == 1  # merged by address
    owners = {device["device_id"]: Recipient.model_validate(device["recipient"]) for device in events[0]["devices"]}
    # registration's device documents as they stand, and what an unsubscribe naming each device's own entry does
    for device, customer in ((one, first), (two, second)):
        stored = {"_id": device["device_id"], "customer_number": customer, "reminders": True,
                  "reminder_email": address, "claimants": {}}
        assert owners[device["device_id"]].customer_number == customer
        assert reminders_off(owners[device["device_id"]], address)(stored) == {"reminders": False}


async def test_two_dates_of_one_device_in_one_file_do_not_depend_on_row_order(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=today() - timedelta(days=60))
    token, _ = token_for(settings, customer_number=customer)
    later, earlier = today() - timedelta(days=1), today() - timedelta(days=20)
    serial = device["serial_number"]
    reply = await portal.call("metering.submit_bulk", {"readings": [
        {"serial_number": serial, "counter": "mono", "value": 300, "reading_date": later.isoformat()},
        {"serial_number": serial, "counter": "color", "value": 90, "reading_date": later.isoformat()},
        {"serial_number": serial, "counter": "mono", "value": 200, "reading_date": earlier.isoformat()},
        {"serial_number": serial, "counter": "color", "value": 70, "reading_date": earlier.isoformat()}]},
        token=token)
    assert reply["accepted"] == 2, reply


async def test_parallel_submits_on_two_replicas_never_go_down(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance,
        metering_settings: MeteringSettings) -> None:
    import random
    customer = random_id("C-")
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=today() - timedelta(days=30))
    token, _ = token_for(settings, customer_number=customer)
    values = random.sample(range(101, 5000), 24)
    async with running(metering_service, metering_settings):
        await asyncio.gather(*(outcome(portal, "metering.submit_reading", {
            "device_id": device["device_id"], "readings": [{"counter": "mono", "value": v},
                                                           {"counter": "color", "value": v}]}, token=token)
            for v in values))
    stored = [r["counters"]["mono"]["value"] async for r in metering.db.readings.find(
        {"device_id": device["device_id"]}).sort("seq", 1)]
    assert stored == sorted(stored) and len(stored) >= 1
    pages = [r["counters"]["mono"]["pages"] async for r in metering.db.readings.find(
        {"device_id": device["device_id"]}).sort("seq", 1)]
    assert sum(pages) == stored[-1] - 100
