"""kill -9 of each service in the middle of a stream of its commands and events, then a restart.

What each case does: it starts the service and the notifier as processes, prepares a customer's world, then runs a
stream of ten commands (three gateways at once, each re-sending a command that got no reply with the same
`message_id`) with the events the service consumes published between them; once a third of the commands are
answered it SIGKILLs the service and starts it again a second later. Then it counts: every command answered `ok`
took effect once (users, devices, readings and the reminder, orders, tickets stored once), every event was handled
once (the read models and the installed base hold each), every due mail arrived once per recipient and subject.

The notifier's promise (services/notifier/README.md, "Delivery"): each (event, recipient) is one delivery document,
inserted before the first attempt and leased to whoever sends it; a replica that died while sending frees the mail
when its lease runs out, and the retry loop sends it. So a notifier killed after the SMTP server accepted a mail but
before the delivery was marked `sent` sends that mail a second time: at-least-once for the mails in flight at the
kill, exactly once for every other. The notifier case asserts exactly that: a second copy only of a mail whose
delivery was still `retrying` when the process died, never a third, and every mail at least once.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from contracts.client import PortalClient
from services.accounts.app import service as accounts_service
from services.runtime.settings import Settings
from tests.builders import sign_up
from tests.chaos.conftest import start_healthy
from tests.chaos.flows import FLOWS, Fault, World
from tests.support import running

pytestmark = pytest.mark.timeout(240)


def kill_and_restart(world: World, victim: str) -> Fault:
    async def fault() -> None:
        world.processes.kill(victim)
        if victim == "notifier":
            async for delivery in world.db("notifier").deliveries.find({"status": "retrying"}):
                world.may_repeat.add((delivery["recipient"], delivery["subject"]))
        await asyncio.sleep(1.0)
        world.processes.start(victim)
    return fault


@pytest.mark.parametrize("victim", list(FLOWS))
async def test_a_service_killed_mid_stream_and_restarted_loses_nothing_and_doubles_nothing(
        victim: str, world: World) -> None:
    services, flow = FLOWS[victim]
    await start_healthy(world, services)
    await flow(world, kill_and_restart(world, victim))
    print(f"{victim} killed after {world.answered_at_fault} answers; mails in flight then: {len(world.may_repeat)}, "
          f"arrived twice: {world.mails_doubled}")


async def test_a_sign_up_whose_reply_a_kill_lost_is_answered_with_its_user_when_re_sent(
        settings: Settings, portal: PortalClient) -> None:
    """What the `accounts` case found: accounts killed after storing a new user but before storing the command's
    reply; the re-sent copy (same `message_id`) ran the handler again, which found the address taken by that very
    user and answered `email_taken`. Here the lost reply is its claim removed, as the kill leaves it after its lease.
    """
    request, message_id = sign_up(), uuid.uuid4().hex
    async with running(accounts_service, settings) as accounts:
        first = await portal.call("accounts.register", request, message_id=message_id)
        await accounts.db.message_claims.delete_many({})
        again = await portal.call("accounts.register", request, message_id=message_id)
        assert again == first
        assert await accounts.db.users.count_documents({"email_key": request["email"].lower()}) == 1
