"""The guard that keeps one open ticket per device (`open_tickets`): how its condition behaves on the server at hand,
and how guards left behind by tickets that died half-way or whose release died are healed, or still count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import BulkWriteError

from contracts.client import PortalClient, PortalError
from services.runtime.commands import command_id, fingerprint
from services.runtime.mongo import stamp
from services.runtime.readmodels import record_viewers
from services.runtime.service import ServiceInstance
from services.ticketing.settings import TicketingSettings
from services.ticketing.store import TicketingStore
from tests.builders import random_id, token_for
from tests.readmodels import provision_device
from tests.ticketing.flows import HANSAALLEE, customer_device, es5462, move, opened, parts, ticket

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_guard_released_or_never_written_is_free_and_a_held_one_is_not(ticketing: ServiceInstance) -> None:
    """`ticket_id: None` and `count: None` match a field set to null and a missing one, on MongoDB and on nx-27017;
    taking a held guard, or one whose count moved since it was read, collides (DuplicateKeyError: the bulk write of
    `write_once` stops there) and changes nothing."""
    store = TicketingStore(ticketing.db)
    missing, null, held, new = (random_id("g-") for _ in range(4))
    await ticketing.db.open_tickets.insert_many([{"_id": missing, "count": 2}, {"_id": null, "ticket_id": None,
                                                                                 "count": 5},
                                                 {"_id": held, "ticket_id": "t-other", "count": 1}])
    assert sorted([guard["_id"] async for guard in ticketing.db.open_tickets.find(
        {"_id": {"$in": [missing, null, held]}, "ticket_id": None})]) == sorted([missing, null])

    async def take(key: str, ticket_id: str, seq: int, count: int | None) -> bool:
        try:
            await ticketing.db.open_tickets.bulk_write([store.take_guard(key, ticket_id, {"seq": seq}, count=count)])
        except BulkWriteError as error:
            assert error.details["writeErrors"][0]["code"] == 11000
            return False
        return True

    for key, count in ((missing, 2), (null, 5), (new, None)):
        assert await take(key, "t-mine", 7, count)
        taken = await ticketing.db.open_tickets.find_one({"_id": key})
        assert taken is not None
        assert (taken["ticket_id"], taken["seq"], taken["count"]) == ("t-mine", 7, (count or 0) + 1)
    assert not await take(held, "t-mine", 8, 1)
    assert await ticketing.db.open_tickets.find_one({"_id": held}) == {"_id": held, "ticket_id": "t-other",
                                                                        "count": 1}
    assert not await take(new, "t-third", 9, 1)  # held by t-mine now
    assert await store.release_guard(new, "t-third") is False
    assert await store.release_guard(new, "t-mine") is True
    assert not await take(new, "t-third", 9, 5)  # free, but its count is not the one read
    assert await take(new, "t-third", 9, 1)
    taken = await ticketing.db.open_tickets.find_one({"_id": new})
    assert taken is not None and (taken["ticket_id"], taken["count"]) == ("t-third", 2)


async def never_stored(ticketing: ServiceInstance, device: dict[str, object], *, age: timedelta, seq: int,
                       ticket_id: str | None = None, count: int = 1) -> str:
    """A guard taken by a ticket whose worker died before storing it; the ticket's id."""
    ticket_id = ticket_id or f"t-{random_id()}"
    await ticketing.db.open_tickets.insert_one({
        "_id": device["device_id"], "ticket_id": ticket_id, "seq": seq, "count": count,
        "at": stamp(datetime.now(UTC) - age), "contract_key": None,
        "viewers": record_viewers(device.get("customer_number"), random_id("u"))})
    return ticket_id


async def test_a_guard_of_a_ticket_never_stored_blocks_within_the_grace_period_and_is_freed_after_it(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, young = await customer_device(amqp_url, ticketing, settings)
    old = await es5462(amqp_url, ticketing, young["customer_number"])
    grace = timedelta(seconds=settings.ticketing_guard_grace_seconds)
    await never_stored(ticketing, young, age=grace - timedelta(seconds=10), seq=4200001)
    await never_stored(ticketing, old, age=grace + timedelta(seconds=10), seq=4200002)
    with pytest.raises(PortalError) as refused:
        await opened(portal, token, young)
    assert (refused.value.code, refused.value.fields) == ("open_ticket_exists", {"ticket_number": "4200001/1",
                                                                                 "updatable": "true"})
    number = await opened(portal, token, old)
    assert parts(number)[1] == 2 and parts(number)[0] != 4200002


async def test_a_guard_whose_ticket_is_over_but_was_never_released_is_freed_by_the_next_ticket(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    for over in ("resolved", "closed", "cancelled"):
        first = await opened(portal, token, device)
        await move(portal, settings, first, *({"cancelled": ("cancelled",)}.get(over) or (
            "dispatched", "en_route", "on_site", "resolved", *(("closed",) if over == "closed" else ()))))
        stored = await ticketing.db.tickets.find_one({"ticket_number": first})
        assert stored is not None
        # The release after the status write died: the guard still names the ticket.
        await ticketing.db.open_tickets.update_one({"_id": device["device_id"]}, {"$set": {"ticket_id": stored["_id"]}})
        second = await opened(portal, token, device)
        assert parts(second)[1] == parts(first)[1] + 1
        await move(portal, settings, second, "cancelled")


async def test_an_opening_that_died_after_taking_the_guard_is_numbered_from_it_when_run_again(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, claims = token_for(settings)
    device = await es5462(amqp_url, ticketing, claims.customer_number)
    body, message_id = ticket(device), random_id("open-")
    ticket_id = f"t-{command_id('ticketing.open_ticket', message_id, fingerprint(claims, body))}"
    await never_stored(ticketing, device, age=timedelta(seconds=5), seq=4300001, count=3, ticket_id=ticket_id)
    reply = await portal.call("ticketing.open_ticket", body, token=token, message_id=message_id)
    assert reply["ticket_number"] == "4300001/3"
    stored = await ticketing.db.tickets.find({"device_id": device["device_id"]}).to_list()
    assert [(document["_id"], document["ticket_number"]) for document in stored] == [(ticket_id, "4300001/3")]
    guard = await ticketing.db.open_tickets.find_one({"_id": device["device_id"]})
    assert guard is not None and (guard["ticket_id"], guard["count"]) == (ticket_id, 3)


async def test_whoever_may_not_see_the_open_ticket_is_told_only_that_one_exists(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """A device that moved to another customer while its ticket was open, a claimant outside the customer, a guard of
    a ticket not stored yet: the number and the ticket stay with those who may see them."""
    old_token, device = await customer_device(amqp_url, ticketing, settings)
    claimant, claims = token_for(settings, customer_number=random_id("C-"))
    await opened(portal, old_token, device)
    new_customer = random_id("C-")
    await provision_device(amqp_url, ticketing, device_id=device["device_id"], serial_number=device["serial_number"],
                           customer_number=new_customer, location=HANSAALLEE, version=2)
    new_token, _ = token_for(settings, customer_number=new_customer)
    other = await es5462(amqp_url, ticketing, new_customer)
    await never_stored(ticketing, other, age=timedelta(seconds=1), seq=4400001)  # opened by another user of it
    await provision_device(amqp_url, ticketing, device_id=other["device_id"], serial_number=other["serial_number"],
                           customer_number=new_customer, claimants=[claims.user_id], location=HANSAALLEE, version=2)
    for caller, target in ((new_token, device), (claimant, other)):
        with pytest.raises(PortalError) as refused:
            await opened(portal, caller, target)
        assert (refused.value.code, refused.value.fields) == ("open_ticket_exists", {
            "device_id": "open_ticket_exists", "updatable": "false"})
    with pytest.raises(PortalError) as refused:
        await opened(portal, new_token, other)
    assert refused.value.fields == {"ticket_number": "4400001/1", "updatable": "true"}
