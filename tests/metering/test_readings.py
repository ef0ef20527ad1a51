"""Single readings: the preview, the submit and every refusal of CATALOG §4, against the real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError

from contracts.accounts import SessionRevoked
from contracts.client import PortalClient
from services.metering.store import MeteringStore
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_id, token_for
from tests.readmodels import provision_device, today
from tests.support import EventTap, outcome

pytestmark = pytest.mark.asyncio


async def test_the_oki_example_previews_4000_and_4470_printed_pages(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380},
                                    last_date=date(2015, 3, 25))
    token, _ = token_for(settings, customer_number="C-1000")
    preview = await portal.call("metering.preview_reading", {
        "device_id": device["device_id"], "reading_date": "2015-06-28",
        "readings": [{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}]}, token=token)
    assert [(c["counter"], c["last_value"], c["last_date"], c["new_value"], c["printed_pages"])
            for c in preview["counters"]] == [("mono", 4500, "2015-03-25", 8500, 4000),
                                              ("color", 5380, "2015-03-25", 9850, 4470)]
    assert preview["period_end"] == "2015-06-30"
    assert await metering.db.readings.count_documents({}) == 0


async def test_a_submitted_reading_is_stored_once_and_announced(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380})
    token, claims = token_for(settings, customer_number="C-1000")
    body = {"device_id": device["device_id"],
            "readings": [{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}]}
    async with EventTap(amqp_url, "metering.#") as tap:
        reply = await portal.call("metering.submit_reading", body, token=token, message_id="m-1")
        again = await portal.call("metering.submit_reading", body, token=token, message_id="m-1")
        event = await tap.next("metering.reading.submitted")
    assert reply == again
    assert [c["printed_pages"] for c in reply["counters"]] == [4000, 4470]
    assert event["reading_id"] == reply["reading_id"] and event["source"] == "customer"
    assert event["submitted_by"] == claims.user_id
    assert await metering.db.readings.count_documents({"device_id": device["device_id"]}) == 1


@pytest.mark.parametrize(("readings", "code"), [
    ([{"counter": "mono", "value": 8500}], "counters_incomplete"),
    ([{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}, {"counter": "a3", "value": 1}],
     "unknown_counter"),
    ([{"counter": "mono", "value": 4000}, {"counter": "color", "value": 9850}], "reading_lower_than_last"),
    ([{"counter": "mono", "value": -1}, {"counter": "color", "value": 9850}], "validation_failed"),
    ([{"counter": "mono", "value": 1.5}, {"counter": "color", "value": 9850}], "validation_failed"),
    ([{"counter": "mono", "value": "8500"}, {"counter": "color", "value": 9850}], "validation_failed"),
])
async def test_a_reading_breaking_a_rule_is_refused_and_changes_nothing(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance,
        readings: list[dict[str, object]], code: str) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380})
    token, _ = token_for(settings, customer_number="C-1000")
    for command in ("metering.preview_reading", "metering.submit_reading"):
        assert await outcome(portal, command, {"device_id": device["device_id"], "readings": readings},
                             token=token) == code
    assert await metering.db.readings.count_documents({}) == 0


async def test_a_reading_dated_in_the_future_or_before_the_last_one_is_refused(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380},
                                    last_date=today() - timedelta(days=10))
    token, _ = token_for(settings, customer_number="C-1000")
    readings = [{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}]
    for day in (today() + timedelta(days=2), today() - timedelta(days=11)):  # UTC's tomorrow is today somewhere
        assert await outcome(portal, "metering.submit_reading", {
            "device_id": device["device_id"], "readings": readings, "reading_date": day.isoformat()},
            token=token) == "invalid_reading_date"
    assert await outcome(portal, "metering.submit_reading", {
        "device_id": device["device_id"], "readings": readings, "reading_date": today().isoformat()},
        token=token) == "ok"


async def test_a_reading_dated_today_where_the_day_begins_first_is_taken_and_a_day_later_is_in_the_future(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    """East of UTC a customer's today is UTC's tomorrow after its midnight: at most 14 hours ahead (Kiritimati)."""
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380},
                                    last_date=today() - timedelta(days=10))
    token, _ = token_for(settings, customer_number="C-1000")
    readings = [{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}]
    latest = (datetime.now(UTC) + timedelta(hours=14)).date()
    assert await outcome(portal, "metering.submit_reading", {
        "device_id": device["device_id"], "readings": readings,
        "reading_date": (latest + timedelta(days=1)).isoformat()}, token=token) == "invalid_reading_date"
    assert await outcome(portal, "metering.submit_reading", {
        "device_id": device["device_id"], "readings": readings, "reading_date": latest.isoformat()},
        token=token) == "ok"


async def test_a_customer_reading_below_an_estimate_is_refused_with_the_seeds_explanation(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380},
                                    last_date=today() - timedelta(days=30))
    operator, _ = token_for(settings, Role.OPERATOR, customer_number=None)
    await portal.call("metering.operator.record_estimate", {
        "device_id": device["device_id"], "reading_date": (today() - timedelta(days=5)).isoformat(),
        "readings": [{"counter": "mono", "value": 9000}, {"counter": "color", "value": 9000}]}, token=operator)
    token, _ = token_for(settings, customer_number="C-1000")
    envelope = await portal.send("metering.submit_reading", b'{"device_id": "%s", "readings": [{"counter": "mono", '
                                 b'"value": 8500}, {"counter": "color", "value": 9850}]}'
                                 % device["device_id"].encode(), token=token, lang="de")
    assert envelope["error"]["code"] == "reading_lower_than_last"
    assert "geschätzt" in envelope["error"]["message"] and "Vertragsteam" in envelope["error"]["message"]
    history = await portal.call("metering.history", {"device_id": device["device_id"]}, token=token)
    assert [reading["source"] for reading in history["readings"]] == ["estimate"]


async def test_another_customers_device_is_not_found(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380})
    stranger, _ = token_for(settings, customer_number="C-2000")
    readings = [{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}]
    for command in ("metering.preview_reading", "metering.submit_reading"):
        assert await outcome(portal, command, {"device_id": device["device_id"], "readings": readings},
                             token=stranger) == "not_found"
    assert await outcome(portal, "metering.history", {"device_id": device["device_id"]}, token=stranger) \
        == "not_found"


async def test_two_readings_at_the_same_moment_are_judged_one_after_the_other(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380})
    token, _ = token_for(settings, customer_number="C-1000")
    values = [9000, 8000, 8500, 9500, 7000, 10000]
    results = await asyncio.gather(*(outcome(portal, "metering.submit_reading", {
        "device_id": device["device_id"], "readings": [{"counter": "mono", "value": value},
                                                       {"counter": "color", "value": 6000}]}, token=token)
        for value in values))
    stored = [reading async for reading in metering.db.readings.find({"device_id": device["device_id"]}).sort("seq")]
    accepted = [value for value, result in zip(values, results, strict=True) if result == "ok"]
    assert sorted(accepted) == sorted(reading["counters"]["mono"]["value"] for reading in stored)
    monos = [reading["counters"]["mono"]["value"] for reading in stored]
    assert monos == sorted(monos), "each stored reading is at least the one before"
    assert all(result in ("ok", "reading_lower_than_last") for result in results)


@pytest.mark.parametrize("cache", ["advanced", "behind"])
async def test_a_reading_re_run_after_a_crash_is_answered_with_the_one_it_stored(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance, cache: str) -> None:
    """A worker stored the reading, then died before its claim was completed (or failed, releasing it): the copy
    the client sends again runs the handler afresh. It finds nothing to refuse or store twice: the same reply, one
    reading, one event. `behind`: it died before the device's cache was advanced too, so the copy collides on the
    reading's number; `advanced`: the copy is judged against its own reading and collides on the command."""
    device = await provision_device(amqp_url, metering, last={"mono": 4500, "color": 5380})
    token, _ = token_for(settings, customer_number="C-1000")
    body = {"device_id": device["device_id"],
            "readings": [{"counter": "mono", "value": 8500}, {"counter": "color", "value": 9850}]}
    before = await metering.db.devices.find_one({"_id": device["device_id"]})
    assert before is not None
    async with EventTap(amqp_url, "metering.reading.submitted") as tap:
        first = await portal.call("metering.submit_reading", body, token=token, message_id="m-crash")
        await tap.next("metering.reading.submitted")
        cached = await metering.db.devices.find_one({"_id": device["device_id"]})
        assert (await metering.db.message_claims.delete_many({"_id": {"$regex": "m-crash"}})).deleted_count == 1
        if cache == "behind":
            await metering.db.devices.replace_one({"_id": device["device_id"]}, before)
        again = await portal.call("metering.submit_reading", body, token=token, message_id="m-crash")
        await asyncio.sleep(1.5)  # longer than the relay's poll: a second event would be out
    assert again == first
    assert len(tap.named("metering.reading.submitted")) == 1
    assert await metering.db.readings.count_documents({"device_id": device["device_id"]}) == 1
    if cache == "advanced":
        assert await metering.db.devices.find_one({"_id": device["device_id"]}) == cached


async def test_a_copy_starting_beside_a_running_one_leaves_no_moment_a_command_stores_two_readings(
        metering: ServiceInstance) -> None:
    """Review finding, fixed: `MeteringStore.create_indexes` dropped `command_id_1` (the plain index of before) on every
    start. nx-27017 names indexes its own way and drops the index on `command_id` whatever name is asked, so each
    start of a metering copy removes the unique index and builds it again. Meanwhile the copies already running
    store a re-run's reading a second time (nothing refuses it: `readings.record` only looks for the earlier one
    after a collision), and then the unique index cannot be built: the starting copy fails to start."""
    first_run = {"_id": "d-1:0000000001", "device_id": "d-1", "seq": 1, "command_id": "m-twice"}
    await metering.db.readings.insert_one(first_run)

    class RunningCopyWritesMeanwhile:
        """The readings collection as the starting copy uses it; another copy stores a re-run's reading between
        its drop and its create."""

        def __getattr__(self, name: str) -> Any:
            return getattr(metering.db.readings, name)

        async def drop_index(self, name: str) -> None:
            await metering.db.readings.drop_index(name)
            with contextlib.suppress(DuplicateKeyError):
                await metering.db.readings.insert_one({**first_run, "_id": "d-1:0000000002", "seq": 2})

    starting = MeteringStore(metering.db)
    starting.readings = RunningCopyWritesMeanwhile()  # type: ignore[assignment]
    await starting.create_indexes()
    assert await metering.db.readings.count_documents({"command_id": "m-twice"}) == 1
    with pytest.raises(DuplicateKeyError):  # and the copies already running are still held to one reading
        await metering.db.readings.insert_one({**first_run, "_id": "d-1:0000000003", "seq": 3})


async def test_a_revoked_session_is_told_unauthenticated_whatever_its_reading_and_nothing_is_stored(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    """The revocation is looked up while the reading is judged: it is asked before the write and before any refusal
    (a revoked caller learns nothing about the device, not even that it is someone else's)."""
    own = await provision_device(amqp_url, metering, last={"mono": 100, "color": 100})
    strangers = await provision_device(amqp_url, metering, customer_number=random_id("C-"))
    token, claims = token_for(settings, customer_number="C-1000")
    now = datetime.now(UTC)
    await metering.revocations.add(SessionRevoked(session_id=claims.session_id, revoked_at=now,
                                                  until=now + timedelta(hours=2)))
    good = [{"counter": "mono", "value": 200}, {"counter": "color", "value": 200}]
    for device, readings in ((own, good), (own, [{"counter": "mono", "value": 1}]), (strangers, good)):
        assert await outcome(portal, "metering.submit_reading", {"device_id": device["device_id"],
                                                                 "readings": readings}, token=token) \
            == "unauthenticated"
    assert await metering.db.readings.count_documents({}) == 0
    assert await metering.db.message_claims.count_documents({"_id": {"$regex": "^metering.submit_reading:"}}) == 0
