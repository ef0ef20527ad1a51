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

A command whose handler changes one document can claim in the same round trip as its write
(`claim_with_write`): one ordered bulk write (`Route`) inserts the claim, applies the write and
stores the reply, and stops at the claim when the message id is taken, so a copy changes
nothing and is answered as above. Every command pays one database round trip instead of three
(claim, write, stored reply), two of them in sequence before the reply; commands arriving together
share one (the batch stays ordered: the commands after a failing one go again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    DuplicateKeyError,
    PyMongoError,
    WriteError,
)

from services.runtime.batching import Batcher
from services.runtime.mongo import Database, Document, as_datetime
from services.runtime.outbox import APPLIED

log = logging.getLogger(__name__)

COLLECTION = "message_claims"
FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS = 0.02, 0.5
# One state change, written with its claim: the operation carries its namespace (`ctx.namespace(collection)`), a
# collection of the service's database.
Write = InsertOne[Any] | UpdateOne


def operations(write: Write | Sequence[Write]) -> list[Write]:
    """One operation, or several in order, as a list."""
    return [write] if isinstance(write, InsertOne | UpdateOne) else list(write)
CLIENT_BULK_WIRE_VERSION = 25  # MongoDB 8.0: the client-level bulk write


class Route(Enum):
    """How a claim and its write go to the server in one round trip."""

    CLIENT = "client"  # MongoDB 8.0 or later: the client-level bulk write
    OWN_DATABASE = "own_database"  # nx-27017: its bulkWrite command, sent to the service's own database
    ONE_BY_ONE = "one_by_one"  # an older MongoDB: one round trip per operation


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
        self._claimed_writes = Batcher(self._write_in_order)
        self._namespace = f"{db.name}.{COLLECTION}"
        self.route: Route | None = None  # how to send a claim with its write; asked of the server once

    async def create_indexes(self) -> None:
        await self.collection.create_index("expires_at", expireAfterSeconds=0)

    async def claim(self, scope: str, message_id: str, fingerprint: str | None = None) -> Claim:
        key, owner, wait = f"{scope}:{message_id}", uuid.uuid4().hex, FIRST_WAIT_SECONDS
        while True:
            if await self._inserts.submit(self._new_claim(key, owner, fingerprint)):
                return Claim(key, owned=True, owner=owner)
            settled = await self._settle(key, owner, fingerprint)
            if settled is not None:
                return settled
            wait = await _pause(wait)

    async def claim_with_write(self, scope: str, message_id: str, fingerprint: str, write: Write | Sequence[Write],
                               reply: dict[str, Any], *, marker: str | None = None) -> Claim:
        """Claim, apply `write` (one operation, or several applied in order) and store `reply`, in one round trip:
        an owned claim when this copy applied it, else the earlier copy's claim (foreign, or done with its reply)
        and `write` not applied.

        `marker`: the command id `write` marks its document with (`with_events(command_id=...)`, filtered with
        `not_applied`). When a worker died after the write but before the stored reply, the copy that takes the
        claim over collides with that write (its upsert's insert, or its insert, meets the document); finding the
        document marked, it stores `reply` and owns the command rather than failing for ever.

        A write that fails otherwise leaves nothing claimed and raises (a duplicate key as `DuplicateKeyError`)."""
        writes = operations(write)
        key, owner, wait = f"{scope}:{message_id}", uuid.uuid4().hex, FIRST_WAIT_SECONDS
        while True:
            claim = InsertOne(self._new_claim(key, owner, fingerprint), namespace=self._namespace)
            if await self._write_claimed([claim, *writes, self._completion(key, owner, reply)], key, owner,
                                         claiming=True, marker=marker):
                return Claim(key, owned=True, owner=owner, reply=reply)
            settled = await self._settle(key, owner, fingerprint)
            if settled is not None:
                if settled.owned:  # taken over from a worker that died before its stored reply: ours to finish
                    await self._write_claimed([*writes, self._completion(key, owner, reply)], key, owner,
                                              claiming=False, marker=marker)
                    return Claim(key, owned=True, owner=owner, reply=reply)
                return settled
            wait = await _pause(wait)

    async def _write_claimed(self, operations: list[Write], key: str, owner: str, *, claiming: bool,
                             marker: str | None = None) -> bool:
        """Apply `operations` in order, stopping at the first that fails; False when `claiming` (the first
        operation inserts the claim) and the claim exists already. A write colliding with the document it applied
        before (marked with `marker`) counts as applied, and the operations after it go on. Another failure
        releases the claim and is raised (a duplicate key as `DuplicateKeyError`)."""
        if self.route is None:
            self.route = await self._route()
        if self.route is Route.ONE_BY_ONE:
            failure = await self._write_one_by_one(operations)
        else:
            failure = await self._claimed_writes.submit(operations)
        if failure is None:
            return True
        index = failure["idx"]
        if claiming and index == 0 and failure["code"] == 11000:
            return False
        if failure["code"] == 11000 and await self._applied_before(operations[index], marker):
            rest = operations[index + 1:]
            return await self._write_claimed(rest, key, owner, claiming=False) if rest else True
        await self.release(Claim(key, owned=True, owner=owner))
        kind = DuplicateKeyError if failure["code"] == 11000 else WriteError
        raise kind(failure["errmsg"], failure["code"], failure)

    async def _applied_before(self, operation: Write, marker: str | None) -> bool:
        """Whether the document `operation` writes carries `marker` among the commands applied to it."""
        if marker is None:
            return False
        if isinstance(operation, UpdateOne):
            if APPLIED not in operation._filter:
                return False  # not filtered with `not_applied`: nothing tells its earlier write apart
            query = {field: value for field, value in operation._filter.items() if field != APPLIED}
        else:
            query = {"_id": operation._doc["_id"]}
        database = self.collection.database
        namespace = operation._namespace
        assert namespace is not None
        collection = database[namespace.removeprefix(f"{database.name}.")]
        return await collection.find_one({**query, APPLIED: {"$in": [marker]}}, {"_id": 1}) is not None

    async def _route(self) -> Route:
        info = await self.collection.database.command("buildInfo")
        if info.get("process") == "nx_27017":
            return Route.OWN_DATABASE
        hello = await self.collection.database.command("hello")
        return Route.CLIENT if hello.get("maxWireVersion", 0) >= CLIENT_BULK_WIRE_VERSION else Route.ONE_BY_ONE

    async def _write_in_order(self, batch: list[list[Write]]) -> list[Document | None]:
        """The operations of several commands in one ordered bulk write; for each command, its failure (`idx` among
        its own operations) or None. The first failure stops the write, so the commands after the failing one go
        again."""
        outcomes: list[Document | None] = [None] * len(batch)
        first = 0
        while first < len(batch):
            failure = await self._bulk_write([operation for operations in batch[first:] for operation in operations])
            if failure is None:
                return outcomes
            index = failure["idx"]
            for command in range(first, len(batch)):
                if index < len(batch[command]):
                    outcomes[command], first = {**failure, "idx": index}, command + 1
                    break
                index -= len(batch[command])
        return outcomes

    async def _bulk_write(self, operations: list[Write]) -> Document | None:
        """One ordered bulk write, one round trip: its first failure (`idx`, `code`, `errmsg`), or None."""
        if self.route is Route.CLIENT:
            try:
                await self.collection.database.client.bulk_write(operations, ordered=True)
            except ClientBulkWriteException as error:
                # `details`: pymongo types `write_errors` as exceptions, yet fills it with documents.
                failures: list[Document] = error.details.get("writeErrors") or []
                if not failures:
                    raise
                return failures[0]
            return None
        # nx-27017 serialises the commands of one database with a lock chosen by the command's `$db`: sent to
        # `admin` as MongoDB wants it, a bulk write would run alongside others on the same SQLite connection
        # ("another row available"). Sent to the database it writes, it takes that lock.
        namespaces: list[str] = []
        raw: list[Document] = []
        for operation in operations:
            namespace = operation._namespace
            assert namespace and namespace.startswith(f"{self.collection.database.name}."), namespace
            if namespace not in namespaces:
                namespaces.append(namespace)
            index = namespaces.index(namespace)
            if isinstance(operation, InsertOne):
                raw.append({"insert": index, "document": operation._doc})
            else:
                raw.append({"update": index, "filter": operation._filter, "updateMods": operation._doc,
                            "upsert": bool(operation._upsert)})
        result = await self.collection.database.command(
            {"bulkWrite": 1, "ordered": True, "ops": raw, "nsInfo": [{"ns": namespace} for namespace in namespaces]})
        return next((entry for entry in result["cursor"]["firstBatch"] if not entry["ok"]), None)

    async def _write_one_by_one(self, operations: list[Write]) -> Document | None:
        """The operations in order, one round trip each, up to the first that fails: its failure, or None."""
        database = self.collection.database
        for index, operation in enumerate(operations):
            namespace = operation._namespace
            assert namespace and namespace.startswith(f"{database.name}."), namespace
            try:
                await database[namespace.removeprefix(f"{database.name}.")].bulk_write([operation])
            except BulkWriteError as error:
                return {**error.details["writeErrors"][0], "idx": index}
        return None

    async def _settle(self, key: str, owner: str, fingerprint: str | None) -> Claim | None:
        """What an existing claim on `key` means for a copy with `fingerprint`; None: wait, or it was just
        released, and try again."""
        now = datetime.now(UTC)
        existing = await self.collection.find_one({"_id": key})
        if existing is None:
            return None  # released meanwhile: try again
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
        return None

    async def exists(self, scope: str, message_id: str) -> bool:
        """Whether a claim of (scope, message_id) is there: some copy holds it, or held it and stored its reply."""
        return await self.collection.find_one({"_id": f"{scope}:{message_id}"}, {"_id": 1}) is not None

    def _new_claim(self, key: str, owner: str, fingerprint: str | None) -> Document:
        now = datetime.now(UTC)
        return {"_id": key, "done": False, "fingerprint": fingerprint, "owner": owner,
                "lease_until": now + self.lease, "expires_at": now + self.keep}

    def _completion(self, key: str, owner: str, reply: dict[str, Any] | None) -> UpdateOne:
        return UpdateOne({"_id": key, "owner": owner}, {"$set": {"done": True, "reply": reply}},
                         namespace=self._namespace)

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
        assert claim.owner is not None
        await self._completions.submit(self._completion(claim.key, claim.owner, reply))

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


async def _pause(wait: float) -> float:
    """Wait for another copy to finish; the next wait, longer."""
    await asyncio.sleep(wait)
    return min(wait * 2, LONGEST_WAIT_SECONDS)
