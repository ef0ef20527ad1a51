"""Killed or stopped service processes lose nothing: outbox, unacked messages, graceful stop."""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from contracts.client import PortalClient
from services.runtime.mongo import mongo_client
from services.runtime.settings import Settings
from tests.builders import drain_queue, publish_event, random_id
from tests.runtime.sample_service import CRASH_AFTER_WRITE, NoteAdded, listener, sample
from tests.support import eventually, running, start_service_process, wait_healthy

SAMPLE = "tests.runtime.sample_service"


async def test_an_event_written_before_a_sigkill_is_still_published_and_handled_once(
        settings: Settings, portal: PortalClient) -> None:
    settings = settings.model_copy(update={"claim_lease_seconds": 1.0})
    note_id, message_id = random_id(), uuid.uuid4().hex
    async with running(listener, settings) as consumer:
        doomed = start_service_process(SAMPLE, settings, "sample", extra_env={CRASH_AFTER_WRITE: "1"})
        try:
            await wait_healthy(portal, "sample")
            with pytest.raises(TimeoutError):  # the process dies between its write and any publish
                await portal.call("sample.open_note", {"note_id": note_id, "text": "x"}, message_id=message_id,
                                  timeout=3)
            assert doomed.wait(10) == -signal.SIGKILL
        finally:
            doomed.kill()
        assert await consumer.db.seen.find_one({"_id": note_id}) is None

        async with running(sample, settings) as restarted:
            async def seen_once() -> bool:
                seen = await consumer.db.seen.find_one({"_id": note_id})
                return seen is not None and seen["times"] == 1
            await eventually(seen_once)
            # The redelivered command runs again once its claim's lease is over, and changes nothing twice.
            again = await portal.call("sample.open_note", {"note_id": note_id, "text": "x"}, message_id=message_id)
            assert again == {"note_id": note_id, "writes": 1}
            await asyncio.sleep(1.0)  # room for a second, wrong, event to arrive
            note = await restarted.db.notes.find_one({"_id": note_id})
            seen = await consumer.db.seen.find_one({"_id": note_id})
        assert note is not None and note["writes"] == 1 and "outbox" not in note
        assert seen is not None and seen["times"] == 1


async def test_an_event_whose_consumer_is_killed_midway_is_redelivered_and_handled(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    settings = settings.model_copy(update={"claim_lease_seconds": 1.0})  # the dead worker's claim runs out fast
    consumer = start_service_process(SAMPLE, settings, "listener")
    note_id = random_id()
    try:
        await wait_healthy(portal, "listener")
        await publish_event(amqp_url, NoteAdded.routing_key, NoteAdded(note_id=note_id, text="slow:3").model_dump())
        await asyncio.sleep(1.0)  # the handler is now sleeping, its message not yet acked
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
    finally:
        consumer.kill()
    async with running(listener, settings) as restarted:
        async def handled() -> bool:
            seen = await restarted.db.seen.find_one({"_id": note_id})
            return seen is not None and seen["times"] == 1
        await eventually(handled, timeout=20)


async def test_sigterm_finishes_in_flight_commands_then_exits_and_leaves_the_rest_queued(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    process = start_service_process(SAMPLE, settings, "sample")
    try:
        await wait_healthy(portal, "sample")
        in_flight = asyncio.create_task(portal.call("sample.slow", {"note_id": "a", "seconds": 1.5}))
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        waiting = asyncio.create_task(portal.call("sample.slow", {"note_id": "b", "seconds": 0}, timeout=30))
        assert await in_flight == {"writes": 1}
        assert await asyncio.to_thread(process.wait, 20) == 0
    finally:
        process.kill()
    async with mongo_client(settings.mongodb_url, 5000) as client:
        note = await client[settings.database_name("sample")].notes.find_one({"_id": "a"})
    assert note is not None and "outbox" not in note  # its event went out before the exit
    assert not waiting.done()
    async with running(sample, settings):
        assert await waiting == {"writes": 1}  # it waited in its durable queue, not lost
    assert await drain_queue(amqp_url, "sample.slow.dlq") == []
