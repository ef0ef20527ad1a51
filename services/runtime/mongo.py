"""The Mongo client every service uses: one place for its options and its document type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]
Database = AsyncDatabase[Document]
Collection = AsyncCollection[Document]
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def mongo_client(url: str, timeout_ms: int) -> AsyncMongoClient[Document]:
    # timeoutMS always: nx-27017 never answers a reply it cannot encode (STACK_NOTES §3).
    # tz_aware: stored datetimes come back as UTC, comparable with datetime.now(UTC).
    return AsyncMongoClient(url, timeoutMS=timeout_ms, tz_aware=True, connect=False)


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime.

    nx-27017 stores a datetime written by `$set` on an existing document as a naive string
    (`2026-11-24 10:55:16.182000`); inserts, replaces and subdocuments keep real dates.
    Reading through this works on both servers.
    """
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def stamp(moment: datetime) -> str:
    """A UTC time stored as text (`2026-12-03T10:11:12.345678Z`): fixed width, so the strings sort as the times do,
    and nx-27017 cannot turn it into a naive string as it does a datetime `$set` on an existing document."""
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_stamp(value: str | datetime) -> datetime:
    """A `stamp` (or any ISO time, its offset kept; none means UTC) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
