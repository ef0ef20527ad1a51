"""The topology of CATALOG §1: durable exchanges, a durable queue per command and per consumer,
each dead-lettering to `portal.dlx` into its own `<queue>.dlq`."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.common import FieldTable

from contracts.topology import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, dead_letter_queue
from services.runtime.settings import Settings
from services.runtime.topology import queue_arguments
from tests.builders import amqp_channel
from tests.runtime.sample_service import listener, sample
from tests.support import running

QUEUES = ["sample.add_note", "sample.health", "sample.on.accounts.session.revoked", "listener.on.sample.note.added"]


async def test_the_exchanges_are_durable_topics(settings: Settings, amqp_url: str) -> None:
    async with running(sample, settings):
        for name in (COMMANDS_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE):
            async with amqp_channel(amqp_url) as channel:
                await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            with pytest.raises(ChannelPreconditionFailed):  # it exists with other properties
                async with amqp_channel(amqp_url) as channel:
                    await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=False)


@pytest.mark.parametrize("queue", QUEUES)
async def test_every_queue_is_durable_and_dead_letters_into_its_own_dlq(
        settings: Settings, amqp_url: str, queue: str) -> None:
    async with running(sample, settings), running(listener, settings):
        pass
    arguments: FieldTable = queue_arguments(settings, queue)
    async with amqp_channel(amqp_url) as channel:
        await channel.declare_queue(queue, durable=True, arguments=arguments)  # same properties: accepted
        await channel.declare_queue(dead_letter_queue(queue), passive=True)
    with pytest.raises(ChannelPreconditionFailed):
        async with amqp_channel(amqp_url) as channel:
            await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": settings.queue_type})
    # A message rejected from the queue ends in its own DLQ, not in another consumer's.
    async with amqp_channel(amqp_url) as channel:
        declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue)
        taken = await eventually_get(declared)
        await taken.reject(requeue=False)
        dead = await eventually_get(await channel.declare_queue(dead_letter_queue(queue), passive=True))
        assert dead.body == b"x"
        for other in QUEUES:
            if other != queue:  # a dead letter reaches its own DLQ only
                stray = await channel.declare_queue(dead_letter_queue(other), passive=True)
                assert await stray.get(fail=False) is None


async def eventually_get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(100):
        if (message := await queue.get(fail=False)) is not None:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing arrived in {queue.name}")
