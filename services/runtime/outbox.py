"""Outbox: events ride in the same document write as the state change; a relay publishes them.

A store adds `outbox_push(events)` to the update that changes an aggregate, so the change
and its events are one atomic single-document write (the embedded server's transactions are
not isolated). The relay publishes pending entries with publisher confirms, then pulls them
out of the document. Killing the process in between loses nothing: the entries are still
there and the relay sends them again with the same `message_id`; consumers drop duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange
from pymongo.asynchronous.database import AsyncDatabase

from contracts.base import Event

log = logging.getLogger(__name__)

FIELD = "outbox"
PENDING = {FIELD: {"$elemMatch": {"id": {"$exists": True}}}}


def outbox_entry(event: Event) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "routing_key": event.name,
        "body": event.model_dump(mode="json"),
        "created_at": datetime.now(UTC),
    }


def outbox_push(events: Iterable[Event]) -> dict[str, Any]:
    """The `$push` part of an update that emits these events with the state change."""
    return {"$push": {FIELD: {"$each": [outbox_entry(event) for event in events]}}}


class OutboxRelay:
    """Publishes what the listed collections hold in their outboxes; one per process."""

    def __init__(self, broker: RabbitBroker, exchange: RabbitExchange, db: AsyncDatabase[dict],
                 collections: Sequence[str], *, poll_seconds: float) -> None:
        self.broker, self.exchange, self.db = broker, exchange, db
        self.collections = list(collections)
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Publish now rather than at the next poll (called after a write that emitted events)."""
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
        while True:
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox: publishing failed, retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    async def drain(self) -> int:
        published = 0
        for name in self.collections:
            collection = self.db[name]
            async for document in collection.find(PENDING, {FIELD: 1}):
                entries = document.get(FIELD) or []
                for entry in entries:
                    await self.broker.publish(
                        entry["body"], routing_key=entry["routing_key"], exchange=self.exchange,
                        message_id=entry["id"], content_type="application/json", persist=True,
                        mandatory=False, timestamp=entry["created_at"],
                    )
                # Only what was published leaves: entries pushed meanwhile stay for the next round.
                await collection.update_one(
                    {"_id": document["_id"]},
                    {"$pull": {FIELD: {"id": {"$in": [entry["id"] for entry in entries]}}}})
                published += len(entries)
        return published
