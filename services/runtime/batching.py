"""Group writes and reads that arrive together into one database call.

Under load many commands claim and complete at once; one `insert_many`/`bulk_write` for
all of them costs the database about what one write costs, and one `find` with `$in` about
what one `find_one` costs (`Lookup`). A lone call goes out at the next turn of the event
loop, so nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from services.runtime.mongo import Collection, Database, Document

# The driver's own timeoutMS should end every flush well before this; a bound of the batcher's
# own keeps every submitter's wait finite whatever the driver or the server do.
FLUSH_DEADLINE_SECONDS = 60.0
IN_LIMIT = 1000  # keys per `$in` of a `Lookup`'s find

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(self, flush: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_size: int = 256,
                 deadline: float = FLUSH_DEADLINE_SECONDS) -> None:
        self._flush, self._max_size, self._deadline = flush, max_size, deadline
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:self._max_size], self._pending[self._max_size:]
                try:
                    async with asyncio.timeout(self._deadline):
                        results = await self._flush([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"a flush of {len(batch)} gave {len(results)} results")
                except Exception as error:
                    _fail(batch, error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            # Whatever ended the drain (a cancellation too), no submitter may wait for ever: its
            # command would get no reply and its claim would hold every re-sent copy.
            stranded, self._pending = batch + self._pending, []
            _fail(stranded, RuntimeError("the batch was not written"))
            self._draining = None


def _fail(batch: list[tuple[Item, asyncio.Future[Result]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


class Lookup:
    """Documents of one collection by `_id`, the lookups of commands arriving together read in one `find`.

    A read is as fresh as it would be alone: it goes out at the next turn of the event loop, or right after the
    `find` in flight, never from a cache."""

    def __init__(self, collection: Collection, projection: Document | None = None) -> None:
        self._collection, self._projection = collection, projection
        self._batcher: Batcher[tuple[Any, ...], dict[Any, Document]] = Batcher(self._find)

    async def one(self, key: Any) -> Document | None:
        return (await self._batcher.submit((key,))).get(key)

    async def many(self, keys: Iterable[Any]) -> dict[Any, Document]:
        """The documents of `keys` that exist, by `_id`."""
        wanted = tuple(dict.fromkeys(keys))
        return await self._batcher.submit(wanted) if wanted else {}

    async def _find(self, batch: list[tuple[Any, ...]]) -> list[dict[Any, Document]]:
        wanted = list(dict.fromkeys(key for keys in batch for key in keys))
        found: dict[Any, Document] = {}
        for start in range(0, len(wanted), IN_LIMIT):
            async for document in self._collection.find({"_id": {"$in": wanted[start:start + IN_LIMIT]}},
                                                        self._projection):
                found[document["_id"]] = document
        return [{key: found[key] for key in keys if key in found} for keys in batch]


class Lookups:
    """One `Lookup` per collection of a database, shared by every handler of a running service copy."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._by_collection: dict[str, Lookup] = {}

    def of(self, collection: str) -> Lookup:
        if collection not in self._by_collection:
            self._by_collection[collection] = Lookup(self._db[collection])
        return self._by_collection[collection]
