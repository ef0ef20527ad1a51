"""A ticket's life: the operator's steps with technician, ETA and notes, each announced with its sequence; the
transitions the life cycle refuses; notes and cancellation only before dispatch; each change applied once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.client import PortalClient, PortalError
from contracts.ticketing import TRANSITIONS
from services.runtime.service import ServiceInstance
from services.ticketing.settings import TicketingSettings
from tests.builders import random_id, token_for
from tests.support import EventTap, outcome
from tests.ticketing.flows import CONTACT, PATH, customer_device, holder, move, opened, operator, parts

pytestmark = pytest.mark.asyncio(loop_scope="module")

STATUSES = list(TRANSITIONS)


def of(number: str, status: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """Which events a test waits for: those of its ticket (going to `status`)."""
    return lambda body: body["ticket_number"] == number and status in (None, body.get("status"))


async def refused(portal: PortalClient, command: str, body: dict[str, Any], token: str) -> tuple[str, dict[str, str]]:
    with pytest.raises(PortalError) as error:
        await portal.call(command, body, token=token)
    return error.value.code, error.value.fields


async def test_a_ticket_goes_from_to_be_scheduled_to_closed_step_by_step_each_in_its_history_and_announced(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device, lang="nb")
    steps: list[dict[str, Any]] = [
        {"status": "dispatched", "technician": "Kari Nordmann", "eta": "2026-12-04T09:30:00+01:00",
         "note": "Ersatzteil bestellt"},
        {"status": "en_route"},
        {"status": "on_site", "note": "Vor Ort"},
        {"status": "resolved", "note": "Fixiereinheit getauscht"},
        {"status": "closed"},
    ]
    async with EventTap(amqp_url, "ticketing.ticket.status_changed") as tap:
        for step in steps:
            assert await holder(ticketing, device) == (number if step["status"] != "closed" else None)
            assert await portal.call("ticketing.operator.set_status", {"ticket_number": number, **step},
                                     token=operator(settings)) == {"status": step["status"]}
            stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
            assert (stored["status"], stored["updatable"]) == (step["status"], False)
        assert await holder(ticketing, device) is None  # resolved freed the device
        await tap.next("ticketing.ticket.status_changed", of(number, "closed"))
    eta = "2026-12-04T09:30:00+01:00"  # as the operator gave it
    assert [(entry["status"], entry["by"], entry["technician"], entry["eta"], entry["note"])
            for entry in stored["history"]] == [
        ("to_be_scheduled", "customer", None, None, None),
        ("dispatched", "operator", "Kari Nordmann", eta, "Ersatzteil bestellt"),
        ("en_route", "operator", "Kari Nordmann", eta, None),
        ("on_site", "operator", "Kari Nordmann", eta, "Vor Ort"),
        ("resolved", "operator", "Kari Nordmann", eta, "Fixiereinheit getauscht"),
        ("closed", "operator", "Kari Nordmann", eta, None)]
    assert [entry["at"] for entry in stored["history"]] == sorted(entry["at"] for entry in stored["history"])
    assert (stored["technician"], stored["eta"]) == ("Kari Nordmann", eta)
    events = [body for body in tap.named("ticketing.ticket.status_changed") if body["ticket_number"] == number]
    assert [(body["previous_status"], body["status"], body["sequence"]) for body in events] == [
        ("to_be_scheduled", "dispatched", 1), ("dispatched", "en_route", 2), ("en_route", "on_site", 3),
        ("on_site", "resolved", 4), ("resolved", "closed", 5)]
    assert [body["eta_changed"] for body in events] == [True, False, False, False, False]  # only dispatch set one
    dispatched = events[0]
    assert dispatched["change"] == {**{key: stored["history"][1][key] for key in ("status", "at", "by", "note")},
                                    "technician": "Kari Nordmann", "eta": eta}
    assert (dispatched["contact"], dispatched["language"], dispatched["device"]["serial_number"],
            dispatched["service_address"]["street"], dispatched["reason"]) == (
        CONTACT, "nb", device["serial_number"], "Hansaallee 187", None)
    assert parts(await opened(portal, token, device))[1] == 2


@pytest.mark.parametrize("current", STATUSES)
async def test_every_status_change_the_life_cycle_does_not_allow_is_refused_and_changes_nothing(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance,
        current: str) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    await move(portal, settings, number, *PATH[current])
    before = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    refusals = {asked: await refused(portal, "ticketing.operator.set_status",
                                     {"ticket_number": number, "status": asked, "note": "skip"}, operator(settings))
                for asked in STATUSES if asked not in TRANSITIONS[current]}
    assert refusals == {asked: ("invalid_transition", {"status": f"{current} -> {asked} is not allowed"})
                        for asked in STATUSES if asked not in TRANSITIONS[current]}
    assert current in refusals  # the same status again, with another note, is no step either
    assert await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token) == before


async def test_the_operator_may_cancel_a_ticket_before_the_technician_is_on_the_way_and_frees_the_device(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    async with EventTap(amqp_url, "ticketing.ticket.status_changed") as tap:
        for path in ((), ("dispatched",)):
            number = await opened(portal, token, device)
            await move(portal, settings, number, *path, "cancelled", note="Kunde hat abgesagt")
            assert await holder(ticketing, device) is None
            event = await tap.next("ticketing.ticket.status_changed", of(number, "cancelled"))
            assert (event["previous_status"], event["sequence"], event["change"]["by"], event["change"]["note"]) == (
                path[-1] if path else "to_be_scheduled", len(path) + 1, "operator", "Kunde hat abgesagt")
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert [entry["status"] for entry in stored["history"]] == ["to_be_scheduled", "dispatched", "cancelled"]
    assert parts(await opened(portal, token, device))[1] == 3


async def test_a_customer_cancels_before_dispatch_with_a_reason_and_again_is_fine(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    colleague, _ = token_for(settings, customer_number=device["customer_number"])
    number = await opened(portal, token, device)
    body = {"ticket_number": number, "reason": "Stau selbst behoben"}
    async with EventTap(amqp_url, "ticketing.ticket.status_changed") as tap:
        assert await holder(ticketing, device) == number
        assert await portal.call("ticketing.cancel_ticket", body, token=token) == {"status": "cancelled"}
        assert await holder(ticketing, device) is None
        event = await tap.next("ticketing.ticket.status_changed", of(number))
        assert await portal.call("ticketing.cancel_ticket", body, token=colleague) == {"status": "cancelled"}
        await asyncio.sleep(0.3)
    assert (event["status"], event["previous_status"], event["reason"], event["sequence"]) == (
        "cancelled", "to_be_scheduled", "Stau selbst behoben", 1)
    assert (event["change"]["by"], event["change"]["note"]) == ("customer", "Stau selbst behoben")
    assert len(tap.named("ticketing.ticket.status_changed")) == 1
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert (stored["status"], stored["updatable"]) == ("cancelled", False)
    assert [(entry["status"], entry["by"]) for entry in stored["history"]] == [
        ("to_be_scheduled", "customer"), ("cancelled", "customer")]


@pytest.mark.parametrize("current", ["dispatched", "en_route", "on_site", "resolved", "closed"])
async def test_a_customer_cannot_cancel_once_a_technician_is_dispatched(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance,
        current: str) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    await move(portal, settings, number, *PATH[current])
    assert await refused(portal, "ticketing.cancel_ticket", {"ticket_number": number, "reason": "zu spät"},
                         token) == ("already_dispatched", {"ticket_number": current})
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert stored["status"] == current and len(stored["history"]) == len(PATH[current]) + 1


async def test_notes_are_added_before_dispatch_announced_and_listed_oldest_first_then_refused(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    async with EventTap(amqp_url, "ticketing.ticket.updated") as tap:
        for text in ("Fehlercode 231", "Nur vormittags erreichbar"):
            assert await portal.call("ticketing.add_note", {"ticket_number": number, "text": text}, token=token) == {}
        await tap.next("ticketing.ticket.updated", lambda body: body["note"]["text"] == "Nur vormittags erreichbar")
    assert [(body["ticket_number"], body["note"]["text"], body["note"]["by"], body["contact"])
            for body in tap.named("ticketing.ticket.updated")] == [
        (number, "Fehlercode 231", "customer", CONTACT), (number, "Nur vormittags erreichbar", "customer", CONTACT)]
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert [(note["text"], note["by"]) for note in stored["notes"]] == [
        ("Fehlercode 231", "customer"), ("Nur vormittags erreichbar", "customer")]
    assert stored["notes"][0]["at"] <= stored["notes"][1]["at"]
    await move(portal, settings, number, "dispatched")
    assert await refused(portal, "ticketing.add_note", {"ticket_number": number, "text": "Noch etwas"}, token) == (
        "already_dispatched", {"ticket_number": "dispatched"})
    await move(portal, settings, number, "cancelled")
    assert (await refused(portal, "ticketing.add_note", {"ticket_number": number, "text": "Noch etwas"},
                          token))[0] == "already_dispatched"  # the catalogue's one code for "not any more"
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert len(stored["notes"]) == 2


async def test_a_ticket_takes_at_most_40_notes(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    await ticketing.db.tickets.update_one({"ticket_number": number}, {"$set": {"note_count": 39}})
    assert await outcome(portal, "ticketing.add_note", {"ticket_number": number, "text": "39"}, token=token) == "ok"
    assert await refused(portal, "ticketing.add_note", {"ticket_number": number, "text": "40"}, token) == (
        "rate_limited", {"text": "at most 40 notes per ticket"})
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert [note["text"] for note in stored["notes"]] == ["39"]


async def test_a_note_and_a_dispatch_sent_at_once_end_either_with_the_note_before_dispatch_or_the_note_refused(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    for _ in range(6):
        number = await opened(portal, token, device)
        note, dispatch = await asyncio.gather(
            outcome(portal, "ticketing.add_note", {"ticket_number": number, "text": "Eilig"}, token=token),
            outcome(portal, "ticketing.operator.set_status", {"ticket_number": number, "status": "dispatched",
                                                              "technician": "Kari"}, token=operator(settings)))
        stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
        assert dispatch == "ok" and note in ("ok", "already_dispatched")
        assert [entry["status"] for entry in stored["history"]] == ["to_be_scheduled", "dispatched"]
        assert [item["text"] for item in stored["notes"]] == (["Eilig"] if note == "ok" else [])
        if note == "ok":
            assert stored["notes"][0]["at"] <= stored["history"][1]["at"]
        await move(portal, settings, number, "cancelled")


async def test_a_status_change_sent_again_is_answered_the_same_and_applied_and_announced_once(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    body = {"ticket_number": number, "status": "dispatched", "technician": "Kari Nordmann",
            "eta": "2026-12-04T09:30:00+01:00", "note": "Teil kommt mit"}
    message_id, back_office = random_id("status-"), operator(settings)  # a message id is one sender's
    async with EventTap(amqp_url, "ticketing.ticket.status_changed") as tap:
        for _ in range(2):  # one message id twice: the stored reply
            assert await portal.call("ticketing.operator.set_status", body, token=back_office,
                                     message_id=message_id) == {"status": "dispatched"}
        await ticketing.db.message_claims.delete_many({})  # the stored reply lost: the command runs again
        assert await portal.call("ticketing.operator.set_status", body, token=back_office,
                                 message_id=message_id) == {"status": "dispatched"}
        # Another message id, the same change (a client that re-sends with a new id): the same answer.
        assert await portal.call("ticketing.operator.set_status", body, token=back_office) == {
            "status": "dispatched"}
        await tap.next("ticketing.ticket.status_changed", of(number))
        await asyncio.sleep(0.5)
    assert len(tap.named("ticketing.ticket.status_changed")) == 1
    for other in ({"technician": "Ola Nordmann"}, {"eta": "2026-12-05T09:30:00+01:00"}, {"note": "anders"}):
        assert (await refused(portal, "ticketing.operator.set_status", {**body, **other}, operator(settings)))[0] \
            == "invalid_transition"
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert [entry["status"] for entry in stored["history"]] == ["to_be_scheduled", "dispatched"]


async def test_a_note_and_a_cancellation_sent_again_with_one_message_id_are_applied_once(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    note, cancel = random_id("note-"), random_id("cancel-")
    async with EventTap(amqp_url, "ticketing.ticket.#") as tap:
        for _ in range(2):
            assert await portal.call("ticketing.add_note", {"ticket_number": number, "text": "Fehler 231"},
                                     token=token, message_id=note) == {}
            await ticketing.db.message_claims.delete_many({})
        for _ in range(2):
            assert await portal.call("ticketing.cancel_ticket", {"ticket_number": number, "reason": "erledigt"},
                                     token=token, message_id=cancel) == {"status": "cancelled"}
            await ticketing.db.message_claims.delete_many({})
        await tap.next("ticketing.ticket.status_changed", of(number))
        await asyncio.sleep(0.5)
    assert [key for key, body in tap.events if body["ticket_number"] == number] == [
        "ticketing.ticket.updated", "ticketing.ticket.status_changed"]
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert len(stored["notes"]) == 1 and len(stored["history"]) == 2


async def test_the_technician_and_eta_stay_as_set_at_dispatch_unless_a_later_step_gives_new_ones(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    await move(portal, settings, number, "dispatched")
    await move(portal, settings, number, "en_route", technician="Ola Nordmann", eta="2026-12-04T11:00:00+01:00")
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    # The operator's offset is kept: the customer's mail and calendar show the visit at 11:00 local time.
    assert (stored["technician"], stored["eta"]) == ("Ola Nordmann", "2026-12-04T11:00:00+01:00")
    assert datetime.fromisoformat(stored["eta"]) == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert [(entry["technician"], entry["eta"]) for entry in stored["history"]] == [
        (None, None), ("Kari Nordmann", "2026-12-04T09:30:00+01:00"), ("Ola Nordmann", "2026-12-04T11:00:00+01:00")]


async def test_an_eta_without_a_time_zone_and_an_unknown_ticket_are_refused(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    code, fields = await refused(portal, "ticketing.operator.set_status", {
        "ticket_number": number, "status": "dispatched", "eta": "2026-12-04T09:30:00"}, operator(settings))
    assert code == "validation_failed" and "eta" in fields
    for bad in ("1484049", "1484049/", "abc/1", "1484049-1"):
        code, fields = await refused(portal, "ticketing.get_ticket", {"ticket_number": bad}, token)
        assert code == "validation_failed" and "ticket_number" in fields
    for command, body in (("ticketing.operator.set_status", {"status": "dispatched"}),
                          ("ticketing.get_ticket", {}), ("ticketing.add_note", {"text": "x"}),
                          ("ticketing.cancel_ticket", {"reason": "x"})):
        assert await refused(portal, command, {"ticket_number": "9999999/9", **body}, operator(settings)) == (
            "not_found", {"ticket_number": "not_found"})
