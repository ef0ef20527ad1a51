"""Writes arriving together go out as one call; a failure reaches every writer of the batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.runtime.batching import Batcher, Lookup
from services.runtime.settings import Settings


async def test_concurrent_submissions_share_one_flush_and_each_gets_its_own_result() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(flush)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert calls == [[0, 1, 2, 3, 4]]


async def test_a_lone_submission_is_flushed_at_once() -> None:
    async def flush(items: list[str]) -> list[str]:
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(flush)
    assert await asyncio.wait_for(batcher.submit("a"), 1) == "A"
    assert await asyncio.wait_for(batcher.submit("b"), 1) == "B"


async def test_a_failed_flush_fails_every_submission_of_its_batch_and_not_the_next() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 0 in items:
            raise RuntimeError("database down")
        return items

    batcher: Batcher[int, int] = Batcher(flush)
    outcomes = await asyncio.gather(batcher.submit(0), batcher.submit(1), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert await batcher.submit(2) == 2


async def test_a_batch_never_exceeds_its_maximum_size() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(flush, max_size=3)
    await asyncio.gather(*(batcher.submit(n) for n in range(7)))
    assert sizes == [3, 3, 1]


@pytest.mark.parametrize("count", [1, 50])
async def test_results_keep_their_order(count: int) -> None:
    async def flush(items: list[int]) -> list[int]:
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(count))) == list(range(count))


async def test_a_failed_batch_does_not_strand_the_batches_queued_behind_it() -> None:
    async def flush(items: list[int]) -> list[int]:
        if items == [0]:
            raise RuntimeError("database down")
        return items

    batcher: Batcher[int, int] = Batcher(flush, max_size=1)
    outcomes = await asyncio.wait_for(asyncio.gather(batcher.submit(0), batcher.submit(1), return_exceptions=True), 1)
    assert isinstance(outcomes[0], RuntimeError) and outcomes[1] == 1


async def test_a_flush_that_never_returns_fails_its_batch_after_the_deadline_and_the_next_goes_through() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 0 in items:
            await asyncio.Event().wait()  # a database call that never answers
        return items

    batcher: Batcher[int, int] = Batcher(flush, deadline=0.2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(0), 5)
    assert await asyncio.wait_for(batcher.submit(1), 5) == 1


async def test_a_drain_cancelled_mid_flush_leaves_no_submitter_waiting() -> None:
    started = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        if 1 in items:
            started.set()
            await asyncio.Event().wait()
        return items

    batcher: Batcher[int, int] = Batcher(flush)
    first = asyncio.ensure_future(batcher.submit(1))
    await started.wait()
    second = asyncio.ensure_future(batcher.submit(2))  # queued behind the flush in progress
    assert batcher._draining is not None
    batcher._draining.cancel()
    outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert await asyncio.wait_for(batcher.submit(3), 5) == 3


async def test_a_flush_giving_too_few_results_fails_its_batch_instead_of_stranding_it() -> None:
    async def flush(items: list[int]) -> list[int]:
        return items[:1]

    batcher: Batcher[int, int] = Batcher(flush)
    outcomes = await asyncio.wait_for(
        asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True), 5)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


class FindCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.finds += event.command_name == "find"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_lookups_made_together_are_one_find_and_each_gets_its_own_documents(settings: Settings) -> None:
    counter = FindCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url, event_listeners=[counter],
                                                                timeoutMS=5000)
    async with client:
        collection = client[settings.database_name("lookups")]["devices"]
        await collection.insert_many([{"_id": f"d{n}", "n": n} for n in range(5)])
        lookup = Lookup(collection)
        one, missing, many = await asyncio.gather(lookup.one("d1"), lookup.one("nope"),
                                                  lookup.many(["d3", "d4", "d3", "gone"]))
        assert counter.finds == 1
        assert one == {"_id": "d1", "n": 1} and missing is None
        assert many == {"d3": {"_id": "d3", "n": 3}, "d4": {"_id": "d4", "n": 4}}
        await collection.update_one({"_id": "d1"}, {"$set": {"n": 10}})
        assert await lookup.one("d1") == {"_id": "d1", "n": 10}, "never from a cache"
