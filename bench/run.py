"""`make bench`: the round trips of three commands against raw aio-pika, competing consumers, bulk work, the reminder
run and the notifier's mail throughput, on a fresh nx-27017 and a fresh vhost per part (`bench.world`).

Parts (`--only PART` runs one):
- roundtrip: the raw aio-pika echo at c=1 and c=32 beside `metering.submit_reading`, `ordering.place_order` and
  `ticketing.open_ticket` end to end, alternating in short cells, each repeated (`bench.roundtrip`, `bench.rounds`);
- replicas: `submit_reading` at c=32 with 1, 2 and 4 metering replicas (`bench.metering.run_replicas`);
- bulk: a 10,000-row readings file (`bench.metering.run_file`), a 25-device Excel registration and 10,000
  installed-base devices (`bench.registration`), each repeated;
- reminders: the reminder run for 100,000 devices (`bench.metering.run_reminders`);
- mail: the notifier's mail throughput to a local SMTP sink (`bench.notifier`);
- gateway: a device listing and a reading submission over HTTP through the gateway beside the same commands through
  `PortalClient`, at c=1 and c=32, alternating cell by cell, as ratios (`bench.gateway`).

Every figure is a median with its range (min–max) over the repeats; a goal is met when the median meets it. The
table goes to the console and everything to bench/results/latest.json (git-ignored: figures belong to a machine),
with the machine's core count, Python version, date and git commit. `--quick` runs every part small and short, a smoke
run (tests/test_bench_smoke.py); `--profile` has each service process write a pyinstrument profile to
bench/results/profile/ (which slows it: the figures of such a run are not comparable).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import gateway, metering, notifier, registration
from bench.plan import FULL, QUICK, Plan
from bench.rounds import print_rounds
from bench.roundtrip import run_roundtrip
from bench.world import World, nx_27017, rabbitmq

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("roundtrip", "replicas", "bulk", "reminders", "mail", "gateway")


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_part(part: str, world: World, plan: Plan) -> dict[str, Any]:
    """Measure one part, print its tables; what goes into latest.json."""
    if part == "roundtrip":
        rounds = run_roundtrip(world, plan)
        print_rounds(rounds, f"Round trips: cells of {plan.seconds:g} s after {plan.warmup:g} s warm-up alternating "
                             "(raw, runtime, raw, metering, raw, ordering, raw, ticketing) "
                             f"{plan.repeats} times per concurrency; "
                             "median (range) of each one's cells")
        return rounds.json()
    if part == "replicas":
        replicas = metering.run_replicas(world, plan)
        metering.print_replicas(replicas)
        return {"series": [series.json() for series in replicas], "note": metering.TWO_CORES}
    if part == "bulk":
        readings = metering.run_file(world, plan)
        metering.print_file(readings)
        registered = registration.run_registration(world, plan)
        registration.print_registration(registered)
        return {"readings_file": readings.json(), **registered.json()}
    if part == "reminders":
        reminders = metering.run_reminders(world, plan)
        metering.print_reminders(reminders)
        return reminders.json()
    if part == "gateway":
        measured = gateway.run_gateway(world, plan)
        gateway.print_gateway(measured, plan)
        return measured.json()
    mail = notifier.run_mail(world, plan)
    notifier.print_mail(mail)
    return mail.json()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--only", choices=PARTS, help="run one part only")
    parser.add_argument("--quick", action="store_true", help="every part small and short: a smoke run, no figures")
    parser.add_argument("--profile", action="store_true",
                        help="each service process writes a pyinstrument profile to bench/results/profile/")
    parser.add_argument("--results", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    parts = (args.only,) if args.only else PARTS
    commit = git_commit()  # of the code that runs, whatever happens to the work tree meanwhile
    started = time.monotonic()
    print(f"python -m bench{' --quick' if args.quick else ''}: {', '.join(parts)} on {os.cpu_count()} cores",
          flush=True)

    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with (tempfile.TemporaryDirectory(prefix="bench-") as tmp, rabbitmq(Path(tmp)) as fresh_vhost,
          nx_27017(Path(tmp)) as (mongo_url, nx_pid)):
        for part in parts:
            print(f"\n== {part} ...", flush=True)
            part_started = time.monotonic()
            # A vhost per part: the durable queues of one part's services must not hand its events to the next's.
            with fresh_vhost() as amqp_url:
                world = World(amqp_url, mongo_url, nx_pid, secrets.token_hex(32),
                              profile=RESULTS / "profile" if args.profile else None)
                results[part] = run_part(part, world, plan)
            timings[part] = time.monotonic() - part_started

    total = time.monotonic() - started
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": commit,
        "cpus": os.cpu_count(), "python": platform.python_version(), "quick": args.quick, "profiled": args.profile,
        "plan": plan.json(), "seconds": {**{part: round(seconds, 1) for part, seconds in timings.items()},
                                         "total": round(total, 1)},
        "results": results,
    }, indent=2, default=str) + "\n")
    print(f"\nwrote {args.results}; {os.cpu_count()} cores, Python {platform.python_version()}; took "
          + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in timings.items())
          + f"; total {total // 60:.0f} min {total % 60:.0f} s")
