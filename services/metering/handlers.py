"""metering's commands for readings (single, bulk, e-maintenance, estimates), history and usage; its read models.

Who sees a device mirrors registration: the users of its customer (only the contract's devices for a contract
sign-in), the registering user of a device of no customer, and claimants outside the customer who did not hide it.
A device the caller may not see is `not_found`, also when it exists.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime, timedelta

from contracts import metering as api
from contracts.accounts import CustomerProvisioned
from contracts.base import FileObject, Page
from contracts.errors import message_for
from contracts.registration import (
    DeviceState,
    normalise_serial,
)
from services.metering import periods, sheets
from services.metering.readings import (
    Attempt,
    R,
    billing_of,
    check,
    covers,
    device_counters,
    preview,
    previous_values,
    record,
    record_once,
)
from services.metering.settings import FILE_PREFETCH, metering_settings
from services.metering.store import MeteringStore
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document
from services.runtime.readmodels import DEVICE_EVENTS, contract_of, contracts_of, device_fields, sees, visible_devices
from services.runtime.service import Router, ServiceInstance

router = Router()


def store_of(ctx: CommandContext | EventContext) -> MeteringStore:
    return MeteringStore(ctx.db, ctx.instance.lookups)


def today() -> date:
    return datetime.now(UTC).date()


# UTC+14 (Kiritimati): the zone furthest east, where a day begins first.
EARLIEST_ZONE = timedelta(hours=14)


def latest_today() -> date:
    """What a reading `in the future` is measured by: the latest date anywhere on earth now. A customer east of UTC
    reads its meter on its own today, which is UTC's tomorrow after its midnight."""
    return (datetime.now(UTC) + EARLIEST_ZONE).date()


# --- visibility -------------------------------------------------------------------------------------

async def own_device(ctx: CommandContext, device_id: str) -> Document:
    device = await store_of(ctx).device_by_id(device_id)
    if device is None or not sees(ctx.caller, device):
        raise CommandError("not_found", fields={"device_id": "not_found"})
    return device


# --- single readings ---------------------------------------------------------------------------------

def attempt_of(device: Document, readings: list[api.CounterValue], reading_date: date | None, *,
               source: api.Source, submitted_by: str | None, command_id: str | None) -> Attempt:
    values: dict[str, int] = {}
    duplicates = []
    for reading in readings:
        if reading.counter in values:
            duplicates.append(reading.counter)
        values[reading.counter] = reading.value
    return Attempt(device, values, reading_date or today(), source, submitted_by, command_id, duplicates=duplicates)


@router.command("metering.preview_reading", api.PreviewReading, access=Access.AUTH, replay=Replay.RERUN)
async def preview_reading(request: api.PreviewReading, ctx: CommandContext) -> api.ReadingPreview:
    """What the reading would mean, printed pages per counter and warnings; the same checks as a submit, nothing
    stored (the OKI portal's preview before "Akzeptieren")."""
    device = await own_device(ctx, request.device_id)
    attempt = attempt_of(device, request.readings, request.reading_date, source="customer",
                         submitted_by=ctx.caller.user_id, command_id=None)
    check(attempt, latest=latest_today())
    billing = billing_of(device, await store_of(ctx).customer(device.get("customer_number")))
    return preview(attempt, billing, metering_settings(ctx.instance), language=ctx.language)


async def submit_one(ctx: CommandContext, attempt: Attempt, answer: Callable[[api.ReadingSubmittedReply], R],
                     customer: asyncio.Future[Document | None] | None = None) -> R:
    """Store one reading, claimed with its write (`claim_in_write`), and answer with `answer(its reply)`.
    `customer`: the caller's customer, looked up alongside the device; the device's own is looked up when it is
    another."""
    store = store_of(ctx)
    number = attempt.device.get("customer_number")
    known = await customer if customer is not None else None
    if (known or {}).get("_id") != number:
        known = await store.customer(number)
    return await record_once(ctx, store, attempt, known, metering_settings(ctx.instance), latest=latest_today(),
                             answer=answer)


def submitted(reply: api.ReadingSubmittedReply) -> api.ReadingSubmittedReply:
    return reply


def recorded(reply: api.ReadingSubmittedReply) -> api.ReadingRecorded:
    return api.ReadingRecorded(reading_id=reply.reading_id)


@router.command("metering.submit_reading", api.SubmitReading, access=Access.AUTH, claim_in_write=True)
async def submit_reading(request: api.SubmitReading, ctx: CommandContext) -> api.ReadingSubmittedReply:
    # The caller's customer is almost always the device's: looked up at once, not after the device.
    customer = asyncio.ensure_future(store_of(ctx).customer(ctx.caller.customer_number))
    try:
        device = await own_device(ctx, request.device_id)
    except BaseException:
        customer.cancel()
        raise
    return await submit_one(ctx, attempt_of(device, request.readings, request.reading_date, source="customer",
                                            submitted_by=ctx.caller.user_id, command_id=ctx.message_id),
                            submitted, customer)


@router.command("metering.device_report", api.DeviceReport, access=Access.OPERATOR, claim_in_write=True)
async def device_report(request: api.DeviceReport, ctx: CommandContext) -> api.ReadingRecorded:
    """A reading an e-maintenance device reported itself, through the vendor's remote service."""
    device = await store_of(ctx).device({"serial_number": normalise_serial(request.serial_number)})
    if device is None:
        raise CommandError("not_found", fields={"serial_number": "not_found"})
    return await submit_one(ctx, attempt_of(device, request.readings, request.reading_date, source="device",
                                            submitted_by=None, command_id=ctx.message_id), answer=recorded)


@router.command("metering.operator.record_estimate", api.RecordEstimate, access=Access.OPERATOR,
                claim_in_write=True)
async def record_estimate(request: api.RecordEstimate, ctx: CommandContext) -> api.ReadingRecorded:
    """The contract team's estimate; a later customer reading below it is refused (`reading_lower_than_last`)."""
    device = await store_of(ctx).device_by_id(request.device_id)
    if device is None:
        raise CommandError("not_found", fields={"device_id": "not_found"})
    return await submit_one(ctx, attempt_of(device, request.readings, request.reading_date, source="estimate",
                                            submitted_by=ctx.caller.user_id, command_id=ctx.message_id),
                            answer=recorded)


# --- many readings at once ------------------------------------------------------------------------------

@router.command("metering.submit_bulk", api.SubmitBulk, access=Access.AUTH, prefetch=FILE_PREFETCH)
async def submit_bulk(request: api.SubmitBulk, ctx: CommandContext) -> api.BulkOutcome:
    """Readings of many devices, from a list or from an xlsx or csv file (the reminder's sheet); each device is
    judged on its own with the rules of `submit_reading`, and its rows accepted or rejected together."""
    settings = metering_settings(ctx.instance)
    if request.file is not None:
        rows = await asyncio.to_thread(read_file, request.file, settings.metering_file_max_bytes,
                                       settings.metering_file_max_rows)
    else:
        rows = [sheets.SheetRow(index, reading.serial_number, reading.counter, reading.value, reading.reading_date)
                for index, reading in enumerate(request.readings or [], start=1)]
    caller = ctx.caller
    store = store_of(ctx)

    async def devices_of(serials: list[str]) -> dict[str, Document]:
        found = store.devices.find({"serial_number": {"$in": serials}})
        return {device["serial_number"]: device async for device in found if sees(caller, device)}

    return await judge_rows(ctx, rows, key_of=lambda row: normalise_serial(row.key), devices_of=devices_of,
                            submitted_by=caller.user_id)


def read_file(file: FileObject, max_bytes: int, max_rows: int) -> list[sheets.SheetRow]:
    try:
        content = file.content()
    except ValueError:
        raise CommandError("validation_failed", fields={"file.content_base64": "not base64"}) from None
    read = sheets.read_readings(content, filename=file.filename, max_bytes=max_bytes, max_rows=max_rows)
    if isinstance(read, sheets.FileRefusal):
        raise CommandError(read.code, fields={"file": read.detail})
    return read


async def judge_rows(ctx: CommandContext, rows: list[sheets.SheetRow], *, key_of: Callable[[sheets.SheetRow], str],
                     devices_of: Callable[[list[str]], Awaitable[dict[str, Document]]],
                     submitted_by: str | None) -> api.BulkOutcome:
    """Group rows by device (`key_of`: its serial, or its id) and date; judge and store each group on its own, a
    batch of devices per write. `devices_of(keys)` finds the devices the caller may submit for."""
    settings = metering_settings(ctx.instance)
    rejected: list[api.RejectedRow] = []
    groups: dict[tuple[str, date], list[sheets.SheetRow]] = defaultdict(list)
    now = today()
    for row in rows:
        if row.problem:
            rejected.append(api.RejectedRow(row=row.number, serial_number=row.key, code="validation_failed",
                                            message=row.problem))
        else:
            groups[(key_of(row), row.reading_date or now)].append(row)
    accepted, reading_ids = 0, []
    keys = sorted(groups)  # a device's dates in order: a file may list the later reading first
    for start in range(0, len(keys), settings.metering_batch_devices):
        chunk = keys[start:start + settings.metering_batch_devices]
        devices = await devices_of(sorted({key for key, _ in chunk}))
        attempts: list[Attempt] = []
        for key, reading_date in chunk:
            group = groups[(key, reading_date)]
            device = devices.get(key)
            if device is None:
                rejected.extend(api.RejectedRow(row=row.number, serial_number=row.key, code="not_found",
                                                message=message_for("not_found", ctx.language)) for row in group)
                continue
            values: dict[str, int] = {}
            duplicates = []
            for row in group:
                if row.counter in values:
                    duplicates.append(row.counter)
                values[row.counter] = int(row.value or 0)
            command_id = f"{ctx.message_id}:{key}:{reading_date.isoformat()}" if ctx.message_id else None
            attempts.append(Attempt(device, values, reading_date, "customer", submitted_by, command_id,
                                    rows=[row.number for row in group], duplicates=duplicates))
        outcome = await record(store_of(ctx), attempts, settings, language=ctx.language, latest=latest_today())
        for index, attempt in enumerate(attempts):
            if index in outcome.replies:
                accepted += 1
                reading_ids.append(outcome.replies[index].reading_id)
                continue
            error = outcome.refusals[index]
            message = error.message or message_for(error.code, ctx.language)
            rejected.extend(api.RejectedRow(row=number, serial_number=attempt.device["serial_number"],
                                            code=error.code, message=message) for number in attempt.rows)
    rejected.sort(key=lambda row: row.row)
    return api.BulkOutcome(accepted=accepted, rejected=rejected, reading_ids=reading_ids)


# --- history and usage ----------------------------------------------------------------------------------

@router.command("metering.history", api.History, access=Access.AUTH, replay=Replay.RERUN)
async def history(request: api.History, ctx: CommandContext) -> api.DeviceHistory:
    """The device's readings, newest first, with their source, and the printed pages per billing period."""
    device = await own_device(ctx, request.device_id)
    readings = await store_of(ctx).readings_of([device["_id"]], limit=HISTORY_LIMIT)
    items = [api.HistoryReading(
        reading_id=reading["_id"], reading_date=reading["reading_date"], period_end=reading["period_end"],
        source=reading["source"], flagged=bool(reading.get("flagged")),
        counters=[api.SubmittedCounter(counter=name, value=counter["value"], printed_pages=counter["pages"])
                  for name, counter in reading["counters"].items()]) for reading in readings]
    return api.DeviceHistory(device_id=device["_id"], serial_number=device["serial_number"], readings=items,
                             periods=[period for _, period in sorted(pages_per_period(readings).items(),
                                                                     reverse=True)])


# Readings `history` shows: 25 years of monthly readings and then some.
HISTORY_LIMIT = 1000


def pages_per_period(readings: Iterable[Document]) -> dict[str, api.PeriodPages]:
    """Per period end, the pages of every reading counting for it (each reading's pages are since the one before,
    so a period's pages add up whatever interim readings there were)."""
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for reading in readings:
        for name, counter in reading["counters"].items():
            sums[reading["period_end"]][name] += int(counter["pages"])
    return {end: api.PeriodPages(period_end=date.fromisoformat(end), printed_pages=dict(pages),
                                 total=sum(pages.values())) for end, pages in sums.items()}


@router.command("metering.usage", api.Usage, access=Access.AUTH, replay=Replay.RERUN, prefetch=FILE_PREFETCH)
async def usage(request: api.Usage, ctx: CommandContext) -> api.UsageReport:
    """Pages per device per period for the caller's whole fleet, periods ending from `from` to `to`; as xlsx with
    one row per device and period and a chart of the pages per period."""
    store = store_of(ctx)
    rows: list[api.UsageRow] = []
    devices = await visible_devices(store.devices, ctx.caller, {"outbox": 0, "reminder_recipients": 0})
    for start in range(0, len(devices), 1000):
        chunk = {device["_id"]: device for device in devices[start:start + 1000]}
        readings = await store.readings_of(list(chunk), first_period=request.from_.isoformat(),
                                           last_period=request.to.isoformat())
        by_device: dict[str, list[Document]] = defaultdict(list)
        for reading in readings:
            by_device[reading["device_id"]].append(reading)
        for device_id, device in chunk.items():
            for end, pages in sorted(pages_per_period(by_device.get(device_id, [])).items()):
                rows.append(api.UsageRow(device_id=device_id, serial_number=device["serial_number"],
                                         model=device["model"], friendly_name=device.get("friendly_name"),
                                         period_end=date.fromisoformat(end), printed_pages=pages.printed_pages,
                                         total=pages.total))
    if request.format == "json":
        return api.UsageReport(items=rows)
    content = await asyncio.to_thread(sheets.usage_workbook, rows, ctx.language)
    name = f"usage-{request.from_.isoformat()}-{request.to.isoformat()}.xlsx"
    return api.UsageReport(items=rows, file=FileObject.from_bytes(name, sheets.XLSX, content))


# --- what is due ---------------------------------------------------------------------------------------------

@router.command("metering.list_due", api.ListDue, access=Access.AUTH, replay=Replay.RERUN)
async def list_due(request: api.ListDue, ctx: CommandContext) -> Page[api.DueDevice]:
    """The caller's devices under contract whose reading window is open today and that have no reading for that
    period yet (of `device_ids` only, when given); e-maintenance devices report themselves and are never due."""
    store = store_of(ctx)
    day = today()
    asked = None if request.device_ids is None else set(request.device_ids)  # of what the caller sees: no more
    devices = [device for device in await visible_devices(store.devices, ctx.caller, {"outbox": 0})
               if device.get("contract_number") and device.get("e_maintenance") not in (True, 1)
               and (asked is None or device["_id"] in asked)]
    customers = await store.customers_by_number(
        device["customer_number"] for device in devices if device.get("customer_number"))
    open_windows: dict[str, periods.Window] = {}
    for device in devices:
        customer = customers.get(device.get("customer_number") or "")
        contract = contract_of(device, customer)
        if contract is None:
            continue
        window = periods.window_on(day, billing_of(device, customer))
        if window is not None and covers(contract, window.period_end, billing_of(device, customer)):
            open_windows[device["_id"]] = window
    read: set[str] = set()
    for end in {window.period_end for window in open_windows.values()}:
        ids = [device_id for device_id, window in open_windows.items() if window.period_end == end]
        read |= await store.devices_read_for(end.isoformat(), ids)
    due = [device for device in devices if device["_id"] in open_windows and device["_id"] not in read]
    page = due[(request.page - 1) * request.page_size:request.page * request.page_size]
    return Page[api.DueDevice](items=[due_device(device, open_windows[device["_id"]]) for device in page],
                               total=len(due), page=request.page, page_size=request.page_size)


def due_device(device: Document, window: periods.Window) -> api.DueDevice:
    previous = previous_values(device)
    counters = [api.DueCounter(counter=name, last_value=previous[name]["value"] if name in previous else None,
                               last_date=previous[name].get("date") if name in previous else None,
                               period_end=window.period_end) for name in device_counters(device)]
    return api.DueDevice(device_id=device["_id"], serial_number=device["serial_number"], model=device["model"],
                         friendly_name=device.get("friendly_name"), location=device.get("location") or {},
                         period_end=window.period_end, window_closes=window.closes, counters=counters)


# --- read models ------------------------------------------------------------------------------------------------

async def remember_device(event: DeviceState, ctx: EventContext) -> None:
    await store_of(ctx).remember_device(event.device_id, device_fields(event), event.version)


for _event in DEVICE_EVENTS:
    router.event(_event)(remember_device)


@router.event(CustomerProvisioned)
async def remember_customer(event: CustomerProvisioned, ctx: EventContext) -> None:
    await store_of(ctx).remember_customer(event.customer_number, contracts_of(event), event.version)


async def create_indexes(instance: ServiceInstance) -> None:
    await MeteringStore(instance.db).create_indexes()
