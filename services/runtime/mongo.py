"""The Mongo client every service uses: one place for its options and its document type."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]
Database = AsyncDatabase[Document]


def mongo_client(url: str, timeout_ms: int) -> AsyncMongoClient[Document]:
    # timeoutMS always: nx-27017 never answers a reply it cannot encode (STACK_NOTES §3).
    # tz_aware: stored datetimes come back as UTC, comparable with datetime.now(UTC).
    return AsyncMongoClient(url, timeoutMS=timeout_ms, tz_aware=True, connect=False)
