"""Outbox: events ride in the same document write as the state change; a relay publishes them.

A store wraps the update that changes an aggregate in `with_events(update, events)`, so the
change and its events are one atomic single-document write (the embedded server's
transactions are not isolated). The relay publishes pending entries with publisher
confirms, then removes them from the document. Killing the process in between loses
nothing: the entries are still there and the relay sends them again with the same
`message_id`; consumers drop duplicates.

The outbox is a map `{event_id: entry}` set with dotted `$set`, not an array: nx-27017
turns the elements of an existing array into JSON strings on `$push` of subdocuments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange
from pymongo import InsertOne, UpdateOne

from contracts.base import Event
from contracts.logs import current_field
from services.runtime.metrics import Metrics
from services.runtime.mongo import Database
from services.runtime.tracing import trace_headers

log = logging.getLogger(__name__)

FIELD = "outbox"
SEQUENCE = "outbox_seq"  # bumped by every write that emits, so the relay clears only what it sent
# 1 while the outbox holds entries: the relay finds them through an index on it. `{outbox: {$exists: true}}` scans
# every document of the collection on nx-27017 (37 ms per drain at 50,000 readings, growing with each one).
PENDING = "outbox_pending"
APPLIED = "applied_commands"
TRACE = "trace"  # an entry's trace context (`traceparent`, `tracestate`), when the write was traced
CLEAR_BATCH = 200
# Enough to recognise a command redelivered after a crash; older ids have long been answered.
APPLIED_KEPT = 50
# A drain whose confirms have not all come by then fails and is retried (same message ids): a confirm that never
# arrives (aio-pika #689) must not stop the relay for good. Bounded around the whole publish, as replies are.
PUBLISH_TIMEOUT_SECONDS = 30.0


class Emissions:
    """Whether the handler running built outbox entries (`with_events`): only then is the relay woken after it, so a
    read, or an event that only updates a read model, costs no drain (a `find` per outbox collection). When every
    update built with events went through `ctx.write_once`, the relay looks only in the collections it wrote."""

    def __init__(self) -> None:
        self.any = False
        self.unplaced = 0  # updates built with events that no `write_once` has taken
        self.collections: set[str] = set()  # where `write_once` wrote events

    @property
    def due(self) -> set[str] | None:
        """The collections the relay should drain now; None: all of them."""
        return None if self.unplaced > 0 else self.collections


# A mutable mark, not a flag set in the context: a handler's `asyncio.gather` runs its parts in copies of the context.
_emissions: ContextVar[Emissions | None] = ContextVar("outbox_emissions", default=None)


@contextlib.contextmanager
def tracking_emissions() -> Iterator[Emissions]:
    emissions = Emissions()
    token = _emissions.set(emissions)
    try:
        yield emissions
    finally:
        _emissions.reset(token)


def with_events(update: dict[str, Any], events: Iterable[Event], *,
                command_id: str | None = None) -> dict[str, Any]:
    """`update` plus the outbox entries of `events`, to be written in the same operation.

    With `command_id`, the document also remembers that command; filter the update with
    `not_applied(command_id)` so a command re-run after a crash changes nothing twice.
    """
    merged = {operator: dict(fields) for operator, fields in update.items()}
    now = datetime.now(UTC)
    emissions = _emissions.get()
    # The events of a command or event being handled carry its correlation id: one call can be followed in the logs.
    correlation_id = current_field("correlation_id")
    trace = trace_headers()
    for event in events:
        if emissions is not None:
            emissions.any = True
        event_id = uuid.uuid4().hex
        entry: dict[str, Any] = {"routing_key": event.routing_key, "body": event.model_dump(mode="json"),
                                 "created_at": now}
        if correlation_id:
            entry["correlation_id"] = correlation_id
        if trace:
            entry[TRACE] = trace  # the relay sends it with the event: its consumers continue the handler's trace
        merged.setdefault("$set", {})[f"{FIELD}.{event_id}"] = entry
    merged.setdefault("$inc", {})[SEQUENCE] = 1
    if f"{FIELD}." in " ".join(merged.get("$set", {})):
        merged["$set"][PENDING] = 1
        if emissions is not None:
            emissions.unplaced += 1
    if command_id is not None:
        merged.setdefault("$push", {})[APPLIED] = {"$each": [command_id], "$slice": -APPLIED_KEPT}
    return merged


def placed(writes: Sequence[InsertOne[Any] | UpdateOne], *, written: bool) -> None:
    """`write_once` took these operations (built with `with_events`) and `written` tells whether they were applied:
    the relay need look for their events only in their collections."""
    emissions = _emissions.get()
    if emissions is None:
        return
    for write in writes:
        document = write._doc
        fields = document if isinstance(write, InsertOne) else document.get("$set", {}) \
            if isinstance(document, Mapping) else {}
        if PENDING in fields and write._namespace:
            emissions.unplaced -= 1
            if written:
                emissions.collections.add(write._namespace.split(".", 1)[1])


def not_applied(command_id: str | None) -> dict[str, Any]:
    """Filter part matching a document only if `command_id` has not changed it yet.

    `$nin`, not `$ne`: nx-27017's updates match `$ne` wrongly on arrays and missing fields.
    """
    return {} if command_id is None else {APPLIED: {"$nin": [command_id]}}


def inserted(document: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The document an upsert of `update` (`$set` with dotted paths, `$inc`, `$push` with `$each`) would create from
    `document`: so a new document is inserted with its outbox, and the mark of the command that made it, exactly as
    `with_events` writes them into an existing one."""
    created = dict(document)
    pushed = {path: _sliced(list(value["$each"]), value.get("$slice"))
              for path, value in update.get("$push", {}).items()}
    for path, value in {**update.get("$set", {}), **update.get("$inc", {}), **pushed}.items():
        *parents, leaf = path.split(".")
        target = created
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return created


def with_outbox(document: dict[str, Any], events: Iterable[Event], *,
                command_id: str | None = None) -> dict[str, Any]:
    """A new `document` to insert with `events` in its outbox (and, with `command_id`, the mark of its command)."""
    return inserted({"_id": document["_id"]}, with_events(
        {"$set": {key: value for key, value in document.items() if key != "_id"}}, events, command_id=command_id))


def _sliced(values: list[Any], size: int | None) -> list[Any]:
    """`$slice` as MongoDB applies it to a new array: the last `-size`, the first `size`, or all."""
    if size is None:
        return values
    return values[size:] if size < 0 else values[:size]


class OutboxRelay:
    """Publishes what the listed collections hold in their outboxes; one per process."""

    def __init__(self, broker: RabbitBroker, exchange: RabbitExchange, db: Database,
                 collections: Sequence[str], *, poll_seconds: float, metrics: Metrics | None = None) -> None:
        self.broker, self.exchange, self.db = broker, exchange, db
        self.metrics = metrics
        self.collections = list(collections)
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._due: set[str] | None = set()  # what the wakes since the last drain asked for; None: every collection
        self._task: asyncio.Task[None] | None = None
        # The first drain of a process looks at every document: entries written before `PENDING` existed count too.
        self._scanned = False

    def wake(self, collections: Iterable[str] | None = None) -> None:
        """Publish now rather than at the next poll (called after a write that may have emitted); only what
        `collections` hold, when given."""
        if collections is None or self._due is None:
            self._due = None
        else:
            self._due.update(collections)
        self._wake.set()

    def start(self) -> None:
        if self.collections and self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop polling, after one last drain so nothing written before the stop waits for a restart."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        try:
            await self.drain()
        except Exception:
            log.exception("outbox: last drain failed; the next start publishes the rest")

    async def _run(self) -> None:
        for name in self.collections:
            try:
                await self.db[name].create_index(PENDING, sparse=True)
            except Exception:
                log.exception("outbox: no index on %s.%s; the relay still works, more slowly", name, PENDING)
        # The first drain, and one at least every poll, look everywhere, however often wakes come for some
        # collections: events written without a wake (a scheduler's) must not wait for the wakes to stop.
        loop = asyncio.get_running_loop()
        due: set[str] | None = None
        full_at = loop.time()
        while True:
            self._wake.clear()
            try:
                await self.drain(due)
            except Exception:
                log.exception("outbox: publishing failed, retrying")
                self._due = None
            if due is None:
                full_at = loop.time()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, full_at + self.poll_seconds - loop.time()))
                due, self._due = self._due, set()
            except TimeoutError:
                due, self._due = None, set()
            if loop.time() >= full_at + self.poll_seconds:
                due = None

    async def drain(self, collections: Iterable[str] | None = None) -> int:
        """Publish what the outboxes hold (of `collections`, when given), then clear it."""
        published = 0
        names = self.collections if collections is None or not self._scanned else \
            [name for name in self.collections if name in set(collections)]
        for name in names:
            collection = self.db[name]
            sent: list[tuple[Any, Any, list[str]]] = []  # (document id, its sequence, event ids published)
            pending: list[tuple[str, dict[str, Any]]] = []
            waiting = {PENDING: 1} if self._scanned else {FIELD: {"$exists": True}}
            backlog = 0  # found and not yet published: what a broker that is away leaves waiting
            try:
                async for document in collection.find(waiting, {FIELD: 1, SEQUENCE: 1}):
                    entries = sorted((document.get(FIELD) or {}).items(), key=lambda item: item[1]["created_at"])
                    pending.extend(entries)
                    backlog += len(entries)
                    sent.append((document["_id"], document.get(SEQUENCE), [event_id for event_id, _ in entries]))
                    if len(sent) >= CLEAR_BATCH:
                        count = await self._publish_counted(name, pending, backlog)
                        published, backlog = published + count, backlog - count
                        await self._clear(collection, sent)
                        sent, pending = [], []
                published += await self._publish_counted(name, pending, backlog)
            except Exception:
                if self.metrics is not None:  # the gauge shows the whole backlog, not the part found before the failure
                    self.metrics.outbox_pending.labels(name).set(await self._backlog(collection, waiting))
                raise
            await self._clear(collection, sent)
        if collections is None:
            self._scanned = True
        return published

    async def _backlog(self, collection: Any, waiting: dict[str, Any]) -> int:
        """How many events wait in `collection`'s outboxes (read only when publishing failed)."""
        count = 0
        async for document in collection.find(waiting, {FIELD: 1}):
            count += len(document.get(FIELD) or {})
        return count

    async def _publish_counted(self, collection: str, entries: list[tuple[str, dict[str, Any]]], backlog: int) -> int:
        """`_publish`, counted: the `backlog` entries found in `collection` so far wait until it succeeds."""
        if self.metrics is None:
            return await self._publish(entries)
        self.metrics.outbox_pending.labels(collection).set(backlog)
        count = await self._publish(entries)
        self.metrics.outbox_pending.labels(collection).set(backlog - count)
        self.metrics.outbox_published.labels(collection).inc(count)
        return count

    async def _publish(self, entries: list[tuple[str, dict[str, Any]]]) -> int:
        """Publish `entries` in order on one channel, their confirms awaited together (one at a time costs a round
        trip each: 7.8 s for 20,000 reminders); all are confirmed, or this raises and the next drain sends them
        again with the same message ids."""
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await asyncio.gather(*(self.broker.publish(
                entry["body"], routing_key=entry["routing_key"], exchange=self.exchange, message_id=event_id,
                correlation_id=entry.get("correlation_id"), content_type="application/json", persist=True,
                mandatory=False, timestamp=entry["created_at"], headers=entry.get(TRACE) or None)
                for event_id, entry in entries))
        return len(entries)

    async def _clear(self, collection: Any, sent: list[tuple[Any, Any, list[str]]]) -> None:
        """Clear each outbox only if no write added to it meanwhile; else just what was sent."""
        if not sent:
            return
        # One round trip for many documents: after a bulk upload, thousands wait at once.
        cleared = await collection.bulk_write([
            UpdateOne({"_id": key, SEQUENCE: sequence}, {"$unset": {FIELD: "", PENDING: ""}})
            for key, sequence, _ in sent], ordered=False)
        if cleared.modified_count == len(sent):
            return
        for key, _, event_ids in sent:  # some got new entries meanwhile: remove only what was sent
            await collection.update_one({"_id": key, FIELD: {"$exists": True}},
                                        {"$unset": {f"{FIELD}.{event_id}": "" for event_id in event_ids}})
