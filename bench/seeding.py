"""Seeding a service's read model directly, as its own event handlers would store it, when events would take minutes.

The handler runs against a stand-in database that records the upsert it makes and writes nothing; the recorded
documents are then inserted in batches. So the documents are what the service stores for the equivalent events, and
their shape cannot drift from the service's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import cast

from contracts.base import Event
from services.runtime.batching import Lookups
from services.runtime.events import EventContext
from services.runtime.instance import Instance
from services.runtime.mongo import Database, Document

BATCH = 1_000
# A service's event handler, e.g. `services.ticketing.handlers.remember_device`.
Handler = Callable[[Event, EventContext], Awaitable[None]]


class _Recorder:
    """Stands in for a collection: records the upsert a store method makes, writes nothing."""

    def __init__(self) -> None:
        self.upserts: list[Document] = []

    async def update_one(self, query: Document, update: Document, upsert: bool = False) -> None:
        unknown = set(update) - {"$set", "$setOnInsert"}
        if not upsert or unknown:
            raise AssertionError(f"a read model changed its write ({sorted(unknown)}): update bench.seeding")
        self.upserts.append({"_id": query["_id"], **update.get("$set", {}), **update.get("$setOnInsert", {})})


class _RecordingDb(dict[str, _Recorder]):
    def __missing__(self, name: str) -> _Recorder:
        self[name] = _Recorder()
        return self[name]


async def read_model(events: Sequence[Event], handle: Handler) -> dict[str, list[Document]]:
    """Per collection, the documents `handle` stores for these events (as first ones, into nothing)."""
    recording = _RecordingDb()
    db = cast(Database, recording)
    # The handlers reach only the instance's lookups (through their store), and read-model upserts read nothing.
    ctx = EventContext(event="bench", message_id=None, db=db, instance=cast(Instance, SimpleNamespace(
        lookups=Lookups(db))))
    for event in events:
        await handle(event, ctx)
    return {name: recorder.upserts for name, recorder in recording.items()}


async def seed(db: Database, handle: Handler, events: Sequence[Event]) -> None:
    for name, documents in (await read_model(events, handle)).items():
        for start in range(0, len(documents), BATCH):
            await db[name].insert_many(documents[start:start + BATCH], ordered=False)
