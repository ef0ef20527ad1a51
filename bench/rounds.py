"""The one harness of every round-trip figure: short cells of baseline and subject, alternating, each repeated.

A cell is `seconds` of calls at one concurrency after `warmup` unmeasured seconds (`bench.client`). The raw aio-pika
echo (the baseline) and each subject take turns, cell by cell: per repeat and concurrency raw, subject A, raw,
subject B, ..., so a neighbour's load or a slow minute hits both alike. Each figure is the median of its cells with
their range (min–max); a ratio is one of medians; a goal is met when the medians meet it.

After each cell of a subject the harness waits until the events of every accepted call are on `portal.events` (an
unconsumed queue counts them), so a relay's backlog never spills into the next cell; the wait is reported as the
outbox lag.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractQueue, HeadersType

from bench.client import Caller, Cell, Payload, body
from bench.server import RAW_QUEUE
from contracts.topology import EVENTS_EXCHANGE

BASELINE = "raw aio-pika"
GOAL_THROUGHPUT, GOAL_P99 = 0.5, 2.0  # subject / baseline: at least this share of calls/s, at most this p99
EVENT_WAIT = 300.0
# Seeds a subject's service before the rounds (runs while the other subjects seed theirs).
Prepare = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over the repeats of a cell."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        listed = list(values)
        return cls(statistics.median(listed), min(listed), max(listed))

    def text(self, digits: int = 0) -> str:
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"

    def json(self, digits: int = 1) -> dict[str, float]:
        return {"median": round(self.median, digits), "min": round(self.low, digits), "max": round(self.high, digits)}


def accepted(reply: bytes) -> bool:
    """The portal's reply envelope says ok (CATALOG: `{"ok": true, "data": ...}`)."""
    return bool(json.loads(reply).get("ok"))


@dataclass
class Subject:
    """What one series of cells calls, and what counts."""

    name: str
    routing_key: str
    pid: int  # the serving process, for its CPU share
    payload: Payload = field(default=lambda _caller, _concurrency: body(1))
    headers: HeadersType = field(default_factory=dict)
    accept: Callable[[bytes], bool] | None = accepted
    event: str | None = None  # published once per accepted call

    @classmethod
    def raw(cls, pid: int) -> Subject:
        return cls(BASELINE, RAW_QUEUE, pid, accept=None)


@dataclass
class Series:
    """The cells of one subject at one concurrency, one per repeat."""

    name: str
    concurrency: int
    cells: list[Cell] = field(default_factory=list)
    outbox_lag_s: list[float] = field(default_factory=list)

    def spread(self, figure: Callable[[Cell], float]) -> Spread:
        return Spread.of(figure(cell) for cell in self.cells)

    @property
    def calls_per_s(self) -> Spread:
        return self.spread(lambda cell: cell.calls_per_s)

    @property
    def p50_ms(self) -> Spread:
        return self.spread(lambda cell: cell.percentile_ms(0.5))

    @property
    def p99_ms(self) -> Spread:
        return self.spread(lambda cell: cell.percentile_ms(0.99))

    @property
    def errors(self) -> int:
        return sum(cell.errors for cell in self.cells)

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "concurrency": self.concurrency, "repeats": len(self.cells),
                "calls_per_s": self.calls_per_s.json(), "p50_ms": self.p50_ms.json(2), "p99_ms": self.p99_ms.json(2),
                "errors": self.errors, "cells": [cell.summary() for cell in self.cells],
                **({"outbox_lag_s": [round(lag, 2) for lag in self.outbox_lag_s]} if self.outbox_lag_s else {})}


@dataclass
class Ratio:
    name: str
    concurrency: int
    throughput: float
    p99: float

    @property
    def met(self) -> bool:
        return self.throughput >= GOAL_THROUGHPUT and self.p99 <= GOAL_P99

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "concurrency": self.concurrency, "throughput": round(self.throughput, 2),
                "p99": round(self.p99, 2), "meets_goal": self.met}


@dataclass
class Rounds:
    series: dict[tuple[str, int], Series]
    events: dict[str, tuple[int, int]]  # subject -> (accepted calls, events counted)

    def ratios(self, baseline: str = BASELINE) -> list[Ratio]:
        ratios = []
        for (name, concurrency), series in self.series.items():
            if name == baseline:
                continue
            base = self.series[baseline, concurrency]
            ratios.append(Ratio(name, concurrency, series.calls_per_s.median / base.calls_per_s.median,
                                series.p99_ms.median / base.p99_ms.median))
        return ratios

    def json(self) -> dict[str, Any]:
        return {"series": [series.json() for series in self.series.values()],
                "ratios": [ratio.json() for ratio in self.ratios()] if any(
                    name == BASELINE for name, _ in self.series) else [],
                "events": {name: {"accepted": ok, "events": count} for name, (ok, count) in self.events.items()}}


class EventQueues:
    """One unconsumed queue per event routing key: counting costs the measured processes nothing."""

    def __init__(self, amqp_url: str, routing_keys: Iterable[str]) -> None:
        self.amqp_url, self.routing_keys = amqp_url, sorted(set(routing_keys))
        self.queues: dict[str, AbstractQueue] = {}

    async def __aenter__(self) -> EventQueues:
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for key in self.routing_keys:
            self.queues[key] = await channel.declare_queue(f"bench.count.{uuid.uuid4().hex[:8]}", exclusive=True)
            await self.queues[key].bind(exchange, routing_key=key)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def count(self, routing_key: str) -> int:
        return (await self.queues[routing_key].declare()).message_count or 0

    async def reach(self, routing_key: str, target: int) -> float:
        """Seconds until `target` events arrived (or EVENT_WAIT passed: the count then tells)."""
        started = time.monotonic()
        while time.monotonic() - started < EVENT_WAIT:
            if await self.count(routing_key) >= target:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - started


async def interleave(amqp_url: str, turns: Sequence[Sequence[Subject]], concurrencies: Sequence[int], repeats: int,
                     seconds: float, warmup: float, watch: dict[str, int]) -> Rounds:
    """Per repeat and concurrency, one cell of each subject of each turn in order (e.g. [[raw, a], [raw, b]]);
    `watch` names further pids whose CPU each cell reports (the database, the client)."""
    series: dict[tuple[str, int], Series] = {}
    accepted_calls: dict[str, int] = defaultdict(int)
    subjects = {subject.name: subject for turn in turns for subject in turn}
    async with Caller(amqp_url) as caller, EventQueues(
            amqp_url, [subject.event for subject in subjects.values() if subject.event]) as events:
        for subject in subjects.values():  # one call first, so one-off costs (first queries, caches) land in none
            reply = await caller.call(subject.routing_key, subject.payload(0, 1), subject.headers)
            if subject.event is not None and reply is not None and (subject.accept is None or subject.accept(reply)):
                accepted_calls[subject.name] += 1
        for repeat in range(repeats):
            print(f"  repeat {repeat + 1} of {repeats} ...", flush=True)
            for concurrency in concurrencies:
                for turn in turns:
                    for subject in turn:
                        cell = await caller.cell(subject.routing_key, concurrency, seconds, warmup,
                                                 {"server": subject.pid, **watch}, payload=subject.payload,
                                                 accept=subject.accept, headers=subject.headers)
                        measured = series.setdefault((subject.name, concurrency), Series(subject.name, concurrency))
                        measured.cells.append(cell)
                        if subject.event is not None:
                            accepted_calls[subject.name] += cell.replies
                            measured.outbox_lag_s.append(await events.reach(subject.event,
                                                                            accepted_calls[subject.name]))
        counted = {name: (accepted_calls[name], await events.count(subjects[name].event or ""))
                   for name in accepted_calls}
    return Rounds(series, counted)


def print_rounds(rounds: Rounds, title: str) -> None:
    print(f"\n{title}\n")
    print("| server | c | calls/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for series in sorted(rounds.series.values(), key=lambda series: (series.concurrency, series.name != BASELINE)):
        print(f"| {series.name} | {series.concurrency} | {series.calls_per_s.text()} | {series.p50_ms.text(2)} "
              f"| {series.p99_ms.text(2)} | {series.errors} |")
    ratios = rounds.ratios() if any(name == BASELINE for name, _ in rounds.series) else []
    if ratios:
        print(f"\nGoal: at least {GOAL_THROUGHPUT}x the baseline's calls/s and a p99 within {GOAL_P99}x, "
              "medians against medians:")
        for ratio in ratios:
            print(f"  {ratio.name} c={ratio.concurrency}: throughput {ratio.throughput:.2f}x, p99 {ratio.p99:.2f}x "
                  f"-> {'met' if ratio.met else 'MISSED'}")
    for name, (ok, count) in rounds.events.items():
        lags = [lag for (series_name, _), series in rounds.series.items() if series_name == name
                for lag in series.outbox_lag_s]
        print(f"  {name}: {ok:,} calls accepted, {count:,} events published"
              f"{'' if count == ok else ' (WARNING: they differ)'}; outbox empty {max(lags):.2f} s after a cell "
              "at most")
