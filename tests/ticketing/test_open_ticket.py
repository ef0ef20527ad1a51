"""Opening a ticket: for a device the caller sees, at its location or the address given, numbered `<project>/<n>`,
once per command, and at most one open ticket per device, also when twenty are sent at the same moment."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.client import PortalClient, PortalError
from contracts.registration import DeviceProvisioned
from services.runtime.service import ServiceInstance
from services.runtime.tokens import Role
from services.ticketing.settings import TicketingSettings
from tests.builders import publish_event, random_id, token_for
from tests.readmodels import provision_device
from tests.support import EventTap, eventually, outcome
from tests.ticketing.flows import (
    CONTACT,
    HANSAALLEE,
    customer_device,
    es5462,
    move,
    opened,
    operator,
    parts,
    ticket,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

ELSEWHERE = {"name": "Lager", "street": "Am Wehrhahn 1", "postal_code": "40211", "city": "Düsseldorf",
             "country": "DE"}


async def refusal(portal: PortalClient, body: dict[str, Any], token: str, **options: Any) -> PortalError:
    with pytest.raises(PortalError) as refused:
        await portal.call("ticketing.open_ticket", body, token=token, **options)
    return refused.value


async def test_a_ticket_is_opened_to_be_scheduled_at_the_devices_location_and_announced(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    device = await es5462(amqp_url, ticketing)
    token, claims = token_for(settings, customer_number=device["customer_number"])
    async with EventTap(amqp_url, "ticketing.#") as tap:
        reply = await portal.call("ticketing.open_ticket", ticket(device, category="defective_consumable"),
                                  token=token, lang="de")
        event = await tap.next("ticketing.ticket.opened", lambda body: body["ticket_number"] == reply["ticket_number"])
    assert reply["status"] == "to_be_scheduled"
    project, nth = parts(reply["ticket_number"])
    assert project > settings.ticketing_first_number - 1 and nth == 1
    device_seen = {"device_id": device["device_id"], "serial_number": device["serial_number"],
                   "model": "ES5462 MFP", "friendly_name": "FinalTest1"}
    assert event["device"] == device_seen and event["customer_number"] == device["customer_number"]
    assert (event["contact"], event["language"], event["opened_by"]) == (CONTACT, "de", claims.user_id)
    assert (event["category"], event["description"]) == ("defective_consumable", "Papierstau in Fach 2")
    assert event["service_address"] == HANSAALLEE and event["address_permanent"] is False
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": reply["ticket_number"]}, token=token)
    assert (stored["status"], stored["updatable"], stored["device"]) == ("to_be_scheduled", True, device_seen)
    assert (stored["customer_number"], stored["contract_number"]) == (device["customer_number"], "K-1")
    assert stored["service_address"] == HANSAALLEE and stored["address_permanent"] is False
    assert [(entry["status"], entry["by"]) for entry in stored["history"]] == [("to_be_scheduled", "customer")]
    assert stored["history"][0]["at"] == stored["opened_at"] == event["opened_at"]
    assert (stored["notes"], stored["technician"], stored["eta"]) == ([], None, None)


@pytest.mark.parametrize("permanent", [False, True])
async def test_a_service_address_given_is_where_the_technician_goes_and_a_permanent_one_is_announced_as_such(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance,
        permanent: bool) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    async with EventTap(amqp_url, "ticketing.ticket.opened") as tap:
        number = await opened(portal, token, device, service_address={"address": ELSEWHERE, "permanent": permanent})
        event = await tap.next("ticketing.ticket.opened", lambda body: body["ticket_number"] == number)
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    expected = {**ELSEWHERE, "building_location": None}
    assert (event["service_address"], event["address_permanent"]) == (expected, permanent)
    assert (stored["service_address"], stored["address_permanent"]) == (expected, permanent)


async def test_a_service_address_may_be_sent_flat_beside_permanent(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, token, device, service_address={**ELSEWHERE, "permanent": True})
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert stored["service_address"]["street"] == "Am Wehrhahn 1" and stored["address_permanent"] is True


@pytest.mark.parametrize(("change", "field"), [
    ({"description": ""}, "description"),
    ({"description": "x" * 4001}, "description"),
    ({"contact": {**CONTACT, "email": "t.lienert"}}, "contact.email"),
    ({"contact": {**CONTACT, "email": "Thomas <t.lienert@example.com>"}}, "contact.email"),
    ({"contact": {**CONTACT, "phone": "call me"}}, "contact.phone"),
    ({"contact": {"email": CONTACT["email"]}}, "contact.name"),
    ({"category": "toner"}, "category"),
    ({"service_address": {"address": {**ELSEWHERE, "street": " "}}}, "service_address"),
    ({"service_address": {"address": {**ELSEWHERE, "postal_code": None}}}, "service_address"),
    ({"service_address": {"city": "Düsseldorf", "permanent": True}}, "service_address"),
    ({"device_id": ""}, "device_id"),
    ({"priority": "high"}, "priority"),
])
async def test_a_request_outside_the_contract_is_refused_naming_the_field(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance,
        change: dict[str, Any], field: str) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    refused = await refusal(portal, {**ticket(device), **change}, token)
    assert refused.code == "validation_failed"
    assert field in refused.fields, refused.fields
    assert await ticketing.db.tickets.find_one({"device_id": device["device_id"]}) is None


async def test_a_description_of_4000_characters_and_a_contact_without_phone_are_fine(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    contact = {"name": "Claudia Zimmermann", "email": "c.zimmermann@example.com"}
    number = await opened(portal, token, device, description="x" * 4000, contact=contact)
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert stored["contact"] == {**contact, "phone": None} and len(stored["description"]) == 4000


async def test_a_device_the_caller_does_not_see_is_not_found_and_nothing_is_opened(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, mine = await customer_device(amqp_url, ticketing, settings)
    theirs = await es5462(amqp_url, ticketing)
    deregistered = await es5462(amqp_url, ticketing, mine["customer_number"], visible=False)
    contract_only, _ = token_for(settings, customer_number=mine["customer_number"], contract_number="K-2")
    for caller, device in ((token, theirs), (token, {"device_id": "no-such-device"}), (token, deregistered),
                           (contract_only, mine)):
        refused = await refusal(portal, ticket(device), caller)
        assert (refused.code, refused.fields) == ("not_found", {"device_id": "not_found"})
    for device in (theirs, deregistered, mine):
        assert await ticketing.db.tickets.find_one({"device_id": device["device_id"]}) is None
        assert await ticketing.db.open_tickets.find_one({"_id": device["device_id"], "ticket_id": {"$type": "string"}
                                                         }) is None
    assert await outcome(portal, "ticketing.open_ticket", ticket(mine)) == "unauthenticated"


async def test_twenty_tickets_sent_at_once_for_one_device_open_one_and_name_it_to_the_other_nineteen(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    colleague, _ = token_for(settings, customer_number=device["customer_number"])

    async def attempt(index: int) -> tuple[str, dict[str, str]]:
        try:
            reply = await portal.call("ticketing.open_ticket", ticket(device, description=f"Stau {index}"),
                                      token=token if index % 2 else colleague)
        except PortalError as error:
            return error.code, error.fields
        return "ok", {"ticket_number": reply["ticket_number"]}

    results = await asyncio.gather(*(attempt(index) for index in range(20)))
    winners = [fields["ticket_number"] for code, fields in results if code == "ok"]
    assert len(winners) == 1, results
    refusals = [(code, fields) for code, fields in results if code != "ok"]
    assert refusals == [("open_ticket_exists", {"ticket_number": winners[0], "updatable": "true"})] * 19
    assert parts(winners[0])[1] == 1
    stored = [document["ticket_number"] async for document in ticketing.db.tickets.find(
        {"device_id": device["device_id"]})]
    assert stored == winners
    guard = await ticketing.db.open_tickets.find_one({"_id": device["device_id"]})
    assert guard is not None and guard["count"] == 1


async def test_a_second_ticket_is_refused_naming_the_open_one_until_it_is_resolved_then_the_device_gets_its_2nd(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    first = await opened(portal, token, device)
    refused = await refusal(portal, ticket(device), token)
    assert (refused.code, refused.fields) == ("open_ticket_exists", {"ticket_number": first, "updatable": "true"})
    for status in ("dispatched", "en_route", "on_site"):
        await move(portal, settings, first, status)
        refused = await refusal(portal, ticket(device), token)
        assert (refused.code, refused.fields) == ("open_ticket_exists", {"ticket_number": first,
                                                                         "updatable": "false"})
    await move(portal, settings, first, "resolved")
    second = await opened(portal, token, device)
    assert parts(second)[1] == 2 and parts(second)[0] > parts(first)[0]
    await move(portal, settings, first, "closed")  # closing the first is administrative: the second stays open
    refused = await refusal(portal, ticket(device), token)
    assert refused.fields == {"ticket_number": second, "updatable": "true"}


async def test_after_a_ticket_is_cancelled_the_device_gets_its_next_ticket(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    first = await opened(portal, token, device)
    await portal.call("ticketing.cancel_ticket", {"ticket_number": first, "reason": "Stau selbst behoben"},
                      token=token)
    second = await opened(portal, token, device)
    assert parts(second)[1] == 2 and parts(second)[0] > parts(first)[0]
    await move(portal, settings, second, "cancelled")
    assert parts(await opened(portal, token, device))[1] == 3


async def test_tickets_of_different_devices_are_numbered_apart_and_each_device_counts_its_own(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, first = await customer_device(amqp_url, ticketing, settings)
    second = await es5462(amqp_url, ticketing, first["customer_number"])
    numbers = [await opened(portal, token, device) for device in (first, second)]
    assert [parts(number)[1] for number in numbers] == [1, 1]
    assert parts(numbers[1])[0] > parts(numbers[0])[0]


async def test_the_same_ticket_sent_twice_with_one_message_id_is_opened_and_announced_once(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    message_id = random_id("open-")
    async with EventTap(amqp_url, "ticketing.ticket.opened") as tap:
        first = await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id)
        again = await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id)
        await tap.next("ticketing.ticket.opened", lambda body: body["ticket_number"] == first["ticket_number"])
        await asyncio.sleep(0.5)
    assert again == first
    assert len(tap.named("ticketing.ticket.opened")) == 1
    assert len(await ticketing.db.tickets.find({"device_id": device["device_id"]}).to_list()) == 1


async def test_an_opening_command_run_again_after_a_crash_finds_its_ticket(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """The runtime's stored reply is gone (the worker died before storing it): the ticket's `_id`, derived from the
    command, still makes the second run answer with the first ticket rather than refuse its own."""
    token, device = await customer_device(amqp_url, ticketing, settings)
    message_id = random_id("open-")
    first = await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id)
    await ticketing.db.message_claims.delete_many({})
    again = await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id)
    assert again == first
    assert len(await ticketing.db.tickets.find({"device_id": device["device_id"]}).to_list()) == 1


async def test_an_operator_opens_a_ticket_for_a_customer_on_the_phone_and_the_customer_sees_it(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    number = await opened(portal, operator(settings), device)
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token)
    assert [(entry["status"], entry["by"]) for entry in stored["history"]] == [("to_be_scheduled", "operator")]
    refused = await refusal(portal, ticket(device), token)
    assert refused.fields == {"ticket_number": number, "updatable": "true"}


async def test_a_dealer_is_told_of_the_open_ticket_they_opened_themselves(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    dealer, claims = token_for(settings, Role.DEALER, customer_number=None)
    device = await provision_device(amqp_url, ticketing, customer_number=None, contract_number=None,
                                    registered_by=claims.user_id, location=HANSAALLEE)
    number = await opened(portal, dealer, device)
    stored = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=dealer)
    assert (stored["customer_number"], stored["contract_number"]) == (None, None)
    refused = await refusal(portal, ticket(device), dealer)
    assert refused.fields == {"ticket_number": number, "updatable": "true"}


async def test_a_deregistration_overtaken_by_an_older_copy_of_the_device_keeps_it_out_of_reach(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """The read model keeps the highest version: the deregistration (v2) stays although the provisioning (v1)
    arrives after it, again, so the device is `not_found` and no ticket opens."""
    token, claims = token_for(settings)
    device = await es5462(amqp_url, ticketing, claims.customer_number, version=2, visible=False)
    older = {**device, "version": 1, "visible": True}
    copies = [await publish_event(amqp_url, DeviceProvisioned.routing_key, older) for _ in range(2)]

    async def handled() -> bool:
        done = [await ticketing.db.message_claims.find_one({"_id": {"$regex": f":{copy}$"}, "done": True})
                for copy in copies]
        return all(claim is not None for claim in done)
    await eventually(handled)
    stored = await ticketing.db.devices.find_one({"_id": device["device_id"]})
    assert stored is not None and stored["version"] == 2
    refused = await refusal(portal, ticket(device), token)
    assert (refused.code, refused.fields) == ("not_found", {"device_id": "not_found"})
    assert await ticketing.db.tickets.find_one({"device_id": device["device_id"]}) is None
