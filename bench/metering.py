"""Metering benchmark (`python -m bench --only metering`, and part of `make bench`): the metering service as its own
process (`python -m bench.server service metering`: the real `services.metering` app, its settings from `PORTAL_*`
variables with a token secret made for the run), on the benchmark's vhost and nx-27017, a fresh database per part.

1. `metering.submit_reading` end to end (command to reply) against the raw echo, at concurrency 1 and 32, in
   `--rounds` interleaved rounds (raw c=1, metering c=1, raw c=32, metering c=32, ...) and reported as medians, so a
   neighbour's load hits both alike. 512 devices of one customer, seeded through `accounts.customer.provisioned` and
   `registration.device.provisioned` events; caller i of c takes devices i, i + c, ... in turn, each reading above
   the device's last one (no two callers on one device). After each metering cell the next waits until the outbox
   of `readings` is empty (its lag is reported); the stored readings and the `metering.reading.submitted` events are
   counted against the accepted replies. Goal: throughput >= 0.5x raw, p99 <= 2x raw p99. (On nx-27017 the figure
   depends on the 512: the caller's device is looked up with an `$and`/`$or` filter, which it matches in Python over
   the whole `devices` collection.)
2. `metering.submit_bulk` with a 10,000-row xlsx (`READING_SHEET_COLUMNS`; 5,000 devices x 2 counters), to the reply
   and to the last `metering.reading.submitted`. Goal: >= 2,000 rows/s, and memory flat beyond the file: the
   service's peak RSS (VmHWM) after the file, less its peak after a 1,000-row upload of other devices (one full batch
   of `PORTAL_METERING_BATCH_DEVICES`, so one batch's working set and the one-off costs are paid), at most 3x the
   file's unpacked size (the xlsx is zip-compressed about 10:1; parsed rows are about that size again).
3. `metering.operator.run_reminders` for 100,000 devices with reminders on (quarterly contracts), 5 devices per
   recipient (20,000 e-mail addresses over 2,000 customers), `as_of` the opening day of the current quarter's
   window (2026-12-24 for a run in the fourth quarter of 2026): the command's time, and the time from sending it to
   the last `metering.reminder.due` on `portal.events`. Goal: < 30 s.

Devices and customers of parts 2 and 3 are written into metering's `devices` and `customers` directly: events would
take minutes for 100,000. Each document is what `handlers.remember_device` / `remember_customer` store for the
equivalent event, captured from the handlers themselves (a stand-in collection records their upsert), so the shape
cannot drift from the service's. The service's scheduler has run its day before seeding (and then waits a day), so
only the measured command works on them. `--profile` adds, per part, a separate run of the service under
pyinstrument on the same data, written to bench/results/metering-{submit,bulk,reminders}/. The service mostly waits
there (`epoll.poll`): nx-27017, single-threaded, is the bottleneck, so time the store's calls to see which query.

Where the time went on 2026-12-03 (2 shared cores; every goal missed): nx-27017 evaluates a filter holding `$and` or
`$or` in Python over the whole collection, which hits `own_device` (`visible_to`: 12-15 us per stored device per call)
and `MeteringStore.advance_caches` (`$or` on `last_seq`: 22 of 26 s of the file); the reminder run reads all 100,000
devices into memory (~14 s on nx-27017, 585 MB peak RSS), inserts 20,000 reminder documents (~10 s), and the outbox
relay then re-reads, publishes one at a time with a confirm each, and clears them (~17 s for 20,000).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import statistics
import time
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import aio_pika
import openpyxl  # type: ignore[import-untyped, unused-ignore]

from bench.bulk import peak_rss_mb
from bench.client import Caller, Cell
from bench.server import RAW_QUEUE, launched
from contracts import metering as api
from contracts.accounts import Contract, CustomerProvisioned
from contracts.base import Event, FileObject
from contracts.client import PortalClient
from contracts.registration import CounterReading, DeviceProvisioned, Location, ReminderRecipient
from contracts.topology import EVENTS_EXCHANGE
from deploy.local import deps
from services.metering import handlers, periods
from services.metering.sheets import XLSX
from services.metering.store import CUSTOMERS, DEVICES, READINGS, REMINDERS, SCHEDULE
from services.runtime.events import EventContext
from services.runtime.instance import Instance
from services.runtime.mongo import Database, Document, mongo_client
from services.runtime.tokens import Role, issue_token

CONCURRENCIES = (1, 32)
SUBMIT_DEVICES = 512
BULK_DEVICES, COUNTERS = 5_000, ("mono", "color")
REMINDER_DEVICES, DEVICES_PER_RECIPIENT, RECIPIENTS_PER_CUSTOMER = 100_000, 5, 10
GOAL_THROUGHPUT, GOAL_P99 = 0.5, 2.0  # metering/raw
GOAL_ROWS_PER_S, GOAL_MEMORY_PER_UNPACKED = 2_000, 3.0
# The upload before the measured one: a full batch of `metering_batch_devices` (500 devices, 1,000 rows), so what one
# batch holds and the one-off costs (imports, thread pool, caches) are paid before, and the growth left is per row.
WARM_UP_DEVICES = 500
GOAL_REMINDER_SECONDS = 30.0
SEED_BATCH = 1_000
TIMEOUT = 900.0  # for a command or its events: generous, so a missed goal is still measured
T = TypeVar("T")


# --- the world of one part -------------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    amqp_url: str
    mongo_url: str
    nx_pid: int
    secret: str

    def env(self, prefix: str) -> dict[str, str]:
        """The metering process's variables: its own database, the run's token secret, quiet logs, and a scheduler
        that runs its day at start and then waits a day (the benchmark runs the reminders itself)."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
        return {**inherited, "PORTAL_AMQP_URL": self.amqp_url, "PORTAL_MONGODB_URL": self.mongo_url,
                "PORTAL_DATABASE_PREFIX": prefix, "PORTAL_TOKEN_SECRET": self.secret, "PORTAL_LOG_LEVEL": "WARNING",
                "PORTAL_METERING_SCHEDULER_SECONDS": "86400"}

    def token(self, role: Role = Role.CUSTOMER, customer_number: str | None = None) -> str:
        token, _ = issue_token(self.secret, user_id=f"bench-{uuid.uuid4().hex[:8]}", role=role,
                               now=datetime.now(UTC), lifetime=timedelta(hours=2), customer_number=customer_number)
        return token


def fresh_prefix(part: str) -> str:
    return f"metering{part}{uuid.uuid4().hex[:6]}_"


def today() -> date:
    return datetime.now(UTC).date()


async def scheduled_today(db: Database, timeout: float = 60) -> None:
    """Wait until the service's scheduler ran today's schedule (on whatever the database held then)."""
    deadline = time.monotonic() + timeout
    while (state := await db[SCHEDULE].find_one({"_id": "daily"})) is None or state.get("last_day") != \
            today().isoformat():
        if time.monotonic() > deadline:
            raise deps.DependencyError("metering's scheduler did not run its day")
        await asyncio.sleep(0.1)


async def publish_events(amqp_url: str, events: Sequence[Event]) -> None:
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for event in events:
            await exchange.publish(aio_pika.Message(event.model_dump_json().encode(), content_type="application/json",
                                                    message_id=uuid.uuid4().hex,
                                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   routing_key=event.routing_key)


class EventCounter:
    """The events under one routing key on `portal.events`, kept (bodies) or just counted, with the last arrival."""

    def __init__(self, amqp_url: str, routing_key: str, *, keep: bool = False) -> None:
        self.amqp_url, self.routing_key, self.keep = amqp_url, routing_key, keep
        self.count, self.last = 0, 0.0
        self.bodies: list[bytes] = []

    async def __aenter__(self) -> EventCounter:
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=self.routing_key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.count += 1
        self.last = time.monotonic()
        if self.keep:
            self.bodies.append(message.body)

    async def reached(self, target: int, timeout: float = TIMEOUT) -> float | None:
        """The monotonic time the `target`-th event arrived; None when it did not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.count < target:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.last


# --- read-model documents as the handlers store them ------------------------------------------------------

class _Recorder:
    """Stands in for a collection: records the upsert a store method makes, writes nothing."""

    def __init__(self) -> None:
        self.upserts: list[Document] = []

    async def update_one(self, query: Document, update: Document, upsert: bool = False) -> None:
        unknown = set(update) - {"$set", "$setOnInsert"}
        if not upsert or unknown:
            raise AssertionError(f"metering's read model changed its write ({sorted(unknown)}): update bench.metering")
        self.upserts.append({"_id": query["_id"], **update.get("$set", {}), **update.get("$setOnInsert", {})})


class _RecordingDb(dict[str, _Recorder]):
    def __missing__(self, name: str) -> _Recorder:
        self[name] = _Recorder()
        return self[name]


async def read_model(events: Sequence[DeviceProvisioned | CustomerProvisioned]) -> dict[str, list[Document]]:
    """Per collection, the documents metering's handlers store for these events (as first ones, into nothing)."""
    recording = _RecordingDb()
    ctx = EventContext(event="bench", message_id=None, db=cast(Database, recording), instance=cast(Instance, None))
    for event in events:
        if isinstance(event, CustomerProvisioned):
            await handlers.remember_customer(event, ctx)
        else:
            await handlers.remember_device(event, ctx)
    return {name: recorder.upserts for name, recorder in recording.items()}


async def seed(db: Database, events: Sequence[DeviceProvisioned | CustomerProvisioned]) -> None:
    for name, documents in (await read_model(events)).items():
        for start in range(0, len(documents), SEED_BATCH):
            await db[name].insert_many(documents[start:start + SEED_BATCH], ordered=False)


def contract_customer(number: str, contract_number: str) -> CustomerProvisioned:
    return CustomerProvisioned(customer_number=number, customer_name=f"Bench {number}", version=1, contracts=[
        Contract(contract_number=contract_number, type="page_price", billing_period="quarterly",
                 start_date=date(2010, 1, 1))])


def device(number: int, *, serial_prefix: str, customer_number: str, contract_number: str,
           recipients: list[ReminderRecipient], read_on: date) -> DeviceProvisioned:
    """A device of the installed base with two counters and the ERP's last values, as registration announces it."""
    return DeviceProvisioned(
        device_id=f"d-{serial_prefix}{number:06d}", serial_number=f"{serial_prefix}{number:06d}", model="ES5431dn",
        counters=list(COUNTERS), customer_number=customer_number, contract_number=contract_number,
        location=Location(name=f"Site {number // 50}", street=f"Hauptstraße {number % 200 + 1}",
                          postal_code=f"{10000 + number % 9000}", city="Berlin", country="DE",
                          building_location=f"Floor {number % 7}"),
        reminder_recipients=recipients, version=1,
        last_readings=[CounterReading(name=name, value=base + number, date=read_on)
                       for name, base in zip(COUNTERS, (10_000, 5_000), strict=True)])


# --- 1. submit_reading against the raw echo --------------------------------------------------------------------

class Readings:
    """`submit_reading` bodies: caller i of c takes devices i, i + c, ... in turn, each reading above the last."""

    def __init__(self, device_ids: list[str]) -> None:
        self.device_ids = device_ids
        self.values = {device_id: [10_000 + index, 5_000 + index] for index, device_id in enumerate(device_ids)}
        self.concurrency = 1
        self.turns: dict[int, int] = defaultdict(int)

    def start(self, concurrency: int) -> None:
        self.concurrency, self.turns = concurrency, defaultdict(int)

    def __call__(self, caller: int) -> bytes:
        mine = self.device_ids[caller::self.concurrency]
        device_id = mine[self.turns[caller] % len(mine)]
        self.turns[caller] += 1
        values = self.values[device_id]
        values[0] += 37
        values[1] += 11
        return json.dumps({"device_id": device_id, "readings": [
            {"counter": name, "value": value} for name, value in zip(COUNTERS, values, strict=True)]}).encode()


def accepted(reply: bytes) -> bool:
    return bool(json.loads(reply).get("ok"))


@dataclass
class SubmitRun:
    cells: dict[str, dict[int, list[Cell]]]  # server -> concurrency -> one cell per round
    outbox_lag_s: list[float]  # per metering cell: until the last reading's event was published
    accepted: int  # ok replies of metering, warm-ups included
    stored: int
    events: int
    profiled_calls_per_s: float | None = None

    def median(self, server: str, concurrency: int, what: Callable[[Cell], float]) -> float:
        return statistics.median(what(cell) for cell in self.cells[server][concurrency])

    def ratios(self) -> list[dict[str, Any]]:
        rows = []
        for concurrency in CONCURRENCIES:
            throughput = (self.median("metering", concurrency, lambda cell: cell.calls_per_s)
                          / self.median("raw", concurrency, lambda cell: cell.calls_per_s))
            p99 = (self.median("metering", concurrency, lambda cell: cell.percentile_ms(0.99))
                   / self.median("raw", concurrency, lambda cell: cell.percentile_ms(0.99)))
            rows.append({"concurrency": concurrency, "throughput": round(throughput, 2), "p99": round(p99, 2),
                         "meets_goal": throughput >= GOAL_THROUGHPUT and p99 <= GOAL_P99})
        return rows


async def outbox_empty(db: Database, since: float, timeout: float = TIMEOUT) -> float:
    """Seconds from `since` until no reading holds an unpublished event."""
    while await db[READINGS].find_one({"outbox": {"$exists": True}}, {"_id": 1}):
        if time.monotonic() > since + timeout:
            raise deps.DependencyError("metering's outbox relay did not publish the readings' events")
        await asyncio.sleep(0.05)
    return time.monotonic() - since


async def measure_submit(world: World, db: Database, readings: Readings, watch: dict[str, dict[str, int]],
                         seconds: float, warmup: float, rounds: int) -> tuple[dict[str, dict[int, list[Cell]]],
                                                                              list[float]]:
    cells: dict[str, dict[int, list[Cell]]] = {"raw": defaultdict(list), "metering": defaultdict(list)}
    lags = []
    token = world.token(customer_number="C-SUBMIT")
    async with Caller(world.amqp_url, headers={"authorization": f"Bearer {token}"}) as caller:
        for _ in range(rounds):
            for concurrency in CONCURRENCIES:
                readings.start(concurrency)
                cells["raw"][concurrency].append(await caller.cell(
                    RAW_QUEUE, concurrency, seconds, warmup, watch["raw"], payload=readings))
                readings.start(concurrency)
                cells["metering"][concurrency].append(await caller.cell(
                    api.SubmitReading.routing_key, concurrency, seconds, warmup, watch["metering"], payload=readings,
                    accept=accepted))
                lags.append(await outbox_empty(db, time.monotonic()))
    return cells, lags


async def drive_submit(world: World, db: Database, watch: dict[str, dict[str, int]], seconds: float, warmup: float,
                       rounds: int) -> tuple[SubmitRun, Readings]:
    read_on = today() - timedelta(days=90)
    customer = [contract_customer("C-SUBMIT", "K-SUBMIT")]
    devices = [device(number, serial_prefix="AK1S", customer_number="C-SUBMIT", contract_number="K-SUBMIT",
                      recipients=[ReminderRecipient(customer_number="C-SUBMIT")], read_on=read_on)
               for number in range(SUBMIT_DEVICES)]
    await publish_events(world.amqp_url, [*customer, *devices])
    deadline = time.monotonic() + 120
    while await db[DEVICES].count_documents({}) < SUBMIT_DEVICES or not await db[CUSTOMERS].count_documents({}):
        if time.monotonic() > deadline:
            raise deps.DependencyError("metering did not take in the devices' events")
        await asyncio.sleep(0.1)
    readings = Readings([event.device_id for event in devices])
    # Counted at the end from a queue nobody consumes meanwhile, so counting costs the client nothing.
    async with await aio_pika.connect(world.amqp_url) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(f"bench.metering.submitted.{uuid.uuid4().hex[:8]}", exclusive=True)
        await queue.bind(exchange, routing_key=api.ReadingSubmitted.routing_key)
        cells, lags = await measure_submit(world, db, readings, watch, seconds, warmup, rounds)
        stored = await db[READINGS].count_documents({})
        events = (await queue.declare()).message_count or 0
    ok = sum(cell.replies for by_round in cells["metering"].values() for cell in by_round)
    return SubmitRun(cells, lags, ok, stored, events), readings


async def profile_submit(world: World, readings: Readings, pid: int, seconds: float, warmup: float) -> float:
    token = world.token(customer_number="C-SUBMIT")
    readings.start(32)
    async with Caller(world.amqp_url, headers={"authorization": f"Bearer {token}"}) as caller:
        cell = await caller.cell(api.SubmitReading.routing_key, 32, seconds, warmup, {"server": pid},
                                 payload=readings, accept=accepted)
    return cell.calls_per_s


def run_submit(world: World, seconds: float, warmup: float, rounds: int, profile: Path | None) -> SubmitRun:
    prefix = fresh_prefix("submit")
    client_watch = {"nx": world.nx_pid, "client": os.getpid()}
    with launched("raw", world.amqp_url) as raw_pid, \
            launched("service", "metering", env=world.env(prefix)) as metering_pid:
        watch = {"raw": {"server": raw_pid, **client_watch}, "metering": {"server": metering_pid, **client_watch}}
        run, readings = asyncio.run(with_db(world, prefix, lambda db: drive_submit(
            world, db, watch, seconds, warmup, rounds)))
    if profile is not None:
        print("  metering.submit_reading under pyinstrument, c=32 ...", flush=True)
        with launched("service", "metering", "--profile", str(profile / "metering-submit"),
                      env=world.env(prefix)) as pid:
            run.profiled_calls_per_s = asyncio.run(profile_submit(world, readings, pid, seconds, warmup))
    return run


async def with_db(world: World, prefix: str, drive: Callable[[Database], Awaitable[T]]) -> T:
    client = mongo_client(world.mongo_url, 120_000)
    try:
        return await drive(client[f"{prefix}metering"])
    finally:
        await client.close()


# --- 2. a 10,000-row readings file ---------------------------------------------------------------------------

@dataclass
class BulkRun:
    rows: int
    devices: int
    file_bytes: int
    unpacked_bytes: int  # the xlsx's parts unzipped: what its rows are as text
    seconds_to_reply: float
    seconds_to_events: float | None
    accepted: int
    rejected: int
    warm_peak_rss_mb: float  # after the warm-up upload of WARM_UP_DEVICES
    peak_rss_mb: float
    profiled_seconds: float | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds_to_reply

    @property
    def growth_mb(self) -> float:
        return self.peak_rss_mb - self.warm_peak_rss_mb

    def growth_per(self, size: int) -> float:
        return self.growth_mb * 1024 * 1024 / size

    def meets_goal(self) -> dict[str, bool]:
        return {"rows_per_s": self.rows_per_s >= GOAL_ROWS_PER_S,
                "memory": self.growth_per(self.unpacked_bytes) <= GOAL_MEMORY_PER_UNPACKED}


def readings_workbook(devices: Sequence[DeviceProvisioned], pages: int) -> bytes:
    """The reminder's sheet filled in: per device and counter its last value and `pages` more, read today."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet(api.READING_SHEET_NAME)
    sheet.append(list(api.READING_SHEET_COLUMNS))
    read_on = today()
    for event in devices:
        for last in event.last_readings:
            sheet.append([event.serial_number, last.name, last.value, last.date, last.value + pages, read_on])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def unpacked(content: bytes) -> int:
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        return sum(part.file_size for part in package.infolist())


def bulk_devices(count: int, serial_prefix: str) -> list[DeviceProvisioned]:
    read_on = today() - timedelta(days=90)
    return [device(number, serial_prefix=serial_prefix, customer_number="C-BULK", contract_number="K-BULK",
                   recipients=[ReminderRecipient(customer_number="C-BULK")], read_on=read_on)
            for number in range(count)]


async def submit_file(world: World, content: bytes, expected_events: int) -> tuple[dict[str, Any], float, float | None]:
    """Send the file; its outcome, seconds to the reply and to the last `metering.reading.submitted`."""
    token = world.token(customer_number="C-BULK")
    body = {"file": FileObject.from_bytes("readings.xlsx", XLSX, content).model_dump()}
    async with PortalClient(world.amqp_url, timeout=TIMEOUT) as portal, \
            EventCounter(world.amqp_url, api.ReadingSubmitted.routing_key) as events:
        started = time.monotonic()
        outcome = await portal.call(api.SubmitBulk.routing_key, body, token=token)
        replied = time.monotonic()
        last = await events.reached(min(expected_events, int(outcome["accepted"])))
    return outcome, replied - started, None if last is None else last - started


def run_bulk(world: World, profile: Path | None) -> BulkRun:
    prefix = fresh_prefix("bulk")
    devices, warm_up = bulk_devices(BULK_DEVICES, "AK2B"), bulk_devices(WARM_UP_DEVICES, "AK2W")
    content = readings_workbook(devices, pages=1_200)

    async def prepare(db: Database) -> None:
        await scheduled_today(db)
        await seed(db, [contract_customer("C-BULK", "K-BULK"), *devices, *warm_up])

    with launched("service", "metering", env=world.env(prefix)) as pid:
        asyncio.run(with_db(world, prefix, prepare))
        asyncio.run(submit_file(world, readings_workbook(warm_up, pages=1_200), len(warm_up)))
        warm = peak_rss_mb(pid)
        outcome, to_reply, to_events = asyncio.run(submit_file(world, content, len(devices)))
        run = BulkRun(2 * len(devices), len(devices), len(content), unpacked(content), to_reply, to_events,
                      outcome["accepted"], len(outcome["rejected"]), warm, peak_rss_mb(pid))
    if profile is not None:
        print("  metering.submit_bulk under pyinstrument (the next readings of the same devices) ...", flush=True)
        later = readings_workbook(devices, pages=2_400)
        with launched("service", "metering", "--profile", str(profile / "metering-bulk"), env=world.env(prefix)):
            _, run.profiled_seconds, _ = asyncio.run(submit_file(world, later, len(devices)))
    return run


# --- 3. the reminder run -----------------------------------------------------------------------------------

@dataclass
class ReminderRun:
    devices: int
    recipients: int
    as_of: date
    seed_seconds: float
    command_seconds: float
    seconds_to_last_event: float | None
    reminders: int
    events: int
    devices_listed: int
    idle_peak_rss_mb: float
    peak_rss_mb: float
    profiled_seconds: float | None = None

    def meets_goal(self) -> bool:
        return self.seconds_to_last_event is not None and self.seconds_to_last_event < GOAL_REMINDER_SECONDS \
            and self.events == self.recipients


def reminder_fleet() -> list[DeviceProvisioned | CustomerProvisioned]:
    """2,000 customers of 50 devices; each customer's devices go to 10 site contacts, 5 devices each."""
    read_on = today() - timedelta(days=80)
    per_customer = DEVICES_PER_RECIPIENT * RECIPIENTS_PER_CUSTOMER
    fleet: list[DeviceProvisioned | CustomerProvisioned] = []
    for first in range(0, REMINDER_DEVICES, per_customer):
        customer = f"C-{first // per_customer:05d}"
        fleet.append(contract_customer(customer, f"K-{customer}"))
        for number in range(first, first + per_customer):
            contact = (number - first) // DEVICES_PER_RECIPIENT
            recipient = ReminderRecipient(customer_number=customer, email=f"site{contact}@{customer}.bench.example")
            fleet.append(device(number, serial_prefix="AK3R", customer_number=customer,
                                contract_number=f"K-{customer}", recipients=[recipient], read_on=read_on))
    return fleet


def window_opening(day: date) -> date:
    """The opening day of the reading window of the quarter `day` lies in (e.g. 2026-12-24 for 2026-12-31)."""
    return periods.Window(periods.period_end(day, "quarterly")).opens


async def run_reminders(world: World, as_of: date) -> tuple[int, float, float | None, list[bytes]]:
    """The command; reminders it reports, seconds to its reply and to the last `metering.reminder.due`, the events."""
    operator = world.token(Role.OPERATOR)
    async with PortalClient(world.amqp_url, timeout=TIMEOUT) as portal, \
            EventCounter(world.amqp_url, api.ReminderDue.routing_key, keep=True) as events:
        started = time.monotonic()
        outcome = await portal.call(api.RunReminders.routing_key, {"as_of": as_of.isoformat()}, token=operator)
        replied = time.monotonic()
        last = await events.reached(int(outcome["reminders"]))
    return int(outcome["reminders"]), replied - started, None if last is None else last - started, events.bodies


def run_reminder_part(world: World, profile: Path | None) -> ReminderRun:
    prefix = fresh_prefix("reminders")
    as_of = window_opening(today())
    fleet = reminder_fleet()
    recipients = REMINDER_DEVICES // DEVICES_PER_RECIPIENT

    async def prepare(db: Database) -> float:
        await scheduled_today(db)
        started = time.monotonic()
        await seed(db, fleet)
        return time.monotonic() - started

    with launched("service", "metering", env=world.env(prefix)) as pid:
        seed_seconds = asyncio.run(with_db(world, prefix, prepare))
        idle = peak_rss_mb(pid)
        reminders, command, to_last, bodies = asyncio.run(run_reminders(world, as_of))
        listed = sum(len(json.loads(body)["devices"]) for body in bodies)
        run = ReminderRun(REMINDER_DEVICES, recipients, as_of, seed_seconds, command, to_last, reminders, len(bodies),
                          listed, idle, peak_rss_mb(pid))
    if profile is not None:
        print("  metering.operator.run_reminders under pyinstrument (reminders removed, run again) ...", flush=True)

        async def forget(db: Database) -> None:
            await db[REMINDERS].delete_many({})

        asyncio.run(with_db(world, prefix, forget))
        with launched("service", "metering", "--profile", str(profile / "metering-reminders"), env=world.env(prefix)):
            _, _, run.profiled_seconds, _ = asyncio.run(run_reminders(world, as_of))
    return run


# --- all three ---------------------------------------------------------------------------------------------

@dataclass
class MeteringReport:
    submit: SubmitRun | None = None
    bulk: BulkRun | None = None
    reminders: ReminderRun | None = None
    notes: list[str] = field(default_factory=list)


def run_metering(amqp_url: str, mongo_url: str, nx_pid: int, *, seconds: float, warmup: float, rounds: int,
                 profile: Path | None) -> MeteringReport:
    world = World(amqp_url, mongo_url, nx_pid, secrets.token_hex(32))
    report = MeteringReport()
    print(f"metering.submit_reading against the raw echo, c={CONCURRENCIES}, {rounds} interleaved rounds of "
          f"{seconds:g} s per cell ...", flush=True)
    report.submit = run_submit(world, seconds, warmup, rounds, profile)
    print(f"metering.submit_bulk, {2 * BULK_DEVICES:,} rows ...", flush=True)
    report.bulk = run_bulk(world, profile)
    print(f"metering.operator.run_reminders, {REMINDER_DEVICES:,} devices ...", flush=True)
    report.reminders = run_reminder_part(world, profile)
    return report


def print_metering(report: MeteringReport) -> None:
    if (submit := report.submit) is not None:
        rounds = len(submit.cells["raw"][CONCURRENCIES[0]])
        print(f"\nmetering.submit_reading, medians of {rounds} interleaved rounds (calls/s range in brackets)\n")
        print("| server | c | calls/s | p50 ms | p99 ms | errors | CPU % server / nx-27017 / client |")
        print("|---|---|---|---|---|---|---|")
        for server, by_concurrency in submit.cells.items():
            for concurrency, cells in by_concurrency.items():
                rates = [cell.calls_per_s for cell in cells]
                cpu = {name: statistics.median(cell.cpu_percent.get(name, 0) for cell in cells)
                       for name in ("server", "nx", "client")}
                print(f"| {server} | {concurrency} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–"
                      f"{max(rates):,.0f}) | {submit.median(server, concurrency, lambda c: c.percentile_ms(0.5)):.2f} "
                      f"| {submit.median(server, concurrency, lambda c: c.percentile_ms(0.99)):.2f} "
                      f"| {sum(cell.errors for cell in cells)} | {cpu['server']:.0f} / {cpu['nx']:.0f} "
                      f"/ {cpu['client']:.0f} |")
        print(f"\nGoal: metering throughput >= {GOAL_THROUGHPUT}x raw and p99 <= {GOAL_P99}x raw p99.")
        for row in submit.ratios():
            print(f"  c={row['concurrency']}: throughput {row['throughput']:.2f}x, p99 {row['p99']:.2f}x "
                  f"-> {'met' if row['meets_goal'] else 'MISSED'}")
        print(f"  {submit.accepted:,} readings accepted, {submit.stored:,} stored, {submit.events:,} "
              f"metering.reading.submitted received; outbox empty {max(submit.outbox_lag_s):.2f} s after a cell "
              f"at most")
        if submit.stored != submit.accepted or submit.events != submit.stored:
            print("  WARNING: accepted replies, stored readings and events differ")
        if submit.profiled_calls_per_s is not None:
            print(f"  profiled: {submit.profiled_calls_per_s:,.0f} calls/s at c=32")
    if (bulk := report.bulk) is not None:
        print("\nmetering.submit_bulk, one xlsx\n")
        print("| rows | devices | file KB (unpacked) | to reply s | rows/s | to last event s | accepted | rejected "
              "| peak RSS MB warm → after |")
        print("|---|---|---|---|---|---|---|---|---|")
        events = f"{bulk.seconds_to_events:.2f}" if bulk.seconds_to_events is not None else "missing"
        print(f"| {bulk.rows:,} | {bulk.devices:,} | {bulk.file_bytes / 1024:,.0f} ({bulk.unpacked_bytes / 1024:,.0f}) "
              f"| {bulk.seconds_to_reply:.2f} | {bulk.rows_per_s:,.0f} | {events} | {bulk.accepted:,} "
              f"| {bulk.rejected:,} | {bulk.warm_peak_rss_mb:.0f} → {bulk.peak_rss_mb:.0f} |")
        goals = bulk.meets_goal()
        print(f"\nGoal: >= {GOAL_ROWS_PER_S:,} rows/s -> {'met' if goals['rows_per_s'] else 'MISSED'} "
              f"({bulk.rows_per_s:,.0f}); peak RSS growth <= {GOAL_MEMORY_PER_UNPACKED:g}x the file unpacked -> "
              f"{'met' if goals['memory'] else 'MISSED'} (+{bulk.growth_mb:.1f} MB: "
              f"{bulk.growth_per(bulk.file_bytes):.0f}x the {bulk.file_bytes / 1024:,.0f} KB file, "
              f"{bulk.growth_per(bulk.unpacked_bytes):.1f}x its {bulk.unpacked_bytes / 1024 / 1024:.1f} MB unpacked)")
        if bulk.profiled_seconds is not None:
            print(f"  profiled: {bulk.profiled_seconds:.2f} s to the reply")
    if (reminders := report.reminders) is not None:
        print(f"\nmetering.operator.run_reminders as of {reminders.as_of.isoformat()}\n")
        print("| devices | recipients | seeding s | command s | to last reminder.due s | reminders | events "
              "| devices listed | peak RSS MB idle → after |")
        print("|---|---|---|---|---|---|---|---|---|")
        last = f"{reminders.seconds_to_last_event:.2f}" if reminders.seconds_to_last_event is not None else "missing"
        print(f"| {reminders.devices:,} | {reminders.recipients:,} | {reminders.seed_seconds:.1f} "
              f"| {reminders.command_seconds:.2f} | {last} | {reminders.reminders:,} | {reminders.events:,} "
              f"| {reminders.devices_listed:,} | {reminders.idle_peak_rss_mb:.0f} → {reminders.peak_rss_mb:.0f} |")
        print(f"\nGoal: < {GOAL_REMINDER_SECONDS:g} s to the last metering.reminder.due, one per recipient -> "
              f"{'met' if reminders.meets_goal() else 'MISSED'}")
        if reminders.profiled_seconds is not None:
            print(f"  profiled: {reminders.profiled_seconds:.2f} s to the last event")


def medians(run: SubmitRun, server: str, concurrency: int) -> dict[str, float]:
    return {"concurrency": concurrency,
            "calls_per_s": round(run.median(server, concurrency, lambda c: c.calls_per_s), 1),
            "p50_ms": round(run.median(server, concurrency, lambda c: c.percentile_ms(0.5)), 2),
            "p99_ms": round(run.median(server, concurrency, lambda c: c.percentile_ms(0.99)), 2)}


def metering_json(report: MeteringReport) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if (submit := report.submit) is not None:
        result["submit_reading"] = {
            "rounds": {server: {str(concurrency): [cell.summary() for cell in cells]
                                for concurrency, cells in by_concurrency.items()}
                       for server, by_concurrency in submit.cells.items()},
            "medians": {server: [medians(submit, server, concurrency) for concurrency in by_concurrency]
                        for server, by_concurrency in submit.cells.items()},
            "ratios": submit.ratios(), "outbox_lag_s": [round(lag, 2) for lag in submit.outbox_lag_s],
            "accepted": submit.accepted, "stored": submit.stored, "events": submit.events,
            "goal": {"throughput_at_least": GOAL_THROUGHPUT, "p99_at_most": GOAL_P99}}
    if (bulk := report.bulk) is not None:
        result["submit_bulk"] = {**vars(bulk), "rows_per_s": round(bulk.rows_per_s),
                                 "growth_mb": round(bulk.growth_mb, 1),
                                 "growth_per_file": round(bulk.growth_per(bulk.file_bytes), 1),
                                 "growth_per_unpacked": round(bulk.growth_per(bulk.unpacked_bytes), 2),
                                 "meets_goal": bulk.meets_goal(),
                                 "goal": {"rows_per_s": GOAL_ROWS_PER_S,
                                          "growth_per_unpacked": GOAL_MEMORY_PER_UNPACKED}}
    if (reminders := report.reminders) is not None:
        result["run_reminders"] = {**vars(reminders), "as_of": reminders.as_of.isoformat(),
                                   "meets_goal": reminders.meets_goal(), "goal": {"seconds": GOAL_REMINDER_SECONDS}}
    return result
