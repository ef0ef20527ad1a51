"""Review findings on `ticketing.open_ticket` claimed with its write (`claim_in_write`), fixed: each test failed
before its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.accounts import SessionRevoked
from contracts.client import PortalClient, PortalError
from services.runtime.service import ServiceInstance
from services.ticketing.settings import TicketingSettings
from tests.builders import random_id, token_for
from tests.ticketing.flows import es5462, opened, parts, ticket

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def expire_claim(ticketing: ServiceInstance, message_id: str) -> None:
    """What the claim's expiry (`PORTAL_IDEMPOTENCY_DAYS`) does: its stored reply is gone."""
    removed = await ticketing.db.message_claims.delete_many({"_id": f"ticketing.open_ticket:{message_id}"})
    assert removed.deleted_count == 1


async def cancel(portal: PortalClient, token: str, number: str) -> None:
    assert await portal.call("ticketing.cancel_ticket", {"ticket_number": number, "reason": "erledigt"},
                             token=token) == {"status": "cancelled"}


async def test_a_command_re_run_after_its_claim_expired_is_answered_with_its_ticket_while_another_is_open(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """A command re-run after its claim expired (a dead letter replayed days later, a client re-sending) answers
    with its own ticket's number. Found: the ticket `t-<command>` was looked up only after the write collided, and
    the write is never tried while another ticket holds the guard: the re-run was refused `open_ticket_exists`
    naming the other ticket. Fixed: the ticket is read beside the device and the guard."""
    token, claims = token_for(settings)
    device = await es5462(amqp_url, ticketing, claims.customer_number)
    message_id = random_id("m-")
    first = (await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id))
    await cancel(portal, token, first["ticket_number"])
    await opened(portal, token, device, description="ein neuer Stau")
    await expire_claim(ticketing, message_id)

    again = await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id)

    assert again["ticket_number"] == first["ticket_number"]


async def test_a_command_re_run_after_its_claim_expired_leaves_the_devices_ticket_count_alone(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """README: "`n` counts the device's tickets (its guard's `count`), so a device's second ticket after a resolved
    or cancelled first one is `<new project>/2`". Found: the re-run of the first ticket's command (claim expired)
    found the guard free, spent a project number and took the guard for `t-<command>` (count + 1) before its ticket
    insert collided; the next ticket was numbered `/3`. Fixed: the re-run finds its ticket first and writes nothing."""
    token, claims = token_for(settings)
    device = await es5462(amqp_url, ticketing, claims.customer_number)
    message_id = random_id("m-")
    first = (await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id))
    assert parts(first["ticket_number"])[1] == 1
    await cancel(portal, token, first["ticket_number"])
    await expire_claim(ticketing, message_id)
    again = await portal.call("ticketing.open_ticket", ticket(device), token=token, message_id=message_id)
    assert again["ticket_number"] == first["ticket_number"]

    second = await opened(portal, token, device, description="ein neuer Stau")

    assert parts(second)[1] == 2, second


async def test_a_revoked_session_opening_a_ticket_changes_nothing(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    """ARCHITECTURE: "every service refuses that session from then on". The handler reads while the revocation is
    looked up. Found: it was asked only in `write_once`, after `next_seq` had taken a project number (and
    `refuse_if_held` may have freed a guard): a logged-out session moved the counter. Fixed: the handler asks
    (`ctx.ensure_signed_in`) before its first write."""
    token, claims = token_for(settings)
    device = await es5462(amqp_url, ticketing, claims.customer_number)
    now = datetime.now(UTC)
    await ticketing.revocations.add(SessionRevoked(session_id=claims.session_id, revoked_at=now,
                                                   until=now + timedelta(hours=2)))
    before = await counter(ticketing)

    for _ in range(3):
        with pytest.raises(PortalError) as refused:
            await portal.call("ticketing.open_ticket", ticket(device), token=token)
        assert refused.value.code == "unauthenticated"

    assert await ticketing.db.tickets.count_documents({"device_id": device["device_id"]}) == 0
    assert await counter(ticketing) == before


async def counter(ticketing: ServiceInstance) -> Any:
    document = await ticketing.db.counters.find_one({"_id": "tickets"})
    return (document or {}).get("seq")
