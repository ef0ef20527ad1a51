"""Judging a reading (every rule of CATALOG §4) and storing it once, for one device or for thousands.

A reading is judged against the device's cached last values (`last`, or the ERP's `baseline` before the first
reading) and numbered `last_seq + 1`. Storing it inserts `<device_id>:<seq>`: when another reading of that device
came first, or the cache is behind after a crash, the insert collides, the device's latest reading is read from
`readings` (the truth), the cache repaired, and the reading judged again. So two readings submitted at the same
moment can never both pass a check against the same last value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TypeVar

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from contracts import metering as api
from contracts.errors import message_for
from services.metering import periods
from services.metering.settings import MeteringSettings
from services.metering.store import MeteringStore, reading_key
from services.runtime.commands import CommandContext, CommandError
from services.runtime.mongo import Document
from services.runtime.readmodels import contract_of

R = TypeVar("R", bound=BaseModel)
# Each retry follows a reading that won; a device gets few readings at the same moment.
MAX_ATTEMPTS = 20


@dataclass
class Attempt:
    """One device's reading to judge: every counter at once, from one caller."""

    device: Document
    values: dict[str, int]  # counter -> value, in the order given
    reading_date: date
    source: api.Source
    submitted_by: str | None
    command_id: str | None
    rows: list[int] = field(default_factory=list)  # bulk: the rows it came from
    duplicates: list[str] = field(default_factory=list)  # counters given twice


@dataclass(frozen=True)
class Judged:
    reading: Document
    event: api.ReadingSubmitted
    reply: api.ReadingSubmittedReply


def billing_of(device: Document, customer: Document | None) -> periods.BillingPeriod:
    contract = contract_of(device, customer)
    billing = contract.get("billing_period") if contract else None
    return billing if billing in periods.MONTHS else periods.DEFAULT_PERIOD


def covers(contract: Document, period_end: date, billing: periods.BillingPeriod) -> bool:
    """Whether the contract runs during (some of) the period ending `period_end`."""
    start = date.fromisoformat(str(contract["start_date"]))
    end = date.fromisoformat(str(contract["end_date"])) if contract.get("end_date") else None
    return start <= period_end and (end is None or end > periods.previous_end(period_end, billing))


def previous_values(device: Document) -> dict[str, Document]:
    """Per counter the value a new reading may not go below, with its date: the last reading, else the ERP's."""
    last = device.get("last") or {}
    return dict(last) if int(device.get("last_seq") or 0) > 0 and last else dict(device.get("baseline") or {})


def device_counters(device: Document) -> list[str]:
    return list(device.get("counters") or []) or list((device.get("baseline") or {}).keys())


def check(attempt: Attempt, *, latest: date) -> None:
    """The rules, cheapest first; raises the catalogue's refusal. `latest`: the latest date anywhere on earth now
    (`handlers.latest_today`); a reading dated after it is in the future."""
    counters = device_counters(attempt.device)
    if attempt.duplicates:
        raise CommandError("validation_failed", fields={
            f"readings.{counter}": "counter given twice" for counter in attempt.duplicates})
    unknown = [name for name in attempt.values if name not in counters]
    if unknown:
        raise CommandError("unknown_counter", fields={f"readings.{name}": "unknown_counter" for name in unknown})
    missing = [name for name in counters if name not in attempt.values]
    if missing:
        raise CommandError("counters_incomplete", fields={f"readings.{name}": "missing" for name in missing})
    previous = previous_values(attempt.device)
    last_date = max((date.fromisoformat(value["date"]) for value in previous.values() if value.get("date")),
                    default=None)
    if attempt.reading_date > latest:
        raise CommandError("invalid_reading_date", fields={"reading_date": "in the future"})
    if last_date is not None and attempt.reading_date < last_date:
        raise CommandError("invalid_reading_date", fields={"reading_date": f"before the last reading "
                                                                           f"({last_date.isoformat()})"})
    lower = [name for name, value in attempt.values.items()
             if name in previous and value < int(previous[name]["value"])]
    if lower:
        raise CommandError("reading_lower_than_last",
                           fields={f"readings.{name}": f"below {previous[name]['value']}" for name in lower})


def preview(attempt: Attempt, billing: periods.BillingPeriod, settings: MeteringSettings, *,
            language: str) -> api.ReadingPreview:
    """Printed pages per counter and plausibility warnings, for a reading that passed `check`."""
    previous = previous_values(attempt.device)
    first = attempt.device.get("first") or {}
    counters, warnings = [], []
    for name in device_counters(attempt.device):
        value = attempt.values[name]
        last = previous.get(name)
        last_value = int(last["value"]) if last else None
        last_date = date.fromisoformat(last["date"]) if last and last.get("date") else None
        pages = value - last_value if last_value is not None else value
        counters.append(api.CounterPreview(counter=name, last_date=last_date, last_value=last_value,
                                           new_value=value, printed_pages=pages))
        if last_date is not None and unusual(pages, (attempt.reading_date - last_date).days, first.get(name), last,
                                             settings):
            warnings.append(api.ReadingWarning(code="unusually_high", counter=name,
                                               message=message_for("unusually_high", language, counter=name)))
    return api.ReadingPreview(device_id=attempt.device["_id"], reading_date=attempt.reading_date,
                              period_end=periods.counts_for(attempt.reading_date, billing), counters=counters,
                              warnings=warnings)


def unusual(pages: int, days: int, first: Document | None, last: Document | None,
            settings: MeteringSettings) -> bool:
    """Far more pages per day since the last reading than the device's own average from its first known value to
    its last (an extra digit multiplies them by about ten)."""
    if pages < settings.metering_plausible_pages or not first or not last:
        return False
    span = (date.fromisoformat(last["date"]) - date.fromisoformat(first["date"])).days
    if span < 1:
        return False
    usual = max((int(last["value"]) - int(first["value"])) / span, 1.0)
    return pages / max(days, 1) > settings.metering_plausibility_factor * usual


def judge(attempt: Attempt, billing: periods.BillingPeriod, settings: MeteringSettings, *, language: str,
          latest: date) -> Judged:
    check(attempt, latest=latest)
    shown = preview(attempt, billing, settings, language=language)
    device = attempt.device
    seq = int(device.get("last_seq") or 0) + 1
    reading_id = reading_key(device["_id"], seq)
    counters = [api.SubmittedCounter(counter=counter.counter, value=counter.new_value,
                                      printed_pages=counter.printed_pages) for counter in shown.counters]
    flagged = bool(shown.warnings)
    reading: Document = {
        "_id": reading_id, "device_id": device["_id"], "seq": seq, "serial_number": device["serial_number"],
        "customer_number": device.get("customer_number"), "contract_number": device.get("contract_number"),
        "reading_date": attempt.reading_date.isoformat(), "period_end": shown.period_end.isoformat(),
        "in_window": periods.window_on(attempt.reading_date, billing) is not None, "source": attempt.source,
        "counters": {counter.counter: {"value": counter.value, "pages": counter.printed_pages} for counter in counters},
        "flagged": flagged, "warnings": [warning.model_dump() for warning in shown.warnings],
        "command_id": attempt.command_id, "submitted_by": attempt.submitted_by, "created_at": datetime.now(UTC),
    }
    event = api.ReadingSubmitted(
        reading_id=reading_id, device_id=device["_id"], serial_number=device["serial_number"],
        customer_number=device.get("customer_number"), contract_number=device.get("contract_number"),
        reading_date=attempt.reading_date, period_end=shown.period_end, source=attempt.source, counters=counters,
        flagged=flagged, submitted_by=attempt.submitted_by)
    reply = api.ReadingSubmittedReply(reading_id=reading_id, reading_date=attempt.reading_date,
                                      period_end=shown.period_end, counters=counters, warnings=shown.warnings)
    return Judged(reading, event, reply)


def cache_fields(device: Document, reading: Document) -> Document:
    """The device's cache once `reading` is its latest: last values, and first values where none were known."""
    fields: Document = {"last_date": reading["reading_date"]}
    first = device.get("first") or {}
    baseline = device.get("baseline") or {}
    for name, counter in reading["counters"].items():
        fields[f"last.{name}"] = {"value": counter["value"], "date": reading["reading_date"],
                                  "source": reading["source"]}
        if name not in first:
            fields[f"first.{name}"] = baseline.get(name) or {"value": counter["value"],
                                                             "date": reading["reading_date"]}
    return fields


def replied(reading: Document) -> api.ReadingSubmittedReply:
    """The reply of a reading stored before (the same command, re-run after a crash)."""
    counters = [api.SubmittedCounter(counter=name, value=counter["value"], printed_pages=counter["pages"])
                for name, counter in reading["counters"].items()]
    return api.ReadingSubmittedReply(reading_id=reading["_id"], reading_date=reading["reading_date"],
                                     period_end=reading["period_end"], counters=counters,
                                     warnings=[api.ReadingWarning(**warning) for warning in reading.get("warnings")
                                               or []])


@dataclass
class Outcome:
    """Per attempt: the reply of its stored reading, or its refusal."""

    replies: dict[int, api.ReadingSubmittedReply] = field(default_factory=dict)
    refusals: dict[int, CommandError] = field(default_factory=dict)


async def record(store: MeteringStore, attempts: Sequence[Attempt], settings: MeteringSettings, *,
                 language: str, latest: date) -> Outcome:
    """Judge and store each attempt on its own; a refused one changes nothing. Two attempts for one device are
    stored one after the other (the second judged against the first).

    An attempt re-run after a crash (its command's reading stored already) is refused or collides, on its
    `<device>:<seq>` or on the unique `command_id`; only then is its earlier reading looked for, and its reply given
    again. A first run reads nothing for it."""
    outcome = Outcome()
    pending = dict(enumerate(attempts))
    customers = await store.customers_by_number(
        attempt.device["customer_number"] for attempt in attempts if attempt.device.get("customer_number"))
    looked_for: set[str] = set()  # the command ids whose earlier reading was looked for
    for _ in range(MAX_ATTEMPTS):
        if not pending:
            return outcome
        batch: list[tuple[int, Judged]] = []
        seen: set[str] = set()
        for index, attempt in pending.items():
            if attempt.device["_id"] in seen:
                continue  # judged against the first one once it is stored
            try:
                billing = billing_of(attempt.device, customers.get(attempt.device.get("customer_number") or ""))
                batch.append((index, judge(attempt, billing, settings, language=language, latest=latest)))
                seen.add(attempt.device["_id"])
            except CommandError as error:
                outcome.refusals[index] = error
        for index in outcome.refusals:
            pending.pop(index, None)
        stored = await store.insert_readings([(judged.reading, [judged.event]) for _, judged in batch])
        advanced = [(judged.reading["device_id"], judged.reading["seq"],
                     cache_fields(pending[index].device, judged.reading))
                    for (index, judged), ok in zip(batch, stored, strict=True) if ok]
        await store.advance_caches(advanced)
        collided = [index for (index, _), ok in zip(batch, stored, strict=True) if not ok]
        # A device's later attempts are judged in later rounds: each attempt is looked for when it first fails.
        suspects = [index for index in [*outcome.refusals, *collided]
                    if attempts[index].command_id and attempts[index].command_id not in looked_for]
        if suspects:
            looked_for.update(str(attempts[index].command_id) for index in suspects)
            answered = await answered_before(store, attempts, suspects, outcome)
            collided = [index for index in collided if index not in answered]
            for index in answered:
                pending.pop(index, None)
        fresh: dict[str, Document] = {}
        for (index, judged), ok in zip(batch, stored, strict=True):
            if ok:
                outcome.replies[index] = judged.reply
                del pending[index]
                fresh[judged.reading["device_id"]] = {**pending_device(attempts[index].device, judged.reading)}
        for index in collided:
            fresh[attempts[index].device["_id"]] = await repaired(store, attempts[index].device)
        for attempt in pending.values():
            if attempt.device["_id"] in fresh:
                attempt.device = fresh[attempt.device["_id"]]
    for index in pending:
        outcome.refusals[index] = CommandError("conflict")
    return outcome


async def record_once(ctx: CommandContext, store: MeteringStore, attempt: Attempt, customer: Document | None,
                      settings: MeteringSettings, *, latest: date,
                      answer: Callable[[api.ReadingSubmittedReply], R]) -> R:
    """One reading of a command declared `claim_in_write`: the claim, the reading with its event, the device's cache
    and the stored reply in one round trip (`ctx.write_once`). When another reading of the device came first, the
    insert collides: the cache is repaired from the latest reading and the attempt judged again.

    A command re-run after its claim expired (days later) is refused, or collides on its unique `command_id`; only
    then is its earlier reading looked for, and its reply given again. `answer`: the command's reply, made from the
    reading's."""
    billing = billing_of(attempt.device, customer)
    for _ in range(MAX_ATTEMPTS):
        try:
            judged = judge(attempt, billing, settings, language=ctx.language, latest=latest)
        except CommandError:
            earlier = await earlier_reading(store, attempt)
            if earlier is None:
                raise
            return answer(replied(earlier))
        try:
            reply = answer(judged.reply)
            await ctx.write_once(store.reading_writes(judged.reading, [judged.event],
                                                      cache_fields(attempt.device, judged.reading),
                                                      command_id=attempt.command_id), reply)
            return reply
        except DuplicateKeyError:
            earlier = await earlier_reading(store, attempt)
            if earlier is not None:
                return answer(replied(earlier))
            attempt.device = await repaired(store, attempt.device)
    raise CommandError("conflict")


async def earlier_reading(store: MeteringStore, attempt: Attempt) -> Document | None:
    """The reading the attempt's command stored before, if any."""
    if not attempt.command_id:
        return None
    return (await store.readings_by_commands([attempt.command_id])).get(attempt.command_id)


async def answered_before(store: MeteringStore, attempts: Sequence[Attempt], suspects: Sequence[int],
                          outcome: Outcome) -> set[int]:
    """Of the attempts refused or colliding (`suspects`), those whose command stored its reading before a crash:
    their reply is that reading's, and they are no longer refused. Their indexes."""
    by_command = {attempts[index].command_id: index for index in suspects if attempts[index].command_id}
    earlier = await store.readings_by_commands([command_id for command_id in by_command if command_id])
    for command_id, reading in earlier.items():
        index = by_command[command_id]
        outcome.refusals.pop(index, None)
        outcome.replies[index] = replied(reading)
    return {by_command[command_id] for command_id in earlier}


def pending_device(device: Document, reading: Document) -> Document:
    """The device as its cache reads after `reading` was stored."""
    updated = {**device, "last_seq": reading["seq"], "last": dict(device.get("last") or {}),
               "first": dict(device.get("first") or {})}
    for path, value in cache_fields(device, reading).items():
        if "." in path:
            group, name = path.split(".", 1)
            updated[group][name] = value
        else:
            updated[path] = value
    return updated


async def repaired(store: MeteringStore, device: Document) -> Document:
    """The device with its cache brought up to its latest stored reading (written back too)."""
    latest = await store.latest_reading(device["_id"])
    if latest is None:
        return device
    fields = cache_fields(device, latest)
    await store.advance_caches([(device["_id"], latest["seq"], fields)])
    return pending_device(device, latest)
