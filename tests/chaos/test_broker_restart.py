"""RabbitMQ restarted during a stream: the service processes reconnect by themselves and the stream completes.

What it does: on a RabbitMQ node of its own (never the shared one), it runs ticketing and the notifier as processes
and a stream of ticket openings and of the operator's delivery listings (ten of each, three gateways re-sending
what got no reply with the same `message_id`), with registration's device renames published between them. Once a
third of the commands are answered it stops the node (`rabbitmqctl stop`) and starts it again on the same port and
data. Nothing restarts the services. Then it counts: each ticket stored once, each device renamed in ticketing's
read model, each receipt mailed once per contact and subject, no outbox left, and both processes still the ones
started at the beginning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from deploy.local.deps import LocalRabbitMQ
from services.runtime.settings import Settings
from tests.chaos.conftest import all_alive, start_healthy, world_of
from tests.chaos.flows import notifier_flow
from tests.support import Mailbox, private_rabbitmq

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def private_broker() -> Iterator[LocalRabbitMQ]:
    with private_rabbitmq() as node:
        yield node


async def test_services_reconnect_by_themselves_after_a_broker_restart_and_the_stream_completes(
        private_broker: LocalRabbitMQ, chaos_settings: Settings, mailbox: Mailbox) -> None:
    settings = chaos_settings.model_copy(update={"amqp_url": private_broker.url})
    async with world_of(settings, private_broker.url, mailbox) as world:
        await start_healthy(world, ("ticketing", "notifier"))

        async def restart_broker() -> None:
            await asyncio.to_thread(private_broker.stop)
            await asyncio.to_thread(private_broker.start)

        await notifier_flow(world, restart_broker)
        assert all_alive(world.processes)
