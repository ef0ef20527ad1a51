"""Races and refusals an adversarial review probed: each test states a promise of the catalogue or the README and
fails where the service would not keep it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import ticketing as api
from contracts.client import PortalClient, PortalError
from services.runtime.commands import ClaimInWrite, CommandContext, CommandError
from services.runtime.mongo import stamp
from services.runtime.readmodels import record_viewers
from services.runtime.service import ServiceInstance
from services.ticketing import opening
from services.ticketing.app import service as ticketing_service
from services.ticketing.settings import TicketingSettings
from services.ticketing.store import TicketingStore
from tests.builders import random_id, token_for
from tests.readmodels import provision_device
from tests.support import EventTap, running
from tests.ticketing.flows import HANSAALLEE, customer_device, es5462, move, opened, operator, ticket

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def outcome_of(portal: PortalClient, command: str, body: dict[str, Any], token: str,
                     **options: Any) -> tuple[str, Any]:
    try:
        return "ok", await portal.call(command, body, token=token, **options)
    except PortalError as error:
        return error.code, error.fields


async def open_tickets_of(ticketing: ServiceInstance, device: dict[str, Any]) -> list[str]:
    return [document["ticket_number"] async for document in ticketing.db.tickets.find(
        {"device_id": device["device_id"], "status": {"$in": ["to_be_scheduled", "dispatched", "en_route",
                                                              "on_site"]}})]


# --- input ---------------------------------------------------------------------------------------------------------

async def test_an_eta_the_service_cannot_store_is_validation_failed_not_internal(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """`eta` is an AwareDatetime; years before 1000 are stamped `999-...` (strftime does not pad) which
    `parse_stamp` cannot read, and 9999-12-31 in a zone west of UTC overflows `astimezone(UTC)`: both `internal`."""
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    for eta in ("0999-01-01T09:00:00+00:00", "9999-12-31T23:00:00-05:00"):
        code, fields = await outcome_of(portal, "ticketing.operator.set_status",
                                        {"ticket_number": number, "status": "dispatched", "eta": eta},
                                        operator(settings))
        assert code == "validation_failed", (eta, code, fields)


async def test_a_page_far_beyond_the_last_is_empty_not_internal(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    await opened(portal, token, device)
    code, data = await outcome_of(portal, "ticketing.list_tickets", {"page": 10**17, "page_size": 200}, token)
    assert code in ("ok", "validation_failed"), (code, data)
    if code == "ok":
        assert data["items"] == [] and data["total"] == 1


async def test_a_lone_surrogate_in_the_description_is_refused_and_leaves_no_guard_behind(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """JSON allows `\\ud800`; BSON cannot store it. A refused command must change nothing (CATALOG §1, `internal`:
    nothing is half-applied): the device must not stay blocked by a ticket that was never stored."""
    token, device = await customer_device(amqp_url, ticketing, settings)
    raw = json.dumps(ticket(device)).replace("Papierstau", "Papierstau \\ud800").encode()
    reply = await portal.send("ticketing.open_ticket", raw, token=token)
    assert reply["ok"] is False and reply["error"]["code"] == "validation_failed", reply
    number = await opened(portal, token, device)  # the device is free for a proper ticket
    assert number


async def test_nul_and_astral_characters_round_trip(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    description = "a\x00b \U0001F5A8\u200f\ufeff" + "\U0001F600" * 3990
    number = await opened(portal, token, device, description=description)
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert stored["description"] == description


async def test_header_fields_refuse_line_breaks(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    for name in ("Thomas\r\nBcc: x@example.com", "Thomas\x85Lienert", "T\x00"):
        code, _ = await outcome_of(portal, "ticketing.open_ticket",
                                   ticket(device, contact={"name": name, "email": "t@example.com"}), token)
        assert code == "validation_failed"
    number = await opened(portal, token, device)
    code, _ = await outcome_of(portal, "ticketing.operator.set_status",
                               {"ticket_number": number, "status": "dispatched", "technician": "Kari\nBcc: y@x.y"},
                               operator(settings))
    assert code == "validation_failed"


async def test_the_quick_search_takes_the_number_as_text(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    await opened(portal, token, device)
    for pattern in (".*", "^", "\\d", "(a+)+$", "[", "/", "$where"):
        found = await portal.call("ticketing.list_tickets", {"ticket_number": pattern}, token=token)
        assert found["total"] == (1 if pattern == "/" else 0), pattern


# --- the life cycle ------------------------------------------------------------------------------------------------

async def test_to_be_scheduled_asked_again_is_an_invalid_transition(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """CATALOG §6: only the listed steps; 'anything else → invalid_transition'. No step leads to `to_be_scheduled`,
    so a set_status to it can never be the re-send of a change."""
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    code, fields = await outcome_of(portal, "ticketing.operator.set_status",
                                    {"ticket_number": number, "status": "to_be_scheduled"}, operator(settings))
    assert code == "invalid_transition", (code, fields)


async def test_add_note_after_resolution_is_already_dispatched_as_the_catalogue_names_it(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """CATALOG §6 (binding): add_note 'only while to_be_scheduled → already_dispatched'; cancel_ticket answers
    `already_dispatched` for a resolved ticket, add_note answers `conflict`."""
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    await move(portal, settings, number, "dispatched", "en_route", "on_site", "resolved")
    note = await outcome_of(portal, "ticketing.add_note", {"ticket_number": number, "text": "still broken"}, token)
    cancel = await outcome_of(portal, "ticketing.cancel_ticket", {"ticket_number": number, "reason": "x"}, token)
    assert cancel[0] == "already_dispatched"
    assert note[0] == "already_dispatched", note


async def test_two_operators_dispatching_at_once_one_wins_one_event_one_history_entry(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    for _ in range(5):
        number = await opened(portal, token, device)
        async with EventTap(amqp_url, "ticketing.ticket.status_changed") as tap:
            results = await asyncio.gather(*(outcome_of(
                portal, "ticketing.operator.set_status",
                {"ticket_number": number, "status": status, "technician": technician}, operator(settings))
                for status, technician in (("dispatched", "A"), ("dispatched", "B"), ("dispatched", "C"))))
            await asyncio.sleep(1.0)
        winners = [result for result in results if result[0] == "ok"]
        assert len(winners) == 1, results
        stored = await ticketing.db.tickets.find_one({"ticket_number": number})
        assert stored is not None and len(stored["history"]) == 2
        events = [body for body in tap.named("ticketing.ticket.status_changed") if body["ticket_number"] == number]
        assert len(events) == 1
        if stored["status"] != "cancelled":
            await move(portal, settings, number, "cancelled")


async def test_dispatch_versus_customer_cancel_and_note_one_wins(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    for _ in range(5):
        number = await opened(portal, token, device)
        dispatch, cancel, note = await asyncio.gather(
            outcome_of(portal, "ticketing.operator.set_status", {"ticket_number": number, "status": "dispatched"},
                       operator(settings)),
            outcome_of(portal, "ticketing.cancel_ticket", {"ticket_number": number, "reason": "weg"}, token),
            outcome_of(portal, "ticketing.add_note", {"ticket_number": number, "text": "noch da"}, token))
        assert [dispatch[0], cancel[0]].count("ok") == 1, (dispatch, cancel)
        stored = await ticketing.db.tickets.find_one({"ticket_number": number})
        assert stored is not None
        for entry in stored.get("notes", {}).values():
            dispatched_at = [h["at"] for h in stored["history"].values() if h["status"] != "to_be_scheduled"]
            assert all(entry["at"] <= at for at in dispatched_at) or note[0] == "ok"
        if stored["status"] == "dispatched":
            await move(portal, settings, number, "cancelled")


# --- isolation -----------------------------------------------------------------------------------------------------

async def test_no_one_else_can_tell_a_foreign_ticket_from_a_missing_one(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device)
    missing = "999999999/1"
    strangers = [token_for(settings, customer_number=random_id("C-"))[0],
                 token_for(settings, customer_number=device["customer_number"], contract_number="K-9")[0],
                 token_for(settings, customer_number=None)[0]]
    for stranger in strangers:
        for command, extra in (("ticketing.get_ticket", {}), ("ticketing.add_note", {"text": "x"}),
                               ("ticketing.cancel_ticket", {"reason": "x"})):
            theirs = await outcome_of(portal, command, {"ticket_number": number, **extra}, stranger)
            nobody = await outcome_of(portal, command, {"ticket_number": missing, **extra}, stranger)
            assert theirs == nobody == ("not_found", {"ticket_number": "not_found"}), (command, theirs, nobody)
        listed = await portal.call("ticketing.list_tickets", {"device_id": device["device_id"]}, token=stranger)
        assert listed["total"] == 0
        assert await outcome_of(portal, "ticketing.open_ticket", ticket(device), stranger) == (
            "not_found", {"device_id": "not_found"})


async def test_a_stored_reply_never_answers_another_caller(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    message_id = random_id("m-")
    number = (await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id))
    # The handler reads before it claims (claim_in_write): a caller who may not see the device is refused so first.
    thief, _ = token_for(settings, customer_number=random_id("C-"))
    code, fields = await outcome_of(portal, "ticketing.open_ticket", ticket(device), thief, message_id=message_id)
    assert code == "not_found" and number["ticket_number"] not in json.dumps(fields)
    # One who passes the reads meets the claim: a colleague opening a ticket for another device under that id.
    colleague, _ = token_for(settings, customer_number=device["customer_number"])
    other = await es5462(amqp_url, ticketing, device["customer_number"])
    code, fields = await outcome_of(portal, "ticketing.open_ticket", ticket(other), colleague, message_id=message_id)
    assert code == "conflict" and number["ticket_number"] not in json.dumps(fields)
    assert await open_tickets_of(ticketing, other) == []


# --- guards under concurrency --------------------------------------------------------------------------------------

class PausedAfterReading(TicketingStore):
    """The store of a worker that is slow between reading the guard and storing its ticket (a GC pause, a slow
    database, a process stopped by the scheduler): it waits after reading the guard until `go` is set."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def guard(self, device_id: str) -> dict[str, Any] | None:
        guard = await super().guard(device_id)
        self.reached.set()
        await self.go.wait()
        return guard


async def test_a_stale_guard_healer_racing_the_original_rerun_never_leaves_two_open_tickets(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """A worker died between taking the guard and storing its ticket; its command comes back after the grace period
    (every replica was down longer than PORTAL_TICKETING_GUARD_GRACE_SECONDS) together with the customer's new
    attempt. The re-run read the guard as its own; the new attempt frees it as old and never stored, and opens its
    ticket. The re-run's write takes the guard only if it is still its own: it collides, reads the guard again and is
    refused naming the new ticket. One ticket is open (had the re-run written without that condition, both were)."""
    grace = timedelta(seconds=settings.ticketing_guard_grace_seconds)
    token, claims = token_for(settings)
    device = await es5462(amqp_url, ticketing, claims.customer_number)
    command = random_id("cmd")
    await ticketing.db.open_tickets.insert_one({
        "_id": device["device_id"], "ticket_id": f"t-{command}", "seq": 4600001, "count": 1,
        "at": stamp(datetime.now(UTC) - grace - timedelta(seconds=10)), "contract_key": None,
        "viewers": record_viewers(device["customer_number"], claims.user_id)})
    slow = PausedAfterReading(ticketing.db)
    ctx = CommandContext(command="ticketing.open_ticket", message_id=command, correlation_id=None, language="de",
                         claims=claims, db=ticketing.db, instance=ticketing, claim_in_write=ClaimInWrite(
                             ticketing.claims, "ticketing.open_ticket", random_id("m-"), "the re-run"))
    rerun = asyncio.create_task(opening.open_ticket(
        ctx, slow, api.OpenTicket(**ticket(device)), caller=claims, command_id=command, language="de",
        settings=settings))
    await asyncio.wait_for(slow.reached.wait(), 10)  # the re-run read the guard as its own
    newer = await portal.call("ticketing.open_ticket", ticket(device, description="nochmal"), token=token)
    slow.go.set()
    with pytest.raises(CommandError) as refused:
        await rerun
    assert (refused.value.code, refused.value.fields) == (
        "open_ticket_exists", {"ticket_number": newer["ticket_number"], "updatable": "true"})
    assert await open_tickets_of(ticketing, device) == [newer["ticket_number"]]


async def test_two_instances_twenty_openings_on_a_released_guard_open_one(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    async with running(ticketing_service, settings):
        token, device = await customer_device(amqp_url, ticketing, settings)
        first = await opened(portal, token, device)
        await move(portal, settings, first, "cancelled")
        results = await asyncio.gather(*(outcome_of(portal, "ticketing.open_ticket",
                                                    ticket(device, description=f"x{index}"), token)
                                         for index in range(20)))
        assert [code for code, _ in results].count("ok") == 1, results
        assert len(await open_tickets_of(ticketing, device)) == 1
        # a release racing a new open, and two healers at once
        for _ in range(5):
            [live] = await open_tickets_of(ticketing, device)
            await move(portal, settings, live, "dispatched", "en_route", "on_site")
            results = await asyncio.gather(
                outcome_of(portal, "ticketing.operator.set_status", {"ticket_number": live, "status": "resolved"},
                           operator(settings)),
                *(outcome_of(portal, "ticketing.open_ticket", ticket(device, description=f"y{index}"), token)
                  for index in range(6)))
            assert results[0][0] == "ok"
            assert len(await open_tickets_of(ticketing, device)) <= 1
            if not await open_tickets_of(ticketing, device):
                await opened(portal, token, device)


async def test_a_ticket_an_operator_opens_for_a_device_of_no_customer_is_seen_by_its_registrant(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """README: operators open tickets 'for a customer on the phone', and the customer sees it. For a device of no
    customer the viewers become [`user:<operator>`] only: the registrant, who called, can neither read, note nor
    cancel the ticket, nor learn its number; opening one themselves is refused with only 'one exists'."""
    token, claims = token_for(settings, customer_number=None)
    device = await provision_device(amqp_url, ticketing, customer_number=None, contract_number=None,
                                    registered_by=claims.user_id, location=HANSAALLEE)
    number = await opened(portal, operator(settings), device)
    refused = await outcome_of(portal, "ticketing.open_ticket", ticket(device), token)
    assert refused == ("open_ticket_exists", {"ticket_number": number, "updatable": "true"}), refused
    code, _ = await outcome_of(portal, "ticketing.get_ticket", {"ticket_number": number}, token)
    assert code == "ok"


async def test_a_ticket_needs_somewhere_for_the_technician_to_go(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """A given service address must have street, postal code and city ('a technician needs ...'); a device whose
    location has none of them gets a ticket with an empty service address all the same."""
    token, device = await customer_device(amqp_url, ticketing, settings, location={})
    code, fields = await outcome_of(portal, "ticketing.open_ticket", ticket(device), token)
    assert code != "ok", fields
