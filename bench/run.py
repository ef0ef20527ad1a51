"""`make bench`: what the shared runtime costs per command, against a raw aio-pika echo server.

One run brings its own world: a fresh vhost on the RabbitMQ at 127.0.0.1:5672 (or a private
node when none listens) and an nx-27017 on a free port in a temp dir, both removed at the end.
Each server runs in its own process (`bench.server`) and is driven by the same raw client
(`bench.client`) at each concurrency for `--seconds` after a warm-up:

- raw: an aio-pika echo (durable queue on the topic exchange, prefetch 32), the floor;
- runtime: the `bench` service's `bench.write` (claim by message_id, one upsert, stored reply).

Before those: bulk registration (`bench.bulk`) and the installed-base import (`bench.import_base`);
after them, the metering service (`bench.metering`: single readings against the same raw echo, a
10,000-row readings file, the reminder run for 100,000 devices) and `ordering.place_order` against the
raw echo (`bench.ordering`). `--only bulk|import|runtime|metering|ordering` runs one part.

Goal: runtime throughput >= 0.5x raw and runtime p99 <= 2x raw p99. Figures go to the console
and to bench/results/latest.json (the parts a run ran; the others null). `--profile` adds a separate
run of the runtime server under pyinstrument (so the table stays unprofiled) and writes
bench/results/profile.txt and .html, and one per metering part (bench/results/metering-*/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.bulk import SIZES, BulkRun, print_bulk, run_bulk
from bench.client import Caller, Cell
from bench.import_base import STEPS, ImportRun, print_import, run_import
from bench.metering import MeteringReport, metering_json, print_metering, run_metering
from bench.ordering import OrderingRun, ordering_json, print_ordering, run_ordering
from bench.server import RAW_QUEUE, launched
from bench.service import COLLECTION, Write, service
from deploy.local import deps

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCIES = (1, 32)
GOAL_THROUGHPUT, GOAL_P99 = 0.5, 2.0  # runtime/raw: at least this share of calls/s, at most this p99


@contextmanager
def rabbitmq_vhost(tmp: Path) -> Iterator[str]:
    """The URL of a fresh vhost, deleted afterwards, so the shared broker keeps nothing of ours."""
    node: deps.LocalRabbitMQ | None = None
    if deps.rabbitmq_running():
        base_url = f"amqp://guest:guest@{deps.RABBITMQ_HOST}:{deps.RABBITMQ_PORT}/"
        vhosts = deps.VirtualHosts()
    else:
        node = deps.LocalRabbitMQ(tmp / "rabbitmq")
        node.start()
        base_url, vhosts = node.url, node.vhosts()
    vhost = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        vhosts.create(vhost)
        try:
            yield deps.with_vhost(base_url, vhost)
        finally:
            vhosts.delete(vhost)
    finally:
        if node is not None:
            node.stop()


@contextmanager
def nx_27017(tmp: Path) -> Iterator[tuple[str, int]]:
    """A private nx-27017: its URL and pid (the runtime's writes cost CPU there too)."""
    process, url = deps.start_nx_27017(tmp / "nx-27017", deps.free_port())
    try:
        yield url, process.pid
    finally:
        deps.stop_process(process)


async def measure(amqp_url: str, routing_key: str, watch: dict[str, int], concurrencies: Sequence[int],
                  seconds: float, warmup: float) -> list[Cell]:
    async with Caller(amqp_url) as caller:
        return [await caller.cell(routing_key, c, seconds, warmup, watch) for c in concurrencies]


def count_writes(mongo_url: str, prefix: str) -> int:
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_url, timeoutMS=10_000) as client:
        return client[f"{prefix}{service.name}"][COLLECTION].count_documents({})


def ratios(raw: list[Cell], runtime: list[Cell]) -> list[dict[str, Any]]:
    rows = []
    for base, ours in zip(raw, runtime, strict=True):
        throughput = ours.calls_per_s / base.calls_per_s
        p99 = ours.percentile_ms(0.99) / base.percentile_ms(0.99)
        rows.append({"concurrency": base.concurrency, "throughput": round(throughput, 2),
                     "p99": round(p99, 2), "meets_goal": throughput >= GOAL_THROUGHPUT and p99 <= GOAL_P99})
    return rows


def print_report(cells: dict[str, list[Cell]], rows: list[dict[str, Any]]) -> None:
    print("\n| server | c | calls/s | p50 ms | p99 ms | errors | CPU % server / nx-27017 / client |")
    print("|---|---|---|---|---|---|---|")
    for name, results in cells.items():
        for cell in results:
            cpu = cell.cpu_percent
            print(f"| {name} | {cell.concurrency} | {cell.calls_per_s:,.0f} | {cell.percentile_ms(0.5):.2f} "
                  f"| {cell.percentile_ms(0.99):.2f} | {cell.errors} | {cpu.get('server', 0):.0f} "
                  f"/ {cpu.get('nx', 0):.0f} / {cpu.get('client', 0):.0f} |")
    print(f"\nGoal: runtime throughput >= {GOAL_THROUGHPUT}x raw and runtime p99 <= {GOAL_P99}x raw p99.")
    for row in rows:
        print(f"  c={row['concurrency']}: throughput {row['throughput']:.2f}x, p99 {row['p99']:.2f}x "
              f"-> {'met' if row['meets_goal'] else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of metering.submit_reading and the raw echo (default 3; medians)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the runtime server (c=32) and the metering service in each of its parts")
    parser.add_argument("--only", choices=("runtime", "bulk", "import", "metering", "ordering"),
                        help="run one part only")
    args = parser.parse_args()

    cells: dict[str, list[Cell]] = {}
    writes: dict[str, int] | None = None
    bulk_runs: list[BulkRun] | None = None
    imported: tuple[float, list[ImportRun]] | None = None
    metering: MeteringReport | None = None
    ordering: OrderingRun | None = None
    with (tempfile.TemporaryDirectory(prefix="bench-") as tmp, rabbitmq_vhost(Path(tmp)) as amqp_url,
          nx_27017(Path(tmp)) as (mongo_url, nx_pid)):
        if args.only in (None, "bulk"):
            print(f"bulk registration, {' and '.join(f'{rows:,}' for rows in SIZES)} rows ...", flush=True)
            bulk_runs = run_bulk(amqp_url, mongo_url)
            print_bulk(bulk_runs)
        if args.only in (None, "import"):
            print("installed-base import, " + ", ".join(f"{count:,} {kind}" for count, _, kind in STEPS) + " ...",
                  flush=True)
            imported = run_import(amqp_url, mongo_url)
            print_import(*imported)
        if args.only in (None, "runtime"):
            cells, writes = run_runtime(amqp_url, mongo_url, nx_pid, args.seconds, args.warmup, args.profile)
        if args.only in (None, "metering"):
            metering = run_metering(amqp_url, mongo_url, nx_pid, seconds=args.seconds, warmup=args.warmup,
                                    rounds=args.rounds, profile=RESULTS if args.profile else None)
        if args.only in (None, "ordering"):
            ordering = run_ordering(amqp_url, mongo_url, nx_pid, args.seconds, args.warmup)

    rows = ratios(cells["raw"], cells["runtime"]) if cells else None
    if rows is not None and writes is not None:
        print_report(cells, rows)
        if writes["replies"] != writes["documents"]:
            print(f"WARNING: {writes['replies']} runtime replies but {writes['documents']} documents written")
    if metering is not None:
        print_metering(metering)
    if ordering is not None:
        print_ordering(ordering)
    RESULTS.mkdir(exist_ok=True)
    # Every run writes the parts it ran; the others are null.
    (RESULTS / "latest.json").write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_per_cell": args.seconds, "warmup_seconds": args.warmup,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "goal": {"throughput_at_least": GOAL_THROUGHPUT, "p99_at_most": GOAL_P99},
        "results": {name: [cell.summary() for cell in results] for name, results in cells.items()} or None,
        "ratios": rows, "runtime_writes": writes,
        "bulk": [{**vars(run), "rows_per_s": round(run.rows_per_s)} for run in bulk_runs]
        if bulk_runs is not None else None,
        "import": {"idle_rss_mb": imported[0], "runs": [{**vars(run), "devices_per_s": round(run.devices_per_s)}
                                                        for run in imported[1]]} if imported is not None else None,
        "metering": metering_json(metering) if metering is not None else None,
        "ordering": ordering_json(ordering) if ordering is not None else None,
    }, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS / 'latest.json'}")


def run_runtime(amqp_url: str, mongo_url: str, nx_pid: int, seconds: float, warmup: float,
                profile: bool) -> tuple[dict[str, list[Cell]], dict[str, int]]:
    """The raw echo, then `bench.write` through the runtime; the cells, and replies against documents written."""
    cells: dict[str, list[Cell]] = {}
    watch = {"nx": nx_pid, "client": os.getpid()}
    print(f"raw echo server, c={CONCURRENCIES}, {seconds:g} s each ...", flush=True)
    with launched("raw", amqp_url) as pid:
        cells["raw"] = asyncio.run(measure(amqp_url, RAW_QUEUE, {"server": pid, **watch}, CONCURRENCIES,
                                           seconds, warmup))
    print(f"runtime service ({Write.routing_key}), c={CONCURRENCIES}, {seconds:g} s each ...", flush=True)
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    with launched("runtime", amqp_url, mongo_url, prefix) as pid:
        cells["runtime"] = asyncio.run(measure(amqp_url, Write.routing_key, {"server": pid, **watch},
                                               CONCURRENCIES, seconds, warmup))
    # Every reply must stand for one stored document, else the runtime was not doing the work.
    writes = {"replies": sum(cell.replies for cell in cells["runtime"]),
              "documents": count_writes(mongo_url, prefix)}
    if profile:
        print("runtime service under pyinstrument, c=32 ...", flush=True)
        with launched("runtime", amqp_url, mongo_url, f"bench{uuid.uuid4().hex[:8]}_",
                      "--profile", str(RESULTS)) as pid:
            profiled = asyncio.run(measure(amqp_url, Write.routing_key, {"server": pid}, (32,), seconds, warmup))
        print(f"  profiled: {profiled[0].calls_per_s:,.0f} calls/s; "
              f"wrote {RESULTS / 'profile.txt'} and profile.html")
    return cells, writes
