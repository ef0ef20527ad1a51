"""Handle each message once: a claim per (scope, message_id) keeps the reply for re-sent copies.

A worker claims a message before handling it; a second copy arriving meanwhile waits for the
first to finish and gets its reply; a worker that dies leaves a claim whose lease runs out,
so a redelivery can take over. Used for commands (scope = command) and events (scope = queue).

Each claim names its holder (a random owner token): only the holder completes or releases
it, and it renews its lease while it works (`held`), so a long handler is not taken over
and a copy that took over a dead worker's claim cannot be undone by that worker.

A command's claim carries the fingerprint of its sender and body: a message id is no secret
(it is logged and travels into dead-letter queues), so a copy from another caller, or with
another body, is told apart (`Claim.foreign`) and never gets the stored reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from services.runtime.batching import Batcher
from services.runtime.mongo import Database, Document, as_datetime

log = logging.getLogger(__name__)

COLLECTION = "message_claims"
FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS = 0.02, 0.5


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming: either ours to handle, or already done with `reply`."""

    key: str
    owned: bool
    reply: dict[str, Any] | None = None
    # Someone else's message id: another sender or another body than the claim was made for.
    foreign: bool = False
    owner: str | None = None  # the holder's token, when owned


class ClaimStore:
    def __init__(self, db: Database, *, lease: timedelta, keep: timedelta) -> None:
        self.collection = db[COLLECTION]
        self.lease, self.keep = lease, keep
        self._inserts = Batcher(self._insert_new)
        self._completions = Batcher(self._write_completions)

    async def create_indexes(self) -> None:
        await self.collection.create_index("expires_at", expireAfterSeconds=0)

    async def claim(self, scope: str, message_id: str, fingerprint: str | None = None) -> Claim:
        key, owner, wait = f"{scope}:{message_id}", uuid.uuid4().hex, FIRST_WAIT_SECONDS
        while True:
            now = datetime.now(UTC)
            if await self._inserts.submit({"_id": key, "done": False, "fingerprint": fingerprint, "owner": owner,
                                           "lease_until": now + self.lease, "expires_at": now + self.keep}):
                return Claim(key, owned=True, owner=owner)
            existing = await self.collection.find_one({"_id": key})
            if existing is None:
                continue  # released meanwhile: try again
            if existing.get("fingerprint") != fingerprint:
                return Claim(key, owned=False, foreign=True)
            if existing["done"]:
                return Claim(key, owned=False, reply=existing.get("reply"))
            lease_until = as_datetime(existing["lease_until"])
            if lease_until is None or lease_until <= now:
                # The worker that held it died: take it over, unless another copy just did.
                taken = await self.collection.update_one(
                    {"_id": key, "done": False, "lease_until": existing["lease_until"]},
                    {"$set": {"lease_until": now + self.lease, "owner": owner}})
                if taken.modified_count:
                    return Claim(key, owned=True, owner=owner)
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)

    @contextlib.asynccontextmanager
    async def held(self, claim: Claim | None) -> AsyncIterator[None]:
        """Renew the claim's lease while the block runs, so no copy takes over a worker that is alive."""
        if claim is None:
            yield
            return
        renewing = asyncio.create_task(self._renew(claim))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew(self, claim: Claim) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collection.update_one({"_id": claim.key, "owner": claim.owner, "done": False},
                                                 {"$set": {"lease_until": datetime.now(UTC) + self.lease}})
            except PyMongoError:
                log.warning("lease of %s not renewed; trying again", claim.key, exc_info=True)

    async def complete(self, claim: Claim, reply: dict[str, Any] | None = None) -> None:
        await self._completions.submit(UpdateOne({"_id": claim.key, "owner": claim.owner},
                                                 {"$set": {"done": True, "reply": reply}}))

    async def _insert_new(self, documents: list[Document]) -> list[bool]:
        """Insert what is new; False for each key that exists already."""
        try:
            await self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            taken = {failure["index"] for failure in error.details["writeErrors"] if failure["code"] == 11000}
            if len(taken) < len(error.details["writeErrors"]):
                raise
            return [index not in taken for index in range(len(documents))]
        return [True] * len(documents)

    async def _write_completions(self, updates: list[UpdateOne]) -> list[None]:
        await self.collection.bulk_write(updates, ordered=False)
        return [None] * len(updates)

    async def release(self, claim: Claim) -> None:
        """Give the message back (it failed): a retry or re-sent copy handles it afresh."""
        await self.collection.delete_one({"_id": claim.key, "owner": claim.owner, "done": False})
