"""What a customer sees of their fleet: due readings, history with sources, usage as JSON and as a workbook with a
chart; and the read models behind it: versions, visibility, claimants, contract sign-ins."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from datetime import date, timedelta

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts.client import PortalClient
from contracts.registration import DeviceUpdated
from services.metering import periods
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_id, token_for
from tests.readmodels import provision_customer, provision_device, today
from tests.support import outcome

pytestmark = pytest.mark.asyncio

MONO_COLOR = [{"counter": "mono", "value": 0}, {"counter": "color", "value": 0}]


def readings(mono: int, color: int) -> list[dict[str, object]]:
    return [{"counter": "mono", "value": mono}, {"counter": "color", "value": color}]


async def test_history_shows_pages_per_period_and_the_source_of_each_reading(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    device = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 4500, "color": 5380},
                                    last_date=date(2015, 3, 25))
    token, _ = token_for(settings, customer_number=customer)
    operator, _ = token_for(settings, Role.OPERATOR, customer_number=None)
    await portal.call("metering.submit_reading", {"device_id": device["device_id"], "reading_date": "2015-06-28",
                                                  "readings": readings(8500, 9850)}, token=token)
    await portal.call("metering.operator.record_estimate", {"device_id": device["device_id"],
                                                            "reading_date": "2015-09-30",
                                                            "readings": readings(9500, 10850)}, token=operator)
    await portal.call("metering.device_report", {"serial_number": device["serial_number"],
                                                 "reading_date": "2015-10-05", "readings": readings(9600, 10900)},
                      token=operator)
    history = await portal.call("metering.history", {"device_id": device["device_id"]}, token=token)
    assert [(r["reading_date"], r["source"], r["period_end"]) for r in history["readings"]] == [
        ("2015-10-05", "device", "2015-09-30"), ("2015-09-30", "estimate", "2015-09-30"),
        ("2015-06-28", "customer", "2015-06-30")]
    assert [(p["period_end"], p["printed_pages"], p["total"]) for p in history["periods"]] == [
        ("2015-09-30", {"mono": 1100, "color": 1050}, 2150), ("2015-06-30", {"mono": 4000, "color": 4470}, 8470)]


async def test_a_reading_far_above_the_devices_usual_volume_is_warned_of_and_flagged(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 1000, "color": 1000},
                                    last_date=date(2015, 1, 1))
    token, _ = token_for(settings, customer_number="C-1000")
    await portal.call("metering.submit_reading", {"device_id": device["device_id"], "reading_date": "2015-03-31",
                                                  "readings": readings(10000, 2000)}, token=token)
    usual = await portal.call("metering.preview_reading", {
        "device_id": device["device_id"], "reading_date": "2015-06-30", "readings": readings(19000, 3000)},
        token=token)
    assert usual["warnings"] == []
    typo = {"device_id": device["device_id"], "reading_date": "2015-06-30", "readings": readings(190000, 3000)}
    preview = await portal.call("metering.preview_reading", typo, token=token, lang="de")
    assert [(warning["code"], warning["counter"]) for warning in preview["warnings"]] == [("unusually_high", "mono")]
    assert "Tippfehler" in preview["warnings"][0]["message"]
    submitted = await portal.call("metering.submit_reading", typo, token=token)
    assert submitted["warnings"] and submitted["counters"][0]["printed_pages"] == 180000
    history = await portal.call("metering.history", {"device_id": device["device_id"]}, token=token)
    assert [reading["flagged"] for reading in history["readings"]] == [True, False]


async def test_usage_covers_the_callers_fleet_as_json_and_as_a_workbook_with_a_chart(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer)
    first, second = [await provision_device(amqp_url, metering, customer_number=customer,
                                            last={"mono": 0, "color": 0}, last_date=date(2025, 1, 1))
                     for _ in range(2)]
    foreign = await provision_device(amqp_url, metering, customer_number=random_id("C-"),
                                     last={"mono": 0, "color": 0}, last_date=date(2025, 1, 1))
    token, _ = token_for(settings, customer_number=customer)
    for device, scale in ((first, 1), (second, 2)):
        for day, mono in (("2025-03-30", 100), ("2025-06-29", 300)):
            await portal.call("metering.submit_reading", {"device_id": device["device_id"], "reading_date": day,
                                                          "readings": readings(mono * scale, 10 * scale)},
                              token=token)
    usage = await portal.call("metering.usage", {"from": "2025-01-01", "to": "2025-12-31"}, token=token)
    assert [(row["serial_number"], row["period_end"], row["total"]) for row in usage["items"]] == sorted([
        (first["serial_number"], "2025-03-31", 110), (first["serial_number"], "2025-06-30", 200),
        (second["serial_number"], "2025-03-31", 220), (second["serial_number"], "2025-06-30", 400)])
    assert foreign["serial_number"] not in str(usage)
    assert usage.get("file") is None
    narrowed = await portal.call("metering.usage", {"from": "2025-04-01", "to": "2025-06-30"}, token=token)
    assert {row["period_end"] for row in narrowed["items"]} == {"2025-06-30"}
    workbook_reply = await portal.call("metering.usage", {"from": "2025-01-01", "to": "2025-12-31",
                                                          "format": "xlsx"}, token=token, lang="de")
    content = base64.b64decode(workbook_reply["file"]["content_base64"])
    assert workbook_reply["file"]["filename"].endswith(".xlsx")
    workbook = openpyxl.load_workbook(io.BytesIO(content))
    usage_sheet, chart_sheet = workbook.worksheets
    rows = list(usage_sheet.values)
    assert rows[0] == ("Seriennummer", "Modell", "Name", "Periodenende", "color", "mono", "Gesamt")
    assert len(rows) == 5
    assert list(chart_sheet.values)[1:] == [("2025-03-31", 330), ("2025-06-30", 600)]
    assert any(name.startswith("xl/charts/chart") for name in zipfile.ZipFile(io.BytesIO(content)).namelist())
    assert await outcome(portal, "metering.usage", {"from": "2025-12-31", "to": "2025-01-01"}, token=token) \
        == "validation_failed"


async def test_list_due_shows_the_devices_whose_window_is_open_and_reading_missing(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer, billing_period="monthly")
    window = periods.window_on(today(), "monthly")
    last_date = today() - timedelta(days=40)
    due = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 7, "color": 3},
                                 last_date=last_date)
    read = await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 7, "color": 3},
                                  last_date=last_date)
    await provision_device(amqp_url, metering, customer_number=customer, e_maintenance=True)
    await provision_device(amqp_url, metering, customer_number=customer, contract_number=None)
    token, _ = token_for(settings, customer_number=customer)
    if window is None:
        listed = await portal.call("metering.list_due", {}, token=token)
        assert listed["items"] == []  # no monthly window is open today
        return
    await portal.call("metering.submit_reading", {"device_id": read["device_id"], "readings": readings(8, 4)},
                      token=token)
    listed = await portal.call("metering.list_due", {}, token=token)
    assert listed["total"] == 1
    (item,) = listed["items"]
    assert item["device_id"] == due["device_id"] and item["period_end"] == window.period_end.isoformat()
    assert [(c["counter"], c["last_value"], c["last_date"], c["period_end"]) for c in item["counters"]] == [
        ("mono", 7, last_date.isoformat(), window.period_end.isoformat()),
        ("color", 3, last_date.isoformat(), window.period_end.isoformat())]


async def test_list_due_of_some_devices_lists_only_those_the_caller_sees(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    await provision_customer(amqp_url, metering, customer, billing_period="monthly")
    if periods.window_on(today(), "monthly") is None:
        pytest.skip("no monthly window is open today")
    due = [await provision_device(amqp_url, metering, customer_number=customer, last={"mono": 7, "color": 3},
                                  last_date=today() - timedelta(days=40)) for _ in range(3)]
    other = random_id("C-")
    await provision_customer(amqp_url, metering, other, billing_period="monthly")
    theirs = await provision_device(amqp_url, metering, customer_number=other, last={"mono": 7, "color": 3},
                                    last_date=today() - timedelta(days=40))
    token, _ = token_for(settings, customer_number=customer)
    asked = [due[2]["device_id"], theirs["device_id"], due[0]["device_id"], "no-such-device"]
    listed = await portal.call("metering.list_due", {"device_ids": asked}, token=token)
    assert sorted(item["device_id"] for item in listed["items"]) == sorted([due[0]["device_id"], due[2]["device_id"]])
    assert listed["total"] == 2
    assert (await portal.call("metering.list_due", {"device_ids": []}, token=token))["total"] == 0
    assert (await portal.call("metering.list_due", {}, token=token))["total"] == 3
    their_token, _ = token_for(settings, customer_number=other)
    assert (await portal.call("metering.list_due", {"device_ids": asked}, token=their_token))["total"] == 1
    assert await outcome(portal, "metering.list_due", {"device_ids": ["d"] * 201}, token=token) == "validation_failed"


async def test_an_older_device_event_arriving_late_changes_nothing(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, version=3, friendly_name="Empfang")
    await provision_device(amqp_url, metering, version=2, friendly_name="old", device_id=device["device_id"],
                           serial_number=device["serial_number"], wait=False)
    await asyncio.sleep(0.5)
    stored = await metering.db.devices.find_one({"_id": device["device_id"]})
    assert stored is not None
    assert (stored["version"], stored["friendly_name"]) == (3, "Empfang")


async def test_a_device_its_customer_deregistered_is_refused_to_them_but_not_to_a_claimant(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    claimant, claimant_claims = token_for(settings, customer_number=random_id("C-"))
    device = await provision_device(amqp_url, metering, last={"mono": 1, "color": 1},
                                    last_date=today() - timedelta(days=5), claimants=[claimant_claims.user_id])
    await provision_device(amqp_url, metering, routing_key=DeviceUpdated.routing_key, version=2, visible=False,
                           device_id=device["device_id"], serial_number=device["serial_number"],
                           claimants=[claimant_claims.user_id])
    member, _ = token_for(settings, customer_number="C-1000")
    body = {"device_id": device["device_id"], "readings": readings(5, 5)}
    assert await outcome(portal, "metering.submit_reading", body, token=member) == "not_found"
    assert await outcome(portal, "metering.submit_reading", body, token=claimant) == "ok"


async def test_a_contract_sign_in_sees_only_its_contracts_devices(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    customer = random_id("C-")
    mine = await provision_device(amqp_url, metering, customer_number=customer, contract_number="K-1",
                                  last={"mono": 1, "color": 1}, last_date=date(2025, 1, 1))
    other = await provision_device(amqp_url, metering, customer_number=customer, contract_number="K-2",
                                   last={"mono": 1, "color": 1}, last_date=date(2025, 1, 1))
    token, _ = token_for(settings, customer_number=customer, contract_number="K-1")
    assert await outcome(portal, "metering.history", {"device_id": mine["device_id"]}, token=token) == "ok"
    assert await outcome(portal, "metering.history", {"device_id": other["device_id"]}, token=token) == "not_found"
    reply = await portal.call("metering.submit_bulk", {"readings": [
        {"serial_number": other["serial_number"], "counter": "mono", "value": 5},
        {"serial_number": other["serial_number"], "counter": "color", "value": 5}]}, token=token)
    assert [row["code"] for row in reply["rejected"]] == ["not_found", "not_found"]


async def test_the_installed_bases_last_readings_are_where_metering_starts(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380},
                                    last_date=date(2015, 3, 25))
    token, _ = token_for(settings, customer_number="C-1000")
    assert await outcome(portal, "metering.submit_reading", {
        "device_id": device["device_id"], "reading_date": "2015-03-20", "readings": readings(4600, 5400)},
        token=token) == "invalid_reading_date"
    assert await outcome(portal, "metering.submit_reading", {
        "device_id": device["device_id"], "reading_date": "2015-06-20", "readings": readings(4400, 5400)},
        token=token) == "reading_lower_than_last"


async def test_operator_commands_are_refused_to_customers(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering)
    token, _ = token_for(settings, customer_number="C-1000")
    for command, body in (
            ("metering.operator.record_estimate", {"device_id": device["device_id"], "reading_date": "2025-01-01",
                                                   "readings": MONO_COLOR}),
            ("metering.device_report", {"serial_number": device["serial_number"], "reading_date": "2025-01-01",
                                        "readings": MONO_COLOR}),
            ("metering.operator.run_reminders", {"as_of": "2025-01-01"}),
            ("metering.operator.overdue", {"period_end": "2024-12-31"})):
        assert await outcome(portal, command, body, token=token) == "forbidden"
    assert await outcome(portal, "metering.list_due", {}) == "unauthenticated"
    assert await metering.db.readings.count_documents({}) == 0


async def test_a_claimant_outside_the_customer_finds_the_device_in_their_usage(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    claimant, claims = token_for(settings, customer_number=random_id("C-"))
    device = await provision_device(amqp_url, metering, last={"mono": 0, "color": 0}, last_date=date(2025, 1, 1),
                                    claimants=[random_id("u"), claims.user_id])
    await portal.call("metering.submit_reading", {"device_id": device["device_id"], "reading_date": "2025-03-30",
                                                  "readings": readings(100, 10)}, token=claimant)
    usage = await portal.call("metering.usage", {"from": "2025-01-01", "to": "2025-12-31"}, token=claimant)
    assert [row["device_id"] for row in usage["items"]] == [device["device_id"]]
