"""Metering in `make bench`: the metering service (`services.metering`, its settings from `PORTAL_*` variables) as its
own process on the run's vhost and nx-27017, a fresh database per part.

- `metering.submit_reading`, a subject of the round trips (`bench.roundtrip`): `devices` devices of one customer,
  seeded through `accounts.customer.provisioned` and `registration.device.provisioned` events; caller i of c takes
  devices i, i + c, ... in turn, each reading above the device's last one (no two callers on one device).
- Competing consumers (`run_replicas`): the same command at c=32 with 1, 2 and 4 replicas on one queue, started and
  stopped between cells in the plan's balanced order (1, 2, 4, 4, 2, 1, ...). On a 2-core machine, where the client,
  the broker, nx-27017 and every replica share the cores, this shows what competing consumers cost, not how they scale.
- A readings file (`run_file`): `metering.submit_bulk` with the reminder's sheet of `devices` devices x 2 counters, to
  the reply and to the last `metering.reading.submitted`, repeated with the next readings of the same devices. Goal:
  >= 2,000 rows/s, and memory flat beyond the file: the service's peak RSS (VmHWM) after every file, less its peak
  after a warm-up upload of a full batch of other devices (`PORTAL_METERING_BATCH_DEVICES`, so one batch's working set
  and the one-off costs are paid), at most 3x the file's unpacked size (the xlsx is zip-compressed about 10:1).
- The reminder run (`run_reminders`): `metering.operator.run_reminders` for `devices` devices with reminders on
  (quarterly contracts), 5 devices per recipient over customers of 50 devices, `as_of` the opening day of the current
  quarter's window: the command's time, and the time from sending it to the last `metering.reminder.due`. Once per
  run (seeding 100,000 devices takes longer than the run). Goal: < 30 s.

Devices and customers of the file and the reminder run are written into metering's `devices` and `customers`
directly (`bench.seeding`, through metering's own handlers): events would take minutes for 100,000. The service's
scheduler has run its day before seeding (and then waits a day), so only the measured command works on them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]

from bench.client import Caller
from bench.plan import Plan
from bench.rounds import EventQueues, Prepare, Series, Spread, Subject
from bench.seeding import seed
from bench.world import TIMEOUT, EventCounter, World, fresh_prefix, peak_rss_mb, publish_events, wait_until
from contracts import metering as api
from contracts.accounts import Contract, CustomerProvisioned
from contracts.base import Event, FileObject
from contracts.client import PortalClient
from contracts.registration import CounterReading, DeviceProvisioned, Location, ReminderRecipient
from services.metering import handlers, periods
from services.metering.sheets import XLSX
from services.metering.store import CUSTOMERS, DEVICES, SCHEDULE
from services.runtime.events import EventContext
from services.runtime.mongo import Database
from services.runtime.tokens import Role

COUNTERS = ("mono", "color")
DEVICES_PER_RECIPIENT, RECIPIENTS_PER_CUSTOMER = 5, 10
GOAL_ROWS_PER_S, GOAL_MEMORY_PER_UNPACKED = 2_000, 3.0
# The upload before the measured ones: a full batch of `metering_batch_devices` (500 devices, 1,000 rows).
WARM_UP_DEVICES = 500
GOAL_REMINDER_SECONDS = 30.0
REPLICA_CONCURRENCY = 32
TWO_CORES = ("On a 2-core machine the client, RabbitMQ, nx-27017 and every replica share the cores: these figures show "
             "what competing consumers cost there, not how they scale.")


def today() -> date:
    return datetime.now(UTC).date()


async def scheduled_today(db: Database) -> None:
    """Wait until the service's scheduler ran today's schedule (on whatever the database held then)."""
    async def ran() -> bool:
        state = await db[SCHEDULE].find_one({"_id": "daily"})
        return state is not None and state.get("last_day") == today().isoformat()

    await wait_until(ran, "metering's scheduler ran its day", timeout=60)


async def remember(event: Event, ctx: EventContext) -> None:
    """Metering's handler of a customer's or a device's event (`bench.seeding.seed`)."""
    if isinstance(event, CustomerProvisioned):
        await handlers.remember_customer(event, ctx)
    elif isinstance(event, DeviceProvisioned):
        await handlers.remember_device(event, ctx)


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


# --- submit_reading: a subject of the round trips, and the replicas ---------------------------------------------

class Readings:
    """`submit_reading` bodies (`bench.client.Payload`): caller i of c takes devices i, i + c, ... in turn, each
    reading above the device's last one."""

    def __init__(self, device_ids: list[str]) -> None:
        self.device_ids = device_ids
        self.values = {device_id: [10_000 + index, 5_000 + index] for index, device_id in enumerate(device_ids)}
        self.turns: dict[int, int] = defaultdict(int)

    def __call__(self, caller: int, concurrency: int) -> bytes:
        mine = self.device_ids[caller::concurrency]
        device_id = mine[self.turns[caller] % len(mine)]
        self.turns[caller] += 1
        values = self.values[device_id]
        values[0] += 37
        values[1] += 11
        return json.dumps({"device_id": device_id, "readings": [
            {"counter": name, "value": value} for name, value in zip(COUNTERS, values, strict=True)]}).encode()


def submit_fleet(count: int) -> list[DeviceProvisioned]:
    read_on = today() - timedelta(days=90)
    return [device(number, serial_prefix="AK1S", customer_number="C-SUBMIT", contract_number="K-SUBMIT",
                   recipients=[ReminderRecipient(customer_number="C-SUBMIT")], read_on=read_on)
            for number in range(count)]


async def prepare_submit(world: World, database: str, devices: list[DeviceProvisioned]) -> None:
    """Announce the customer and the devices; done once metering stored them all."""
    await publish_events(world.amqp_url, [contract_customer("C-SUBMIT", "K-SUBMIT"), *devices])

    async def stored(db: Database) -> bool:
        return await db[DEVICES].count_documents({}) >= len(devices) and bool(
            await db[CUSTOMERS].count_documents({}))

    async def all_stored() -> bool:
        return await world.with_db(database, stored)

    await wait_until(all_stored, "metering took in the devices' events")


def submit_subject(world: World, pid: int, devices: list[DeviceProvisioned],
                   readings: Readings | None = None) -> Subject:
    return Subject("metering.submit_reading", api.SubmitReading.routing_key, pid,
                   payload=readings or Readings([event.device_id for event in devices]),
                   headers={"authorization": f"Bearer {world.token(customer_number='C-SUBMIT')}"},
                   event=api.ReadingSubmitted.routing_key)


@contextmanager
def submit_reading(world: World, devices: int) -> Iterator[tuple[Subject, Prepare]]:
    """The metering process; the subject and the step that seeds it (run before measuring)."""
    fleet = submit_fleet(devices)
    prefix = fresh_prefix("metering")
    with world.service("metering", prefix) as pid:
        yield submit_subject(world, pid, fleet), lambda: prepare_submit(world, f"{prefix}metering", fleet)


async def measure_replicas(world: World, plan: Plan, prefix: str, first_pid: int,
                           fleet: list[DeviceProvisioned]) -> dict[int, Series]:
    readings = Readings([event.device_id for event in fleet])
    series = {count: Series(f"{count} replica{'s' if count > 1 else ''}", REPLICA_CONCURRENCY)
              for count in sorted(set(plan.replicas))}
    extra: list[tuple[AbstractContextManager[int], int]] = []  # started replicas beyond the first, and their pids
    subject = submit_subject(world, first_pid, fleet, readings=readings)
    accepted = 0
    try:
        async with Caller(world.amqp_url) as caller, EventQueues(world.amqp_url,
                                                                 [api.ReadingSubmitted.routing_key]) as events:
            for count in plan.replicas:
                await scale(extra, count - 1, lambda: world.service("metering", prefix))
                watch = {"server": first_pid, **{f"replica{index + 2}": pid for index, (_, pid) in enumerate(extra)},
                         "nx": world.nx_pid, "client": os.getpid()}
                cell = await caller.cell(subject.routing_key, REPLICA_CONCURRENCY, plan.seconds, plan.warmup, watch,
                                         payload=subject.payload, accept=subject.accept, headers=subject.headers)
                series[count].cells.append(cell)
                accepted += cell.replies
                series[count].outbox_lag_s.append(await events.reach(api.ReadingSubmitted.routing_key, accepted))
    finally:
        await scale(extra, 0, lambda: world.service("metering", prefix))
    return series


async def scale(running: list[tuple[AbstractContextManager[int], int]], count: int,
                replica: Callable[[], AbstractContextManager[int]]) -> None:
    """Start or stop replicas, all at once, until `count` run (a stopping one drains its outbox first)."""
    starting = [replica() for _ in range(count - len(running))]
    pids = await asyncio.gather(*(asyncio.to_thread(started.__enter__) for started in starting),
                                return_exceptions=True)
    running.extend((started, pid) for started, pid in zip(starting, pids, strict=True) if isinstance(pid, int))
    for failed in pids:
        if isinstance(failed, BaseException):
            raise failed  # the ones that started are in `running`, for the caller to stop
    stopping = [running.pop()[0] for _ in range(len(running) - count)]
    await asyncio.gather(*(asyncio.to_thread(stopped.__exit__, None, None, None) for stopped in stopping))


def run_replicas(world: World, plan: Plan) -> list[Series]:
    """`submit_reading` at c=32 with 1, 2 and 4 replicas consuming one queue."""
    fleet = submit_fleet(plan.submit_devices)
    prefix = fresh_prefix("replicas")
    with world.service("metering", prefix) as pid:
        asyncio.run(prepare_submit(world, f"{prefix}metering", fleet))
        return list(asyncio.run(measure_replicas(world, plan, prefix, pid, fleet)).values())


def print_replicas(replicas: list[Series]) -> None:
    print(f"\nmetering.submit_reading at c={REPLICA_CONCURRENCY} with competing consumers, median (range) of "
          f"{len(replicas[0].cells)} cells each\n")
    print("| replicas | calls/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for series in replicas:
        print(f"| {series.name.split()[0]} | {series.calls_per_s.text()} | {series.p50_ms.text(2)} "
              f"| {series.p99_ms.text(2)} | {series.errors} |")
    print(f"\n{TWO_CORES}")


# --- a readings file -------------------------------------------------------------------------------------------

@dataclass
class FileRun:
    rows: int
    file_bytes: int
    unpacked_bytes: int  # the xlsx's parts unzipped: what its rows are as text
    seconds_to_reply: list[float]
    seconds_to_events: list[float | None]
    accepted: list[int]
    rejected: list[int]
    warm_peak_rss_mb: float  # after the warm-up upload of WARM_UP_DEVICES
    peak_rss_mb: list[float]  # after each file

    @property
    def rows_per_s(self) -> Spread:
        return Spread.of(self.rows / seconds for seconds in self.seconds_to_reply)

    @property
    def growth_mb(self) -> float:
        """What the first file added to the peak (later ones add what fragmentation costs: reported, not the goal)."""
        return self.peak_rss_mb[0] - self.warm_peak_rss_mb

    def meets_goal(self) -> dict[str, bool]:
        return {"rows_per_s": self.rows_per_s.median >= GOAL_ROWS_PER_S,
                "memory": self.growth_mb * 1024 * 1024 / self.unpacked_bytes <= GOAL_MEMORY_PER_UNPACKED}

    def json(self) -> dict[str, Any]:
        events = [seconds for seconds in self.seconds_to_events if seconds is not None]
        return {"rows": self.rows, "file_bytes": self.file_bytes, "unpacked_bytes": self.unpacked_bytes,
                "rows_per_s": self.rows_per_s.json(0), "seconds_to_reply": Spread.of(self.seconds_to_reply).json(2),
                "seconds_to_last_event": Spread.of(events).json(2) if events else None,
                "events_missing": len(self.seconds_to_events) - len(events), "accepted": self.accepted,
                "rejected": self.rejected, "warm_peak_rss_mb": round(self.warm_peak_rss_mb, 1),
                "peak_rss_mb": [round(peak, 1) for peak in self.peak_rss_mb], "meets_goal": self.meets_goal(),
                "goal": {"rows_per_s": GOAL_ROWS_PER_S, "growth_per_unpacked": GOAL_MEMORY_PER_UNPACKED}}


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


def file_devices(count: int, serial_prefix: str) -> list[DeviceProvisioned]:
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


def run_file(world: World, plan: Plan) -> FileRun:
    """The same devices' sheet `plan.repeats` times, each with readings above the last."""
    prefix = fresh_prefix("file")
    devices, warm_up = file_devices(plan.file_devices, "AK2B"), file_devices(WARM_UP_DEVICES, "AK2W")

    async def prepare(db: Database) -> None:
        await scheduled_today(db)
        await seed(db, remember, [contract_customer("C-BULK", "K-BULK"), *devices, *warm_up])

    with world.service("metering", prefix) as pid:
        asyncio.run(world.with_db(f"{prefix}metering", prepare))
        asyncio.run(submit_file(world, readings_workbook(warm_up, pages=1_200), len(warm_up)))
        warm = peak_rss_mb(pid)
        run = FileRun(2 * len(devices), 0, 0, [], [], [], [], warm, [])
        for repeat in range(plan.repeats):
            content = readings_workbook(devices, pages=1_200 * (repeat + 1))
            outcome, to_reply, to_events = asyncio.run(submit_file(world, content, len(devices)))
            run.file_bytes, run.unpacked_bytes = len(content), unpacked(content)
            run.seconds_to_reply.append(to_reply)
            run.seconds_to_events.append(to_events)
            run.accepted.append(int(outcome["accepted"]))
            run.rejected.append(len(outcome["rejected"]))
            run.peak_rss_mb.append(peak_rss_mb(pid))
    return run


def print_file(run: FileRun) -> None:
    events = [seconds for seconds in run.seconds_to_events if seconds is not None]
    print(f"\nmetering.submit_bulk, one xlsx of {run.rows:,} rows ({run.file_bytes / 1024:,.0f} KB, "
          f"{run.unpacked_bytes / 1024 / 1024:.1f} MB unpacked), median (range) of {len(run.seconds_to_reply)}\n")
    print("| rows/s | to reply s | to last event s | accepted | rejected | peak RSS MB warm → after each file |")
    print("|---|---|---|---|---|---|")
    print(f"| {run.rows_per_s.text()} | {Spread.of(run.seconds_to_reply).text(2)} "
          f"| {Spread.of(events).text(2) if events else 'missing'} | {min(run.accepted):,}–{max(run.accepted):,} "
          f"| {max(run.rejected):,} | {run.warm_peak_rss_mb:.0f} → "
          f"{', '.join(f'{peak:.0f}' for peak in run.peak_rss_mb)} |")
    goals = run.meets_goal()
    print(f"\nGoal: >= {GOAL_ROWS_PER_S:,} rows/s -> {'met' if goals['rows_per_s'] else 'MISSED'}; peak RSS growth "
          f"<= {GOAL_MEMORY_PER_UNPACKED:g}x the file unpacked -> {'met' if goals['memory'] else 'MISSED'} "
          f"(+{run.growth_mb:.1f} MB with the first file, {run.unpacked_bytes / 1024 / 1024:.1f} MB unpacked)")


# --- the reminder run --------------------------------------------------------------------------------------------

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

    def meets_goal(self) -> bool:
        return self.seconds_to_last_event is not None and self.seconds_to_last_event < GOAL_REMINDER_SECONDS \
            and self.events == self.recipients

    def json(self) -> dict[str, Any]:
        return {**vars(self), "as_of": self.as_of.isoformat(), "meets_goal": self.meets_goal(),
                "goal": {"seconds": GOAL_REMINDER_SECONDS}}


def reminder_fleet(devices: int) -> list[DeviceProvisioned | CustomerProvisioned]:
    """Customers of 50 devices; each customer's devices go to 10 site contacts, 5 devices each."""
    read_on = today() - timedelta(days=80)
    per_customer = DEVICES_PER_RECIPIENT * RECIPIENTS_PER_CUSTOMER
    fleet: list[DeviceProvisioned | CustomerProvisioned] = []
    for first in range(0, devices, per_customer):
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


async def send_run_reminders(world: World, as_of: date) -> tuple[int, float, float | None, list[bytes]]:
    """The command; reminders it reports, seconds to its reply and to the last `metering.reminder.due`, the events."""
    async with PortalClient(world.amqp_url, timeout=TIMEOUT) as portal, \
            EventCounter(world.amqp_url, api.ReminderDue.routing_key, keep=True) as events:
        started = time.monotonic()
        outcome = await portal.call(api.RunReminders.routing_key, {"as_of": as_of.isoformat()},
                                    token=world.token(Role.OPERATOR))
        replied = time.monotonic()
        last = await events.reached(int(outcome["reminders"]))
    return int(outcome["reminders"]), replied - started, None if last is None else last - started, events.bodies


def run_reminders(world: World, plan: Plan) -> ReminderRun:
    devices = plan.reminder_devices - plan.reminder_devices % (DEVICES_PER_RECIPIENT * RECIPIENTS_PER_CUSTOMER)
    prefix = fresh_prefix("reminders")
    as_of = window_opening(today())
    fleet = reminder_fleet(devices)

    async def prepare(db: Database) -> float:
        await scheduled_today(db)
        started = time.monotonic()
        await seed(db, remember, fleet)
        return time.monotonic() - started

    with world.service("metering", prefix) as pid:
        seed_seconds = asyncio.run(world.with_db(f"{prefix}metering", prepare))
        idle = peak_rss_mb(pid)
        reminders, command, to_last, bodies = asyncio.run(send_run_reminders(world, as_of))
        listed = sum(len(json.loads(body)["devices"]) for body in bodies)
        return ReminderRun(devices, devices // DEVICES_PER_RECIPIENT, as_of, seed_seconds, command, to_last,
                           reminders, len(bodies), listed, idle, peak_rss_mb(pid))


def print_reminders(run: ReminderRun) -> None:
    print(f"\nmetering.operator.run_reminders as of {run.as_of.isoformat()}, once\n")
    print("| devices | recipients | seeding s | command s | to last reminder.due s | reminders | events "
          "| devices listed | peak RSS MB idle → after |")
    print("|---|---|---|---|---|---|---|---|---|")
    last = f"{run.seconds_to_last_event:.2f}" if run.seconds_to_last_event is not None else "missing"
    print(f"| {run.devices:,} | {run.recipients:,} | {run.seed_seconds:.1f} | {run.command_seconds:.2f} | {last} "
          f"| {run.reminders:,} | {run.events:,} | {run.devices_listed:,} "
          f"| {run.idle_peak_rss_mb:.0f} → {run.peak_rss_mb:.0f} |")
    print(f"\nGoal: < {GOAL_REMINDER_SECONDS:g} s to the last metering.reminder.due, one per recipient -> "
          f"{'met' if run.meets_goal() else 'MISSED'}")
