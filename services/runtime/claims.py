"""Handle each message once: a claim per (scope, message_id) keeps the reply for re-sent copies.

A worker claims a message before handling it; a second copy arriving meanwhile waits for the
first to finish and gets its reply; a worker that dies leaves a claim whose lease runs out,
so a redelivery can take over. Used for commands (scope = command) and events (scope = queue).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.runtime.mongo import Database

COLLECTION = "message_claims"
WAIT_STEP_SECONDS = 0.02


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming: either ours to handle, or already done with `reply`."""

    key: str
    owned: bool
    reply: dict[str, Any] | None = None


class ClaimStore:
    def __init__(self, db: Database, *, lease: timedelta, keep: timedelta) -> None:
        self.collection = db[COLLECTION]
        self.lease, self.keep = lease, keep

    async def create_indexes(self) -> None:
        await self.collection.create_index("expires_at", expireAfterSeconds=0)

    async def claim(self, scope: str, message_id: str) -> Claim:
        key = f"{scope}:{message_id}"
        while True:
            now = datetime.now(UTC)
            try:
                await self.collection.insert_one(
                    {"_id": key, "done": False, "lease_until": now + self.lease, "expires_at": now + self.keep})
                return Claim(key, owned=True)
            except DuplicateKeyError:
                pass
            existing = await self.collection.find_one({"_id": key})
            if existing is None:
                continue  # released meanwhile: try again
            if existing["done"]:
                return Claim(key, owned=False, reply=existing.get("reply"))
            if existing["lease_until"] <= now:
                # The worker that held it died: take it over, unless another copy just did.
                taken = await self.collection.update_one(
                    {"_id": key, "done": False, "lease_until": existing["lease_until"]},
                    {"$set": {"lease_until": now + self.lease}})
                if taken.modified_count:
                    return Claim(key, owned=True)
            await asyncio.sleep(WAIT_STEP_SECONDS)

    async def complete(self, claim: Claim, reply: dict[str, Any] | None = None) -> None:
        await self.collection.update_one({"_id": claim.key}, {"$set": {"done": True, "reply": reply}})

    async def release(self, claim: Claim) -> None:
        """Give the message back (it failed): a retry or re-sent copy handles it afresh."""
        await self.collection.delete_one({"_id": claim.key, "done": False})
