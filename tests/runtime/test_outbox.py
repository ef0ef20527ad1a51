"""The outbox relay: nothing sent is lost, nothing unsent is cleared, leftovers go out unprompted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from contracts.client import PortalClient
from services.runtime.metrics import Metrics
from services.runtime.mongo import Database, mongo_client
from services.runtime.outbox import OutboxRelay, with_events
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.topology import EVENTS
from tests.builders import token_for
from tests.runtime.sample_service import NoteAdded, listener, sample
from tests.support import EventTap, eventually, outcome, running


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    async with mongo_client(settings.mongodb_url, 5000) as client:
        yield client[settings.database_name("sample")]


class RecordingBroker:
    """Stands in for the broker in relay unit tests: records, fails or writes meanwhile on demand."""

    def __init__(self, *, fail: bool = False, during_publish: Any = None) -> None:
        self.fail, self.during_publish = fail, during_publish
        self.sent: list[str] = []

    async def publish(self, body: Any, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append(options["message_id"])
        if self.during_publish is not None:
            action, self.during_publish = self.during_publish, None
            await action()


async def write_note(db: Database, note_id: str) -> None:
    await db.notes.update_one({"_id": note_id}, with_events({"$set": {"text": "x"}},
                                                            [NoteAdded(note_id=note_id, text="x")]), upsert=True)


def relay_with(broker: RecordingBroker, db: Database) -> OutboxRelay:
    return OutboxRelay(broker, EVENTS, db, ["notes"], poll_seconds=1)  # type: ignore[arg-type]


async def pending(db: Database, note_id: str) -> int:
    note = await db.notes.find_one({"_id": note_id})
    return len((note or {}).get("outbox") or {})


async def test_when_publishing_fails_the_entries_stay(db: Database) -> None:
    await write_note(db, "n1")
    with pytest.raises(ConnectionError):
        await relay_with(RecordingBroker(fail=True), db).drain()
    assert await pending(db, "n1") == 1


async def test_an_entry_written_while_the_relay_publishes_is_not_cleared_unsent(db: Database) -> None:
    await write_note(db, "n2")
    broker = RecordingBroker(during_publish=lambda: write_note(db, "n2"))
    relay = relay_with(broker, db)
    assert await relay.drain() == 1
    assert await pending(db, "n2") == 1
    assert await relay.drain() == 1
    assert await pending(db, "n2") == 0
    assert len(set(broker.sent)) == 2


async def test_entries_left_over_or_written_without_a_wake_are_published(settings: Settings, db: Database) -> None:
    await write_note(db, "left-over")
    async with running(listener, settings) as consumer, running(sample, settings):
        async def seen(note_id: str) -> bool:
            return await consumer.db.seen.find_one({"_id": note_id}) is not None

        await eventually(lambda: seen("left-over"), timeout=5)
        await write_note(db, "unannounced")  # no command, so nobody wakes the relay: the poll finds it
        await eventually(lambda: seen("unannounced"), timeout=5)


async def test_after_its_first_drain_the_relay_finds_entries_by_their_pending_flag_and_clears_it(
        db: Database) -> None:
    await write_note(db, "flagged")
    relay = relay_with(RecordingBroker(), db)
    assert await relay.drain() == 1
    note = await db.notes.find_one({"_id": "flagged"})
    assert note is not None and "outbox_pending" not in note and "outbox" not in note
    await write_note(db, "flagged")
    assert (await db.notes.find_one({"_id": "flagged"}) or {}).get("outbox_pending") == 1
    assert await relay.drain() == 1


async def test_entries_written_before_the_pending_flag_existed_are_published_by_the_first_drain(
        db: Database) -> None:
    await write_note(db, "old")
    await db.notes.update_one({"_id": "old"}, {"$unset": {"outbox_pending": ""}})  # as written by an older version
    broker = RecordingBroker()
    relay = relay_with(broker, db)
    assert await relay.drain() == 1
    assert await pending(db, "old") == 0
    await write_note(db, "old")
    await db.notes.update_one({"_id": "old"}, {"$unset": {"outbox_pending": ""}})
    assert await relay.drain() == 0, "later drains look only at flagged documents"


def counting_wakes(instance: ServiceInstance) -> list[set[str] | None]:
    """Each wake of the instance's relay from now on: the collections it asked for, or None for all."""
    wakes: list[set[str] | None] = []
    wake = instance.relay.wake

    def counted(collections: Iterable[str] | None = None) -> None:
        wakes.append(None if collections is None else set(collections))
        wake(collections)

    instance.relay.wake = counted  # type: ignore[method-assign]
    return wakes


async def test_the_relay_is_woken_after_a_handler_that_emitted_and_only_then(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    """A drain costs a `find` per outbox collection: a read or a refusal must not cost one. The poll is set to a
    minute, so the event arriving at once proves the wake."""
    async with running(sample, settings.model_copy(update={"outbox_poll_seconds": 60.0})) as instance:
        wakes = counting_wakes(instance)
        async with EventTap(amqp_url, "sample.note.added") as tap:
            await portal.call("sample.open_note", {"note_id": "woken", "text": "x"}, message_id="w-1")
            await tap.next("sample.note.added", timeout=10)
        assert len(wakes) == 1
        await portal.call("sample.read_note", {"note_id": "woken"})
        assert await outcome(portal, "sample.open_note", {"note_id": "woken", "text": "refuse"}) == "conflict"
        assert len(wakes) == 1


async def test_a_write_once_wakes_the_relay_for_the_collection_it_wrote_events_to_and_the_event_goes_out(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    """`sample.put_note` writes its event through `ctx.write_once`: the relay drains only `notes`, at once. A handler
    that writes its events otherwise (`sample.open_note`) leaves the relay to look everywhere."""
    async with running(sample, settings.model_copy(update={"outbox_poll_seconds": 60.0})) as instance:
        wakes = counting_wakes(instance)
        token, _ = token_for(settings)
        async with EventTap(amqp_url, "sample.note.added") as tap:
            await portal.call("sample.put_note", {"note_id": "once", "text": "x"}, token=token, message_id="p-1")
            await tap.next("sample.note.added", where=lambda body: body["note_id"] == "once", timeout=10)
            await portal.call("sample.open_note", {"note_id": "elsewhere", "text": "x"}, message_id="p-2")
            await tap.next("sample.note.added", where=lambda body: body["note_id"] == "elsewhere", timeout=10)
        assert wakes == [{"notes"}, None]
        assert await instance.db.notes.count_documents({"outbox": {"$exists": True}}) == 0


async def test_the_backlog_gauge_shows_what_a_failing_broker_left_and_falls_to_zero_once_published(
        db: Database) -> None:
    metrics = Metrics("sample", "0")
    for note_id in ("b1", "b2", "b3"):
        await write_note(db, note_id)
    failing = OutboxRelay(RecordingBroker(fail=True), EVENTS, db, ["notes"], poll_seconds=1,  # type: ignore[arg-type]
                          metrics=metrics)
    with pytest.raises(ConnectionError):
        await failing.drain()
    assert metrics.registry.get_sample_value("portal_outbox_pending_events", {"collection": "notes"}) == 3

    working = OutboxRelay(RecordingBroker(), EVENTS, db, ["notes"], poll_seconds=1,  # type: ignore[arg-type]
                          metrics=metrics)
    assert await working.drain() == 3
    assert metrics.registry.get_sample_value("portal_outbox_pending_events", {"collection": "notes"}) == 0
    assert metrics.registry.get_sample_value("portal_outbox_published_events_total", {"collection": "notes"}) == 3
