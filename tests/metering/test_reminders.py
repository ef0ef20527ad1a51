"""The reminder schedule: who is reminded of what and when, once however many replicas run it, and the personal
link of a reminder that turns it into readings without signing in."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import pytest

from contracts.client import PortalClient
from contracts.registration import ReminderRecipient
from services.metering import periods, reminders
from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_id, token_for
from tests.readmodels import provision_customer, provision_device, today
from tests.support import EventTap, eventually, outcome, running

pytestmark = pytest.mark.asyncio

OPENING = date(2025, 12, 24)  # the quarter ending 2025-12-31 opens its window (in the past: readings may be dated)
SECOND = date(2026, 1, 3)
CLOSED = date(2026, 1, 11)


def operator(settings: Settings) -> str:
    return token_for(settings, Role.OPERATOR, customer_number=None)[0]


async def run_reminders(portal: PortalClient, settings: Settings, day: date) -> dict[str, int]:
    return await portal.call("metering.operator.run_reminders", {"as_of": day.isoformat()}, token=operator(settings))


def reminded(tap: EventTap) -> list[dict[str, Any]]:
    return tap.named("metering.reminder.due")


async def test_the_opening_reminder_lists_every_due_device_of_a_recipient_in_one_mail(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    due = [await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 10, "color": 20})
           for _ in range(3)]
    e_maintenance = await provision_device(amqp_url, metering, customer_number=customer, e_maintenance=True)
    no_reminders = await provision_device(amqp_url, metering, customer_number=customer, reminders=False,
                                          reminder_recipients=[])
    elsewhere = await provision_device(amqp_url, metering, customer_number=customer,
                                       reminder_recipients=[ReminderRecipient(customer_number=customer,
                                                                              email="lager@example.com")])
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        assert await run_reminders(portal, settings, OPENING) == {"reminders": 2, "overdue": 0}
        await eventually(lambda: _at_least(tap, 2))
        assert await run_reminders(portal, settings, OPENING + timedelta(days=1)) == {"reminders": 0, "overdue": 0}
        await asyncio.sleep(0.3)
    events = {event["recipient"].get("email") or "customer": event for event in reminded(tap)}
    assert len(reminded(tap)) == 2
    customers_mail = events["customer"]
    assert customers_mail["kind"] == "opening" and customers_mail["period_end"] == "2025-12-31"
    assert customers_mail["window_closes"] == "2026-01-10"
    assert sorted(device["device_id"] for device in customers_mail["devices"]) == sorted(
        device["device_id"] for device in due)
    assert {counter["counter"]: counter["last_value"] for counter in customers_mail["devices"][0]["counters"]} == {
        "mono": 10, "color": 20}
    assert [device["device_id"] for device in events["lager@example.com"]["devices"]] == [elsewhere["device_id"]]
    listed = {device["device_id"] for event in reminded(tap) for device in event["devices"]}
    assert e_maintenance["device_id"] not in listed and no_reminders["device_id"] not in listed
    assert customers_mail["reading_url"].startswith(settings.public_url.rstrip("/") + "/readings?token=")


async def _at_least(tap: EventTap, count: int, name: str = "metering.reminder.due") -> bool:
    return len(tap.named(name)) >= count


async def test_a_device_read_in_the_window_or_hidden_by_its_customer_gets_no_reminder(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    read = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 1, "color": 1},
                                  last_date=date(2025, 9, 1))
    await provision_device(amqp_url, metering, customer_number=customer, visible=False, reminder_recipients=[])
    operator_token = operator(settings)
    await portal.call("metering.operator.record_estimate", {
        "device_id": read["device_id"], "reading_date": "2025-12-24",
        "readings": [{"counter": "mono", "value": 5}, {"counter": "color", "value": 5}]}, token=operator_token)
    assert await run_reminders(portal, settings, OPENING) == {"reminders": 0, "overdue": 0}


async def test_a_device_whose_contract_arrives_late_is_reminded_once_it_is_known(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_device(amqp_url, metering, customer_number=customer)
    assert await run_reminders(portal, settings, OPENING) == {"reminders": 0, "overdue": 0}
    await provision_customer(amqp_url, metering, customer, version=2)
    await provision_customer(amqp_url, metering, customer, billing_period="annual", version=1, wait=False)
    await asyncio.sleep(0.5)  # the older copy arrives after the newer one: it changes nothing
    stored = await metering.db.customers.find_one({"_id": customer})
    assert stored is not None and stored["version"] == 2
    assert await run_reminders(portal, settings, OPENING + timedelta(days=1)) == {"reminders": 1, "overdue": 0}


async def test_the_second_reminder_lists_only_the_devices_still_missing_and_then_they_are_overdue(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    devices = [await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 1, "color": 1},
                                      last_date=date(2025, 9, 28)) for _ in range(2)]
    async with EventTap(amqp_url, "metering.#") as tap:
        assert (await run_reminders(portal, settings, OPENING))["reminders"] == 1
        await portal.call("metering.operator.record_estimate", {
            "device_id": devices[0]["device_id"], "reading_date": "2026-01-02",
            "readings": [{"counter": "mono", "value": 5}, {"counter": "color", "value": 5}]},
            token=operator(settings))
        assert await run_reminders(portal, settings, SECOND) == {"reminders": 1, "overdue": 0}
        assert await run_reminders(portal, settings, CLOSED) == {"reminders": 0, "overdue": 1}
        assert await run_reminders(portal, settings, CLOSED + timedelta(days=1)) == {"reminders": 0, "overdue": 0}
        await eventually(lambda: _at_least(tap, 1, "metering.reading.overdue"))
        await eventually(lambda: _at_least(tap, 2))
    second = [event for event in reminded(tap) if event["kind"] == "second"]
    assert [device["device_id"] for device in second[0]["devices"]] == [devices[1]["device_id"]]
    overdue = tap.named("metering.reading.overdue")
    assert [(event["device_id"], event["period_end"], event["window_closed"]) for event in overdue] == [
        (devices[1]["device_id"], "2025-12-31", "2026-01-10")]
    listed = await portal.call("metering.operator.overdue", {"period_end": "2025-12-31"}, token=operator(settings))
    assert [item["device_id"] for item in listed["items"]] == [devices[1]["device_id"]]
    assert listed["items"][0]["last_date"] == "2025-09-28"


async def test_monthly_and_annual_contracts_are_reminded_at_their_own_period_ends(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    monthly, annual = random_id("C-"), random_id("C-")
    await provision_customer(amqp_url, metering, monthly, billing_period="monthly")
    await provision_customer(amqp_url, metering, annual, billing_period="annual")
    await provision_device(amqp_url, metering, customer_number=monthly)
    await provision_device(amqp_url, metering, customer_number=annual)
    assert (await run_reminders(portal, settings, date(2024, 2, 22)))["reminders"] == 1  # Feb 29, monthly only
    assert (await run_reminders(portal, settings, date(2024, 6, 23)))["reminders"] == 1  # June, monthly only
    assert (await run_reminders(portal, settings, date(2024, 12, 24)))["reminders"] == 2  # both


async def test_a_contract_that_ended_before_the_period_gets_no_reminder(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer, end_date=date(2025, 9, 30))
    await provision_device(amqp_url, metering, customer_number=customer)
    assert await run_reminders(portal, settings, OPENING) == {"reminders": 0, "overdue": 0}


async def test_two_replicas_running_the_same_day_at_the_same_moment_send_each_reminder_once(
        amqp_url: str, metering: ServiceInstance, metering_settings: MeteringSettings) -> None:
    customers = [random_id("C-") for _ in range(6)]
    for customer in customers:
        await provision_customer(amqp_url, metering, customer)
        for _ in range(4):
            await provision_device(amqp_url, metering, customer_number=customer)
    async with running(metering_service, metering_settings) as second_replica, \
            EventTap(amqp_url, "metering.reminder.due") as tap:
        runs = await asyncio.gather(*(reminders.run(replica, OPENING)
                                      for replica in (metering, second_replica, metering, second_replica)))
        assert sum(run.reminders for run in runs) == len(customers)
        await eventually(lambda: _at_least(tap, len(customers)))
        await asyncio.sleep(0.5)
    # Both replicas' relays may publish one entry (same message id): consumers handle it once.
    handled = tap.handled("metering.reminder.due")
    assert sorted(event["recipient"]["customer_number"] for event in handled) == sorted(customers)


async def test_the_scheduler_runs_the_days_it_missed_once_and_remembers_it(
        amqp_url: str, metering_settings: MeteringSettings) -> None:
    settings = metering_settings.model_copy(update={"metering_scheduler_seconds": 0.2})
    async with running(metering_service, settings) as instance:
        async def ran_today() -> bool:
            state = await instance.db.schedule.find_one({"_id": "daily"})
            return state is not None and state["last_day"] == today().isoformat()
        await eventually(ran_today)
        await instance.db.schedule.update_one({"_id": "daily"}, {"$set": {
            "last_day": (today() - timedelta(days=3)).isoformat()}})
        await eventually(ran_today)


async def test_the_personal_link_submits_readings_for_the_devices_it_lists_until_the_window_closes(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer, billing_period="monthly")
    window = periods.Window(periods.period_end(today(), "monthly"))  # closes 10 days after today's month end
    listed = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 100, "color": 50},
                                    last_date=window.period_end - timedelta(days=60))
    stranger = await provision_device(amqp_url, metering, customer_number=random_id("C-"))
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, window.opens)
        event = await tap.next("metering.reminder.due")
    token = event["reading_url"].split("token=", 1)[1]
    reply = await portal.call("metering.submit_by_link", {"token": token, "readings": [
        {"device_id": listed["device_id"], "counter": "mono", "value": 150},
        {"device_id": listed["device_id"], "counter": "color", "value": 60},
        {"device_id": stranger["device_id"], "counter": "mono", "value": 1}]})
    assert reply["accepted"] == 1
    assert [(row["row"], row["code"]) for row in reply["rejected"]] == [(3, "not_found")]
    stored = await metering.db.readings.find_one({"device_id": listed["device_id"]})
    assert stored is not None
    assert stored["source"] == "customer" and stored["submitted_by"] is None
    assert await metering.db.readings.count_documents({"device_id": stranger["device_id"]}) == 0
    for forged in (token + "x", "x" * 32):
        assert await outcome(portal, "metering.submit_by_link", {"token": forged, "readings": [
            {"device_id": listed["device_id"], "counter": "mono", "value": 200}]}) == "token_invalid"
    stored_reminder = await metering.db.reminders.find_one({})
    assert token not in str(stored_reminder), "only the link's hash is kept"


async def test_a_personal_link_is_refused_once_its_window_closed(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    device = await provision_device(amqp_url, metering, customer_number=customer)
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, date(2024, 12, 24))  # closed on 2025-01-10
        event = await tap.next("metering.reminder.due")
    token = event["reading_url"].split("token=", 1)[1]
    assert await outcome(portal, "metering.submit_by_link", {"token": token, "readings": [
        {"device_id": device["device_id"], "counter": "mono", "value": 1}]}) == "token_invalid"


async def test_the_personal_link_tells_its_devices_with_their_last_values_while_they_are_the_customers(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer, billing_period="monthly")
    window = periods.Window(periods.period_end(today(), "monthly"))
    last_date = window.period_end - timedelta(days=60)
    kept, moved = [await provision_device(amqp_url, metering, customer_number=customer,
                                          last={"mono": 100, "color": 50}, last_date=last_date) for _ in range(2)]
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, window.opens)
        event = await tap.next("metering.reminder.due")
    token = event["reading_url"].split("token=", 1)[1]
    both = await portal.call("metering.link_devices", {"token": token})
    assert (both["period_end"], both["window_closes"]) == (window.period_end.isoformat(), window.closes.isoformat())
    assert sorted(device["device_id"] for device in both["devices"]) == sorted(
        device["device_id"] for device in (kept, moved))
    # The device moves to another customer: the link no longer lists it (the reminder's `owners`, as submit_by_link).
    await provision_device(amqp_url, metering, customer_number=random_id("C-"), device_id=moved["device_id"],
                           serial_number=moved["serial_number"], version=2, last={"mono": 100, "color": 50},
                           last_date=last_date)
    (listed,) = (await portal.call("metering.link_devices", {"token": token}))["devices"]
    assert listed["device_id"] == kept["device_id"] and listed["serial_number"] == kept["serial_number"]
    assert "recipient" not in listed
    assert {counter["counter"]: (counter["last_value"], counter["last_date"]) for counter in listed["counters"]} == {
        "mono": (100, last_date.isoformat()), "color": (50, last_date.isoformat())}
    for forged in (token + "x", "x" * 32):
        assert await outcome(portal, "metering.link_devices", {"token": forged}) == "token_invalid"
    # After a reading through the link, the page shows it as the last value.
    await portal.call("metering.submit_by_link", {"token": token, "readings": [
        {"device_id": kept["device_id"], "counter": "mono", "value": 150},
        {"device_id": kept["device_id"], "counter": "color", "value": 60}]})
    (after,) = (await portal.call("metering.link_devices", {"token": token}))["devices"]
    assert {counter["counter"]: counter["last_value"] for counter in after["counters"]} == {"mono": 150, "color": 60}


async def test_a_closed_windows_link_tells_no_devices(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    await provision_device(amqp_url, metering, customer_number=customer)
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await run_reminders(portal, settings, date(2024, 12, 24))  # closed on 2025-01-10
        event = await tap.next("metering.reminder.due")
    token = event["reading_url"].split("token=", 1)[1]
    assert await outcome(portal, "metering.link_devices", {"token": token}) == "token_invalid"
