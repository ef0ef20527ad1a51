"""The reminder schedule: at a window's opening one reminder per recipient listing all their due devices, a second
one 3 days after the period end for those still missing, and overdue devices once the window closed.

`run(as_of)` is the whole day's logic; the scheduler in every replica calls it for each day not run yet, and
`metering.operator.run_reminders` for any day. Devices are read in one pass over the collection and readings in
one query per period, never device by device. Each reminder is one document keyed by (recipient, period, kind),
each overdue notice by (device, period): inserting them is what decides, so replicas running the same day at the
same moment send each once, and a re-run sends nothing new. The personal link of a reminder is a random token
whose hash is kept in that document.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from contracts import metering as api
from contracts.base import Page
from contracts.registration import Location, ReminderRecipient
from services.metering import periods
from services.metering.handlers import judge_rows, store_of, today
from services.metering.readings import billing_of, covers, device_counters, previous_values
from services.metering.settings import metering_settings
from services.metering.sheets import SheetRow
from services.metering.store import OVERDUE, REMINDERS, MeteringStore
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.instance import Instance
from services.runtime.mongo import Document
from services.runtime.readmodels import contract_of
from services.runtime.service import Router

log = logging.getLogger(__name__)
router = Router()
Listed = TypeVar("Listed", bound=api.LinkDevice)

# Overdue devices of a closed window are looked for during the week after it closed.
OVERDUE_SEARCH: timedelta = timedelta(days=7)
DEVICE_FIELDS = dict.fromkeys(("serial_number", "model", "friendly_name", "location", "counters", "baseline", "last",
                                "last_seq", "last_date", "customer_number", "contract_number", "e_maintenance",
                                "reminder_recipients"), 1)


@dataclass(frozen=True)
class Due:
    """What one day asks for one billing period."""

    billing: periods.BillingPeriod
    window: periods.Window
    kind: api.ReminderKind


def schedule(day: date) -> tuple[list[Due], list[tuple[periods.BillingPeriod, periods.Window]]]:
    """The reminders (per billing period: the window open on `day`, `opening` until the second reminder's day)
    and the closed windows whose overdue devices `day` looks for."""
    reminders, overdue = [], []
    for billing in periods.MONTHS:
        window = periods.window_on(day, billing)  # type: ignore[arg-type]
        if window is not None:
            kind: api.ReminderKind = "opening" if day < window.second_reminder else "second"
            reminders.append(Due(billing, window, kind))  # type: ignore[arg-type]
        closed = periods.closed_window_before(day, billing)  # type: ignore[arg-type]
        if day <= closed.closes + OVERDUE_SEARCH:
            overdue.append((billing, closed))
    return reminders, overdue  # type: ignore[return-value]


def recipient_key(recipient: Document) -> str:
    if recipient.get("email"):
        return f"email:{str(recipient['email']).lower()}"
    if recipient.get("user_id"):
        return f"user:{recipient['user_id']}"
    return f"customer:{recipient.get('customer_number')}"


def hashed(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def run(instance: Instance, day: date) -> api.RemindersRun:
    store = MeteringStore(instance.db)
    settings = metering_settings(instance)
    reminders_due, overdue_due = schedule(day)
    billings = {due.billing for due in reminders_due} | {billing for billing, _ in overdue_due}
    if not billings:
        return api.RemindersRun(reminders=0, overdue=0)
    customers = {customer["_id"]: customer async for customer in store.customers.find({}, {"contracts": 1})}
    read = {end: await store.devices_read_for(end.isoformat())
            for end in {due.window.period_end for due in reminders_due} | {window.period_end
                                                                          for _, window in overdue_due}}
    # One reminder per recipient, period end and kind, whichever billing periods end that day (a quarter end is also
    # a month end): keyed (period end, kind), so a recipient's monthly and quarterly devices share one mail.
    groups: dict[tuple[date, str], tuple[periods.Window, Recipients]] = {}
    owners: dict[str, str | None] = {}  # the customer of each listed device, when it was listed
    notices: list[tuple[Document, list[api.ReadingOverdue]]] = []
    now = datetime.now(UTC)
    # Streamed, keeping only the devices the reminders list (as read: `make bench` measured a peak of about 550 MB for
    # 100,000 listed devices either way; models are built per recipient when their reminder is written).
    # Per contract (customer, number): which of the day's reminders and overdue windows it covers, worked out once.
    terms: dict[tuple[str | None, str | None], tuple[list[Due], list[periods.Window]]] = {}
    async for device in store.devices.find({}, DEVICE_FIELDS):
        key = (device.get("customer_number"), device.get("contract_number"))
        if key not in terms:
            customer = customers.get(key[0] or "")
            contract = contract_of(device, customer)
            billing = billing_of(device, customer)
            terms[key] = ([], []) if contract is None else (  # no contract, or not known yet: a later run
                [due for due in reminders_due if due.billing == billing
                 and covers(contract, due.window.period_end, billing)],
                [window for overdue_billing, window in overdue_due if overdue_billing == billing
                 and covers(contract, window.period_end, billing)])
        due_now, closed = terms[key]
        if due_now and device.get("e_maintenance") not in (True, 1):
            for due in due_now:
                if device["_id"] in read[due.window.period_end]:
                    continue
                owners[device["_id"]] = device.get("customer_number")
                _, by_recipient = groups.setdefault((due.window.period_end, due.kind), (due.window, {}))
                for recipient in device.get("reminder_recipients") or []:
                    by_recipient.setdefault(recipient_key(recipient), (recipient, []))[1].append((device, recipient))
        notices.extend(overdue_notice(device, window, now) for window in closed
                       if device["_id"] not in read[window.period_end])
    reminders = 0
    for (_, kind), (window, by_recipient) in groups.items():
        reminders += await send_reminders(store, instance, window, kind, by_recipient,  # type: ignore[arg-type]
                                          owners, settings.metering_reminder_batch)
    overdue = 0
    for start in range(0, len(notices), settings.metering_reminder_batch):
        overdue += await store.insert_once(OVERDUE, notices[start:start + settings.metering_reminder_batch])
    log.info("reminders for %s: %d reminders, %d overdue", day, reminders, overdue)
    return api.RemindersRun(reminders=reminders, overdue=overdue)


# recipient key -> (recipient, [(device as read, the device's own recipient entry)])
Recipients = dict[str, tuple[Document, list[tuple[Document, Document]]]]


async def send_reminders(store: MeteringStore, instance: Instance, window: periods.Window, kind: api.ReminderKind,
                         recipients: Recipients, owners: dict[str, str | None], batch: int) -> int:
    """One reminder document (and event) per recipient not reminded of this period and kind yet."""
    end = window.period_end.isoformat()
    keyed = {hashed(f"{key}|{end}|{kind}"): key for key in recipients}
    existing = await store.existing_ids(REMINDERS, list(keyed))
    fresh = [reminder_id for reminder_id in keyed if reminder_id not in existing]
    public_url = instance.settings.public_url.rstrip("/")
    sent = 0
    documents: list[tuple[Document, list[api.ReminderDue]]] = []
    for reminder_id in fresh:
        recipient, listed = recipients[keyed[reminder_id]]
        own = {device["_id"]: (device, entry) for device, entry in reversed(listed)}  # each once, its first entry
        devices = [reminder_device(device, api.ReminderDevice).model_copy(
                       update={"recipient": ReminderRecipient(**entry)}) for device, entry in own.values()]
        token = secrets.token_urlsafe(24)
        event = api.ReminderDue(
            reminder_id=reminder_id, recipient=ReminderRecipient(**recipient), kind=kind,
            period_end=window.period_end, window_closes=window.closes,
            devices=sorted(devices, key=lambda device: device.serial_number),
            reading_url=f"{public_url}/readings?token={token}")
        documents.append(({"_id": reminder_id, "recipient": recipient, "kind": kind, "period_end": end,
                           "window_closes": window.closes.isoformat(), "link_hash": hashed(token),
                           "device_ids": [device.device_id for device in devices],
                           # The personal link serves a device only while it still belongs to this customer.
                           "owners": {device.device_id: owners.get(device.device_id) for device in devices},
                           "created_at": datetime.now(UTC)},
                          [event]))
        if len(documents) >= batch:
            sent += await store.insert_once(REMINDERS, documents)
            documents = []
    sent += await store.insert_once(REMINDERS, documents)
    return sent


def reminder_device(device: Document, model: type[Listed]) -> Listed:
    """A device as a reminder (or its link's page) lists it: each counter with the value a reading may not go
    below."""
    previous = previous_values(device)
    return model(
        device_id=device["_id"], serial_number=device["serial_number"], model=device["model"],
        friendly_name=device.get("friendly_name"), location=Location(**(device.get("location") or {})),
        counters=[api.ReminderCounter(counter=name, last_value=previous[name]["value"] if name in previous else None,
                                      last_date=previous[name].get("date") if name in previous else None)
                  for name in device_counters(device)])


def overdue_notice(device: Document, window: periods.Window,
                   now: datetime) -> tuple[Document, list[api.ReadingOverdue]]:
    last_date = device.get("last_date") or max(
        (value.get("date") for value in (device.get("baseline") or {}).values() if value.get("date")), default=None)
    notice = {"_id": f"{device['_id']}:{window.period_end.isoformat()}", "device_id": device["_id"],
              "serial_number": device["serial_number"], "model": device["model"],
              "customer_number": device.get("customer_number"), "contract_number": device.get("contract_number"),
              "period_end": window.period_end.isoformat(), "window_closed": window.closes.isoformat(),
              "last_date": last_date, "detected_at": now}
    event = api.ReadingOverdue(**{key: value for key, value in notice.items() if key not in ("_id", "last_date")})
    return notice, [event]


# --- commands --------------------------------------------------------------------------------------------

@router.command("metering.operator.run_reminders", api.RunReminders, access=Access.OPERATOR)
async def run_reminders(request: api.RunReminders, ctx: CommandContext) -> api.RemindersRun:
    """Runs the reminder schedule for that day now (also a past day); what was sent before is not sent again."""
    return await run(ctx.instance, request.as_of)


@router.command("metering.operator.overdue", api.ListOverdue, access=Access.OPERATOR, replay=Replay.RERUN)
async def list_overdue(request: api.ListOverdue, ctx: CommandContext) -> Page[api.OverdueDevice]:
    """Devices without a reading for the period once its window closed, by serial number."""
    notices, total = await store_of(ctx).overdue_page(request.period_end.isoformat(), request.page,
                                                      request.page_size)
    items = [api.OverdueDevice(**{key: value for key, value in notice.items() if key in api.OverdueDevice.model_fields})
             for notice in notices]
    return Page[api.OverdueDevice](items=items, total=total, page=request.page, page_size=request.page_size)


@router.command("metering.submit_by_link", api.SubmitByLink, access=Access.ANYONE)
async def submit_by_link(request: api.SubmitByLink, ctx: CommandContext) -> api.BulkOutcome:
    """Readings through a reminder's personal link, no sign-in: for the devices it lists, until its window closes;
    other devices are `not_found`, an unknown or expired link `token_invalid`."""
    store = store_of(ctx)
    reminder = await open_link(store, request.token)
    rows = [SheetRow(index, reading.device_id, reading.counter, reading.value, request.reading_date)
            for index, reading in enumerate(request.readings, start=1)]

    async def devices_of(device_ids: list[str]) -> dict[str, Document]:
        return await served_devices(store, reminder, device_ids)

    return await judge_rows(ctx, rows, key_of=lambda row: row.key, devices_of=devices_of, submitted_by=None)


@router.command("metering.link_devices", api.LinkDevices, access=Access.ANYONE, replay=Replay.RERUN)
async def link_devices(request: api.LinkDevices, ctx: CommandContext) -> api.LinkedDevices:
    """The devices a reminder's personal link still serves, each counter with its last value, for the page the
    link opens; the same checks as `submit_by_link`."""
    store = store_of(ctx)
    reminder = await open_link(store, request.token)
    served = await served_devices(store, reminder, list(reminder.get("device_ids") or []))
    return api.LinkedDevices(
        period_end=date.fromisoformat(reminder["period_end"]),
        window_closes=date.fromisoformat(reminder["window_closes"]),
        devices=sorted((reminder_device(device, api.LinkDevice) for device in served.values()),
                       key=lambda device: device.serial_number))


async def open_link(store: MeteringStore, token: str) -> Document:
    """The reminder whose personal link this is, while its window is open; `token_invalid` for an unknown or
    expired link."""
    reminder = await store.reminder_by_link(hashed(token))
    if reminder is None or date.fromisoformat(reminder["window_closes"]) < today():
        raise CommandError("token_invalid", fields={"token": "token_invalid"})
    return reminder


async def served_devices(store: MeteringStore, reminder: Document, device_ids: list[str]) -> dict[str, Document]:
    """Of `device_ids`, the devices the reminder lists and its link still reaches (`still_served`), by id."""
    listed = set(reminder.get("device_ids") or [])
    owners = reminder.get("owners") or {}
    recipient = reminder.get("recipient") or {}
    wanted = [device_id for device_id in device_ids if device_id in listed]
    return {device["_id"]: device async for device in store.devices.find({"_id": {"$in": wanted}})
            if still_served(device, owners.get(device["_id"]), recipient)}


def still_served(device: Document, owner: str | None, recipient: Document) -> bool:
    """Whether a reminder's personal link still reaches the device: it belongs to the customer it belonged to when
    the reminder went out, and that customer still has it in view (or the claimant it was for still sees it)."""
    if device.get("customer_number") != owner:
        return False
    if recipient.get("user_id") and recipient["user_id"] in (device.get("claimants") or []):
        return True
    return device.get("visible", True) in (True, 1)


# --- the scheduler ------------------------------------------------------------------------------------------

async def scheduler(instance: Instance) -> None:
    """Every replica runs each day once it has begun (UTC), catching up on days it missed; the unique reminder and
    overdue documents make the replicas' runs add up to one."""
    settings = metering_settings(instance)
    store = MeteringStore(instance.db)
    while True:
        try:
            current = today()
            last = await store.last_scheduled_day()
            first = current - timedelta(days=settings.metering_catch_up_days)
            day = max(date.fromisoformat(last) + timedelta(days=1), first) if last else current
            while day <= current:
                await run(instance, day)
                await store.mark_scheduled(day.isoformat())
                day += timedelta(days=1)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reminder schedule failed; trying again at the next tick")
        await asyncio.sleep(settings.metering_scheduler_seconds)
