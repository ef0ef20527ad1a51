"""Events: decoded or dead-lettered at once, handled once, retried a bounded number of times."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from contracts.topology import EVENTS_EXCHANGE, dead_letter_queue, event_queue
from services.runtime.events import ATTEMPT_HEADER, retry_delay
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import amqp_channel, drain_queue, publish_event, random_id
from tests.runtime.sample_service import Flaky, NoteAdded, listener
from tests.support import eventually, running

NOTES_DLQ = dead_letter_queue(event_queue("listener", NoteAdded.routing_key))
FLAKY_DLQ = dead_letter_queue(event_queue("listener", Flaky.routing_key))


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(listener, settings) as instance:
        yield instance


async def times_seen(instance: ServiceInstance, note_id: str) -> int:
    seen = await instance.db.seen.find_one({"_id": note_id})
    return int(seen["times"]) if seen else 0


async def attempts(instance: ServiceInstance, key: str) -> int:
    found = await instance.db.attempts.find_one({"_id": key})
    return int(found["count"]) if found else 0


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"note_id": 1}', b"\xff"])
async def test_an_undecodable_event_goes_to_the_dead_letter_queue_at_once(
        service: ServiceInstance, amqp_url: str, body: bytes) -> None:
    message_id = await publish_event(amqp_url, NoteAdded.routing_key, body)
    dead: list[bytes] = []

    async def dead_lettered() -> bool:
        dead.extend(message.body for message in await drain_queue(amqp_url, NOTES_DLQ))
        return bool(dead)
    await eventually(dead_lettered)
    assert dead == [body]
    assert message_id


async def test_the_same_event_delivered_twice_is_handled_once(service: ServiceInstance, amqp_url: str) -> None:
    note_id = random_id()
    body = NoteAdded(note_id=note_id, text="x").model_dump(mode="json")
    message_id = await publish_event(amqp_url, NoteAdded.routing_key, body)
    await publish_event(amqp_url, NoteAdded.routing_key, body, message_id=message_id)
    other = random_id()
    await publish_event(amqp_url, NoteAdded.routing_key, NoteAdded(note_id=other, text="y").model_dump(mode="json"))

    async def both_handled() -> bool:
        return await times_seen(service, other) == 1 and await times_seen(service, note_id) >= 1
    await eventually(both_handled)
    # The duplicate was published before `other`, and one queue delivers in order.
    assert await times_seen(service, note_id) == 1


async def test_a_failing_handler_is_retried_until_it_succeeds(service: ServiceInstance, amqp_url: str) -> None:
    key = random_id()
    await publish_event(amqp_url, Flaky.routing_key, Flaky(key=key, failures=2).model_dump(mode="json"))

    async def succeeded() -> bool:
        return await attempts(service, key) == 3
    await eventually(succeeded)
    assert await drain_queue(amqp_url, FLAKY_DLQ) == []


async def test_a_handler_that_keeps_failing_is_dead_lettered_after_the_last_attempt(
        service: ServiceInstance, amqp_url: str, settings: Settings) -> None:
    key = random_id()
    message_id = await publish_event(amqp_url, Flaky.routing_key, Flaky(key=key, failures=100).model_dump(mode="json"))
    dead = []

    async def dead_lettered() -> bool:
        dead.extend(await drain_queue(amqp_url, FLAKY_DLQ))
        return bool(dead)
    await eventually(dead_lettered, timeout=20)
    assert [message.message_id for message in dead] == [message_id]
    assert await attempts(service, key) == settings.event_max_attempts


def test_the_retry_delay_doubles_from_the_base_and_is_capped() -> None:
    assert [retry_delay(attempt, 0.5) for attempt in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry_delay(20, 0.5) == 30.0


@pytest.mark.parametrize("attempt", ["abc", -3, {"n": 1}])
async def test_an_event_with_a_garbled_attempt_header_is_handled_as_a_first_attempt(
        service: ServiceInstance, amqp_url: str, attempt: Any) -> None:
    note_id = random_id()
    async with amqp_channel(amqp_url) as channel:
        exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await exchange.publish(aio_pika.Message(
            NoteAdded(note_id=note_id, text="x").model_dump_json().encode(), content_type="application/json",
            message_id=uuid.uuid4().hex, headers={ATTEMPT_HEADER: attempt}), routing_key=NoteAdded.routing_key)

    async def handled() -> bool:
        return await times_seen(service, note_id) == 1
    await eventually(handled)
