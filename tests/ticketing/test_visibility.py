"""Who sees and changes which ticket: a customer only their own (never another customer's, not even by number), a
contract sign-in only its contract's, whoever opened one for a device of another customer their own; operators all,
and only operators run the back office. Finding tickets: by device, status and part of the number, newest first;
the back office's queue oldest first."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.client import PortalClient, PortalError
from services.runtime.service import ServiceInstance
from services.runtime.tokens import Role
from services.ticketing.settings import TicketingSettings
from tests.builders import random_id, token_for
from tests.readmodels import provision_device
from tests.support import outcome
from tests.ticketing.flows import HANSAALLEE, customer_device, es5462, move, opened, operator, ticket

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def numbers(portal: PortalClient, token: str, command: str = "ticketing.list_tickets",
                  **filters: Any) -> list[str]:
    reply = await portal.call(command, {"page_size": 200, **filters}, token=token)
    return [item["ticket_number"] for item in reply["items"]]


async def test_a_customer_never_sees_or_changes_another_customers_tickets(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    me, mine = await customer_device(amqp_url, ticketing, settings)
    them, theirs = await customer_device(amqp_url, ticketing, settings)
    my_ticket = await opened(portal, me, mine)
    their_ticket = await opened(portal, them, theirs, description="X-SECRET")
    for command, body in (("ticketing.get_ticket", {}), ("ticketing.add_note", {"text": "mine now"}),
                          ("ticketing.cancel_ticket", {"reason": "mine now"})):
        with pytest.raises(PortalError) as refused:
            await portal.call(command, {"ticket_number": their_ticket, **body}, token=me)
        assert (refused.value.code, refused.value.fields) == ("not_found", {"ticket_number": "not_found"})
    assert await outcome(portal, "ticketing.open_ticket", ticket(theirs), token=me) == "not_found"
    assert await numbers(portal, me) == [my_ticket]
    for search in ({"ticket_number": their_ticket}, {"device_id": theirs["device_id"]}, {"status": "to_be_scheduled"}):
        listed = await portal.call("ticketing.list_tickets", search, token=me)
        assert their_ticket not in str(listed) and "X-SECRET" not in str(listed)
    untouched = await portal.call("ticketing.get_ticket", {"ticket_number": their_ticket}, token=them)
    assert (untouched["status"], untouched["notes"], len(untouched["history"])) == ("to_be_scheduled", [], 1)
    nobody, _ = token_for(settings, customer_number=None)
    assert await numbers(portal, nobody) == []
    assert await outcome(portal, "ticketing.get_ticket", {"ticket_number": my_ticket}, token=nobody) == "not_found"


async def test_a_contract_sign_in_sees_and_opens_only_its_contracts_tickets(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    customer = random_id("C-")
    k1 = await es5462(amqp_url, ticketing, customer, contract_number="K-1")
    k2 = await es5462(amqp_url, ticketing, customer, contract_number="K-2")
    whole, _ = token_for(settings, customer_number=customer)
    contract, _ = token_for(settings, customer_number=customer, contract_number="K-1")
    on_k1 = await opened(portal, whole, k1)
    on_k2 = await opened(portal, whole, k2)
    assert await numbers(portal, contract) == [on_k1]
    assert await outcome(portal, "ticketing.get_ticket", {"ticket_number": on_k2}, token=contract) == "not_found"
    assert await outcome(portal, "ticketing.open_ticket", ticket(k2), token=contract) == "not_found"
    assert await outcome(portal, "ticketing.add_note", {"ticket_number": on_k1, "text": "vom Vertrag"},
                         token=contract) == "ok"
    await move(portal, settings, on_k1, "cancelled")
    own = await opened(portal, contract, k1)
    assert await numbers(portal, contract) == [own, on_k1]
    assert await numbers(portal, whole) == [own, on_k2, on_k1]
    other_contract, _ = token_for(settings, customer_number=customer, contract_number="K-9")
    assert await numbers(portal, other_contract) == []


async def test_whoever_opened_a_ticket_for_a_device_of_another_customer_sees_it_and_no_other_ticket_of_it(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    claimant, claims = token_for(settings, customer_number=random_id("C-"))
    dealer, dealer_claims = token_for(settings, Role.DEALER, customer_number=random_id("C-"))
    device = await es5462(amqp_url, ticketing, claimants=[claims.user_id, dealer_claims.user_id])
    member, _ = token_for(settings, customer_number=device["customer_number"])
    by_claimant = await opened(portal, claimant, device)
    for token in (claimant, member):
        assert (await portal.call("ticketing.get_ticket", {"ticket_number": by_claimant}, token=token))[
            "customer_number"] == device["customer_number"]
    assert await numbers(portal, claimant) == [by_claimant]
    assert await numbers(portal, dealer) == []
    assert await outcome(portal, "ticketing.get_ticket", {"ticket_number": by_claimant}, token=dealer) == "not_found"
    await move(portal, settings, by_claimant, "cancelled")
    by_member = await opened(portal, member, device, description="X-INTERNAL")
    assert await outcome(portal, "ticketing.get_ticket", {"ticket_number": by_member}, token=claimant) == "not_found"
    assert await numbers(portal, claimant, device_id=device["device_id"]) == [by_claimant]
    await move(portal, settings, by_member, "cancelled")
    by_dealer = await opened(portal, dealer, device)
    assert await numbers(portal, dealer) == [by_dealer]
    assert await outcome(portal, "ticketing.cancel_ticket", {"ticket_number": by_dealer, "reason": "doppelt"},
                         token=dealer) == "ok"


async def test_the_back_office_is_refused_to_customers_and_dealers(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, device = await customer_device(amqp_url, ticketing, settings)
    dealer, _ = token_for(settings, Role.DEALER, customer_number=device["customer_number"])
    contract, _ = token_for(settings, customer_number=device["customer_number"], contract_number="K-1")
    number = await opened(portal, token, device)
    for caller in (token, dealer, contract):
        for command, body in (("ticketing.operator.set_status", {"ticket_number": number, "status": "dispatched"}),
                              ("ticketing.operator.list_tickets", {})):
            assert await outcome(portal, command, body, token=caller) == "forbidden"
    for command, body in (("ticketing.operator.set_status", {"ticket_number": number, "status": "dispatched"}),
                          ("ticketing.get_ticket", {"ticket_number": number}), ("ticketing.list_tickets", {})):
        assert await outcome(portal, command, body) == "unauthenticated"
    assert (await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=token))["status"] \
        == "to_be_scheduled"


async def test_list_tickets_filters_by_device_status_and_part_of_the_number_newest_first(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, first = await customer_device(amqp_url, ticketing, settings)
    second = await es5462(amqp_url, ticketing, first["customer_number"])
    made = []
    for device in (first, second, first):
        made.append(await opened(portal, token, device))
        if device is first and len(made) == 1:
            await move(portal, settings, made[0], "dispatched", "en_route", "on_site", "resolved")
    assert await numbers(portal, token) == made[::-1]
    assert await numbers(portal, token, device_id=first["device_id"]) == [made[2], made[0]]
    assert await numbers(portal, token, status="resolved") == [made[0]]
    assert await numbers(portal, token, status="to_be_scheduled", device_id=first["device_id"]) == [made[2]]
    assert await numbers(portal, token, ticket_number=made[1]) == [made[1]]
    assert await numbers(portal, token, ticket_number=made[1].split("/")[0][-4:]) == [made[1]]  # a part will do
    assert await numbers(portal, token, ticket_number=".*") == []  # searched for as text, not as a pattern
    page = await portal.call("ticketing.list_tickets", {"page": 2, "page_size": 2}, token=token)
    assert ([item["ticket_number"] for item in page["items"]], page["total"]) == ([made[0]], 3)
    item = page["items"][0]
    assert (item["device"]["serial_number"], item["service_address"], item["updatable"]) == (
        first["serial_number"], HANSAALLEE, False)
    assert await outcome(portal, "ticketing.list_tickets", {"status": "open"}, token=token) == "validation_failed"


async def test_list_tickets_of_some_devices_lists_only_the_callers_tickets_of_those(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    me, first = await customer_device(amqp_url, ticketing, settings)
    second = await es5462(amqp_url, ticketing, first["customer_number"])
    them, theirs = await customer_device(amqp_url, ticketing, settings)
    mine = [await opened(portal, me, first), await opened(portal, me, second)]
    their_ticket = await opened(portal, them, theirs)
    asked = [theirs["device_id"], second["device_id"]]
    assert await numbers(portal, me, device_ids=asked) == [mine[1]]
    assert await numbers(portal, me, device_ids=[first["device_id"], second["device_id"]]) == mine[::-1]
    assert await numbers(portal, me, device_ids=asked, device_id=first["device_id"]) == []
    assert await numbers(portal, me, device_ids=[]) == []
    assert await numbers(portal, them, device_ids=asked) == [their_ticket]
    assert await outcome(portal, "ticketing.list_tickets", {"device_ids": ["x" * 65]}, token=me) \
        == "validation_failed"


async def test_the_back_office_queue_lists_tickets_to_schedule_oldest_first_with_device_and_address(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    made = []
    for _ in range(3):
        token, device = await customer_device(amqp_url, ticketing, settings)
        made.append((await opened(portal, token, device), device))
    await move(portal, settings, made[1][0], "dispatched")
    ours = {number for number, _ in made}
    queue = await portal.call("ticketing.operator.list_tickets", {"page_size": 200}, token=operator(settings))
    waiting = [item for item in queue["items"] if item["ticket_number"] in ours]
    assert [item["ticket_number"] for item in waiting] == [made[0][0], made[2][0]]
    assert all(item["status"] == "to_be_scheduled" for item in queue["items"])
    assert (waiting[0]["device"]["serial_number"], waiting[0]["service_address"]["street"],
            waiting[0]["customer_number"]) == (made[0][1]["serial_number"], "Hansaallee 187",
                                               made[0][1]["customer_number"])
    dispatched = await numbers(portal, operator(settings), "ticketing.operator.list_tickets", status="dispatched")
    assert made[1][0] in dispatched and made[0][0] not in dispatched
    everything = await numbers(portal, operator(settings), "ticketing.operator.list_tickets", status=None)
    assert [number for number in everything if number in ours] == [number for number, _ in made]
    # The back office finds any ticket by its number, and in the customer's own list view.
    assert await numbers(portal, operator(settings), ticket_number=made[2][0]) == [made[2][0]]
    assert (await portal.call("ticketing.get_ticket", {"ticket_number": made[2][0]}, token=operator(settings)))[
        "ticket_number"] == made[2][0]


async def test_a_device_of_no_customer_registered_by_the_caller_gets_tickets_only_its_registrant_sees(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, claims = token_for(settings, customer_number=None)
    device = await provision_device(amqp_url, ticketing, customer_number=None, contract_number=None,
                                    registered_by=claims.user_id, location=HANSAALLEE)
    number = await opened(portal, token, device)
    assert await numbers(portal, token) == [number]
    stranger, _ = token_for(settings, customer_number=None)
    assert await outcome(portal, "ticketing.get_ticket", {"ticket_number": number}, token=stranger) == "not_found"
    assert await numbers(portal, stranger) == []


async def test_a_contract_customer_provisioned_later_does_not_change_who_sees_a_ticket(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """A ticket's viewers are fixed when it is opened: the device moving to another contract later does not let
    the new contract's sign-in see the old ticket."""
    customer = random_id("C-")
    device = await es5462(amqp_url, ticketing, customer, contract_number="K-1")
    whole, _ = token_for(settings, customer_number=customer)
    number = await opened(portal, whole, device)
    await provision_device(amqp_url, ticketing, device_id=device["device_id"], serial_number=device["serial_number"],
                           customer_number=customer, contract_number="K-2", location=HANSAALLEE, version=2)
    k2, _ = token_for(settings, customer_number=customer, contract_number="K-2")
    assert await outcome(portal, "ticketing.get_ticket", {"ticket_number": number}, token=k2) == "not_found"
    k1, _ = token_for(settings, customer_number=customer, contract_number="K-1")
    assert await numbers(portal, k1) == [number]
