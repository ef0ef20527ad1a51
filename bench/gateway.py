"""The HTTP gateway's added cost: the same two commands over HTTP through the gateway and through `PortalClient`.

- A device listing: `registration.list_devices` (one page, the `LISTED_DEVICES` installed-base devices of one
  customer, imported through `registration.operator.import_installed_base`) beside `GET /api/v1/devices`.
- A reading submission: `metering.submit_reading` (the round trips' devices and readings, `bench.metering`) beside
  `POST /api/v1/devices/{device_id}/readings` with a fresh `Idempotency-Key` per call. Both ways take turns over
  one `Readings`, so every reading stays above the device's last one.

Registration, metering and the gateway (`bench.server gateway`: uvicorn as `python -m gateway` runs it) are each
their own process. This process drives both ways: one `PortalClient` (the baseline: what the gateway itself uses)
and one `httpx.AsyncClient` with a keep-alive pool of as many connections as callers. Per repeat and concurrency the
cells alternate PortalClient, HTTP for the listing, then for the submission (`bench.client.measure`, the harness's
cells), and after each submission cell the harness waits for its events as in the round trips. Reported: each
series' median and range, and per command and concurrency HTTP ÷ PortalClient of the median calls/s and p99. The
HTTP client's own cost (httpx in this process) is part of the HTTP figures, as a browser's or an app's would be.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bench.client import CALL_TIMEOUT, Call, measure
from bench.metering import Readings, prepare_submit, submit_fleet
from bench.plan import Plan
from bench.registration import installed_base
from bench.rounds import EventQueues, Rounds, Series, print_rounds
from bench.server import launched
from bench.world import TIMEOUT, World, fresh_prefix, wait_ready
from contracts import metering, registration
from contracts.client import NotDelivered, PortalClient, PortalError
from deploy.local import deps
from deploy.local.demo import OKI_MODELS
from gateway.routes import PREFIX
from services.runtime.tokens import Role

LISTED_DEVICES = 20  # installed_base: the first 20 devices are one customer's, one page of the listing
LISTING_CUSTOMER = "C-000000"
SUBMIT_CUSTOMER = "C-SUBMIT"  # bench.metering.submit_fleet
BASELINE_CLIENT = "PortalClient"


@dataclass(frozen=True)
class Way:
    """One way to make a call: its series' name and the call; `event` is published once per accepted call."""

    name: str
    call: Call
    event: str | None = None


@dataclass(frozen=True)
class Pair:
    """The same command through `PortalClient` (the baseline) and over HTTP through the gateway."""

    command: str
    portal: Way
    http: Way


@dataclass(frozen=True)
class GatewayRatio:
    command: str
    concurrency: int
    throughput: float  # HTTP calls/s ÷ PortalClient calls/s, medians
    p99: float  # HTTP p99 ÷ PortalClient p99, medians

    def json(self) -> dict[str, Any]:
        return {"command": self.command, "concurrency": self.concurrency, "throughput": round(self.throughput, 2),
                "p99": round(self.p99, 2)}


@dataclass
class GatewayRun:
    pairs: list[Pair]
    rounds: Rounds

    def ratios(self) -> list[GatewayRatio]:
        ratios = []
        for (name, concurrency), series in self.rounds.series.items():
            pair = next((pair for pair in self.pairs if pair.http.name == name), None)
            if pair is None:
                continue
            base = self.rounds.series[pair.portal.name, concurrency]
            ratios.append(GatewayRatio(pair.command, concurrency,
                                       series.calls_per_s.median / base.calls_per_s.median,
                                       series.p99_ms.median / base.p99_ms.median))
        return ratios

    def json(self) -> dict[str, Any]:
        return {"series": [series.json() for series in self.rounds.series.values()],
                "ratios": [ratio.json() for ratio in self.ratios()],
                "events": {name: {"accepted": ok, "events": count} for name, (ok, count) in self.rounds.events.items()}}


def portal_way(portal: PortalClient, name: str, command: str, token: str,
               payload: Any, event: str | None = None) -> Way:
    """`payload(caller, concurrency)` makes each call's fields."""
    async def call(index: int, concurrency: int) -> bool:
        try:
            await portal.call(command, payload(index, concurrency), token=token)
        except (PortalError, NotDelivered, TimeoutError):
            return False
        return True

    return Way(f"{BASELINE_CLIENT}: {name}", call, event)


def listing_ways(portal: PortalClient, http: httpx.AsyncClient, token: str) -> Pair:
    async def over_http(_index: int, _concurrency: int) -> bool:
        try:
            response = await http.get(f"{PREFIX}/devices", headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and len(response.json()["items"]) == LISTED_DEVICES

    command = registration.ListDevices.routing_key
    return Pair(command, portal_way(portal, command, command, token, lambda _index, _concurrency: {}),
                Way(f"HTTP: GET {PREFIX}/devices", over_http))


def submit_ways(portal: PortalClient, http: httpx.AsyncClient, token: str, readings: Readings) -> Pair:
    def fields(index: int, concurrency: int) -> dict[str, Any]:
        submitted: dict[str, Any] = json.loads(readings(index, concurrency))
        return submitted

    async def over_http(index: int, concurrency: int) -> bool:
        body = fields(index, concurrency)
        try:
            response = await http.post(f"{PREFIX}/devices/{body.pop('device_id')}/readings", json=body,
                                       headers={"authorization": f"Bearer {token}",
                                                "idempotency-key": uuid.uuid4().hex})
        except httpx.HTTPError:
            return False
        return response.status_code == 201

    command, event = metering.SubmitReading.routing_key, metering.ReadingSubmitted.routing_key
    return Pair(command, portal_way(portal, command, command, token, fields, event),
                Way(f"HTTP: POST {PREFIX}/devices/{{device_id}}/readings", over_http, event))


@contextmanager
def gateway_process(world: World) -> Iterator[tuple[str, int]]:
    """The gateway on a free port of 127.0.0.1: its URL and pid."""
    port = deps.free_port()
    with launched("gateway", env=world.env("", gateway_host="127.0.0.1", gateway_port=str(port),
                                           gateway_command_timeout=str(CALL_TIMEOUT))) as pid:
        yield f"http://127.0.0.1:{port}", pid


async def seed(world: World, plan: Plan, metering_database: str) -> list[str]:
    """Registration's listed devices and metering's submitting fleet; the fleet's device ids."""
    fleet = submit_fleet(plan.submit_devices)
    async with PortalClient(world.amqp_url, timeout=TIMEOUT) as portal:
        await wait_ready(portal, "registration", "metering")
        operator = world.token(Role.OPERATOR)
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
        imported, _ = await asyncio.gather(
            portal.call("registration.operator.import_installed_base",
                        {"devices": installed_base(LISTED_DEVICES, 0)}, token=operator),
            prepare_submit(world, metering_database, fleet))
    assert imported["imported"] == LISTED_DEVICES, imported
    return [event.device_id for event in fleet]


async def interleave_ways(world: World, plan: Plan, url: str, device_ids: list[str],
                          watch: dict[str, int]) -> GatewayRun:
    series: dict[tuple[str, int], Series] = {}
    accepted: dict[str, int] = defaultdict(int)  # per event: both ways of a command publish the same
    pool = httpx.Limits(max_connections=max(plan.concurrencies), max_keepalive_connections=max(plan.concurrencies))
    async with (PortalClient(world.amqp_url, timeout=CALL_TIMEOUT) as portal,
                httpx.AsyncClient(base_url=url, limits=pool, timeout=CALL_TIMEOUT) as http,
                EventQueues(world.amqp_url, [metering.ReadingSubmitted.routing_key]) as events):
        pairs = [listing_ways(portal, http, world.token(customer_number=LISTING_CUSTOMER)),
                 submit_ways(portal, http, world.token(customer_number=SUBMIT_CUSTOMER), Readings(device_ids))]
        ways = [way for pair in pairs for way in (pair.portal, pair.http)]
        for way in ways:  # one call first, so one-off costs (connections, first queries) land in no cell
            if not await way.call(0, 1):
                raise RuntimeError(f"{way.name}: the first call was refused")
            if way.event is not None:
                accepted[way.event] += 1
        for repeat in range(plan.repeats):
            print(f"  repeat {repeat + 1} of {plan.repeats} ...", flush=True)
            for concurrency in plan.concurrencies:
                for way in ways:
                    cell = await measure(way.call, concurrency, plan.seconds, plan.warmup, watch)
                    measured = series.setdefault((way.name, concurrency), Series(way.name, concurrency))
                    measured.cells.append(cell)
                    if way.event is not None:  # its events out before the next cell, as in the round trips
                        accepted[way.event] += cell.replies
                        measured.outbox_lag_s.append(await events.reach(way.event, accepted[way.event]))
        counted = {event: (calls, await events.count(event)) for event, calls in accepted.items()}
    return GatewayRun(pairs, Rounds(series, counted))


def run_gateway(world: World, plan: Plan) -> GatewayRun:
    prefix = fresh_prefix("gateway")
    with (world.services(("registration", "metering"), prefix) as (registration_pid, metering_pid),
          gateway_process(world) as (url, gateway_pid)):

        async def drive() -> GatewayRun:
            started = time.monotonic()
            device_ids = await seed(world, plan, f"{prefix}metering")
            print(f"  services seeded in {time.monotonic() - started:.0f} s", flush=True)
            return await interleave_ways(world, plan, url, device_ids, {
                "gateway": gateway_pid, "registration": registration_pid, "metering": metering_pid,
                "nx": world.nx_pid, "client": os.getpid()})

        return asyncio.run(drive())


def print_gateway(run: GatewayRun, plan: Plan) -> None:
    # The series table without the round trips' events lines: those are printed here, per event.
    print_rounds(Rounds(run.rounds.series, {}),
                 f"The gateway: cells of {plan.seconds:g} s after {plan.warmup:g} s warm-up alternating (PortalClient, "
                 f"HTTP) per command, {plan.repeats} times per concurrency; median (range) of each one's cells")
    print("\nHTTP through the gateway ÷ PortalClient, medians against medians:\n")
    print("| command | c | calls/s ratio | p99 ratio |")
    print("|---|---|---|---|")
    for ratio in sorted(run.ratios(), key=lambda ratio: (ratio.concurrency, ratio.command)):
        print(f"| {ratio.command} | {ratio.concurrency} | {ratio.throughput:.2f}x | {ratio.p99:.2f}x |")
    lags = [lag for series in run.rounds.series.values() for lag in series.outbox_lag_s]
    for event, (ok, count) in run.rounds.events.items():
        print(f"\n  {event}: {ok:,} calls accepted (both ways), {count:,} events published"
              f"{'' if count == ok else ' (WARNING: they differ)'}; outbox empty {max(lags):.2f} s after a cell "
              "at most")
