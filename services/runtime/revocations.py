"""The revocation list each service keeps from `accounts.session.revoked`, shared by its replicas."""

from __future__ import annotations

from contracts.accounts import SessionRevoked
from services.runtime.batching import Lookup
from services.runtime.mongo import Database, as_datetime
from services.runtime.tokens import Claims

COLLECTION = "revoked_sessions"


class RevocationStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[COLLECTION]
        # Every authenticated command asks: those arriving together ask in one read.
        self._entries = Lookup(self.collection)

    async def create_indexes(self) -> None:
        # Entries vanish once every token they concern has expired.
        await self.collection.create_index("until", expireAfterSeconds=0)

    async def add(self, event: SessionRevoked) -> None:
        key = f"session:{event.session_id}" if event.session_id else f"user:{event.user_id}"
        known = await self.collection.find_one({"_id": key})
        revoked_at, until = event.revoked_at, event.until
        if known is not None:  # keep the later of both: a late, older event must not shorten it
            revoked_at = max(revoked_at, as_datetime(known["revoked_at"]) or revoked_at)
            until = max(until, as_datetime(known["until"]) or until)
        # replace, not $set: nx-27017 keeps datetimes only on insert and replace (the TTL needs one);
        # `_id` repeated in the document: nx-27017's upserting replace ignores the filter's.
        await self.collection.replace_one({"_id": key}, {"_id": key, "revoked_at": revoked_at, "until": until},
                                          upsert=True)

    async def is_revoked(self, claims: Claims) -> bool:
        keys = [f"session:{claims.session_id}", f"user:{claims.user_id}"]
        for entry in (await self._entries.many(keys)).values():
            revoked_at = as_datetime(entry["revoked_at"])
            if entry["_id"].startswith("session:") or (revoked_at is not None and claims.issued_at <= revoked_at):
                return True
        return False
