"""The revocation list each service keeps from `accounts.session.revoked`, shared by its replicas."""

from __future__ import annotations

from contracts.accounts import SessionRevoked
from services.runtime.mongo import Database
from services.runtime.tokens import Claims

COLLECTION = "revoked_sessions"


class RevocationStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[COLLECTION]

    async def create_indexes(self) -> None:
        # Entries vanish once every token they concern has expired.
        await self.collection.create_index("until", expireAfterSeconds=0)

    async def add(self, event: SessionRevoked) -> None:
        key = f"session:{event.session_id}" if event.session_id else f"user:{event.user_id}"
        await self.collection.update_one(
            {"_id": key},
            {"$max": {"revoked_at": event.revoked_at, "until": event.until}},
            upsert=True,
        )

    async def is_revoked(self, claims: Claims) -> bool:
        keys = [f"session:{claims.session_id}", f"user:{claims.user_id}"]
        async for entry in self.collection.find({"_id": {"$in": keys}}):
            if entry["_id"].startswith("session:") or claims.issued_at <= entry["revoked_at"]:
                return True
        return False
