"""A load of product models, consumables or the installed base: the rows of an upload (`contracts.uploads`) sent as the
operator commands that take lists, batch by batch, keeping each row's fate: in, or refused with a code and why.

Beside the contracts because the back office (`/office/uploads`) and the operators' CLI (`portal-admin load`) both
load files this way. It keeps codes, never sentences: each front end says them in its own words and language.

A row the command's schema refuses is not sent. A batch the service refuses for some of its items (`fields` naming
`models.3.serial_pattern`) is sent again without them, once. A model's consumables go in one call, since the list
replaces the model's list: a model with a refused row is not sent at all, rather than losing that article.
A refusal that is not about the rows (`unauthenticated`, `forbidden`, no reply) stops the load: `CallRefused`. The rows
of a call that got no reply say `no_reply` (it was sent and waits in its queue: it may still be applied); the rows
of the calls after it, never sent, `not_sent`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from contracts import ordering, registration, uploads
from contracts.client import NotDelivered, PortalError

Kind = Literal["models", "consumables", "installed_base"]
Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# Rows per call for models and devices: each call a small write and a visible step of the CLI's progress bar. The
# commands take up to 2,000 models and 10,000 devices, more than a file here holds (`uploads.MAX_ROWS`).
BATCH_ROWS = 100
MAX_CONSUMABLES_PER_MODEL = 500  # ordering.UpsertConsumables.items
# Refusals about the call, not its rows: every later call would meet them too.
CALL_CODES = frozenset({"unauthenticated", "forbidden", "rate_limited", "internal", "invalid_message"})
VALIDATION_FAILED = "validation_failed"
NOT_SENT = "not_sent"
# Sent, but no reply came within the timeout: the command waits in its durable queue and may be applied later.
NO_REPLY = "no_reply"
KEY_COLUMN: dict[Kind, str] = {"models": "model", "consumables": "article_number", "installed_base": "serial_number"}

# What a column's problem can be, beside pydantic's error types (`missing` for an empty cell, `string_too_long`, ...).
GIVEN_TWICE = "given_twice"  # an article another row of the same model gives too
TOO_MANY = "too_many"  # more consumables for the model than its list takes
SERVICE_SAYS = "service_says"  # a service's own words about the column (English)


@dataclass(frozen=True)
class Problem:
    """What is wrong with one column of a row (`row` for the row as a whole)."""

    column: str
    code: str
    text: str  # in English, as the code's detail: pydantic's message, or the service's
    rows: tuple[int, ...] = ()  # GIVEN_TWICE: every row giving the article


@dataclass
class RowResult:
    row: int  # its line in the file, the column names being line 1
    key: str
    code: str | None = None  # None: in; else validation_failed, not_sent, no_reply or the service's code
    problems: list[Problem] = field(default_factory=list)  # the row's own columns at fault
    withheld_for: str | None = None  # not_sent as another row of this model was refused
    sent_with: tuple[int, ...] = ()  # refused with its call, for these refused rows' sake
    said: str | None = None  # the service's message about the whole call, in the language the call asked for

    @property
    def ok(self) -> bool:
        return self.code is None

    def refuse(self, code: str, problems: Iterable[Problem] = (), *, withheld_for: str | None = None,
               sent_with: tuple[int, ...] = (), said: str | None = None) -> None:
        self.code, self.problems = code, list(problems)
        self.withheld_for, self.sent_with, self.said = withheld_for, sent_with, said


@dataclass
class Batch:
    """One call: its command, the field its items go in, and the row of each item in order."""

    command: str
    item_path: str  # `models`; a refusal's `fields` name items as `models.<index>...`
    items: list[tuple[RowResult, dict[str, Any]]] = field(default_factory=list)
    model: str | None = None  # consumables: whose list this is

    def body(self) -> dict[str, Any]:
        items = [item for _, item in self.items]
        return {self.item_path: items} if self.model is None else {"model": self.model, self.item_path: items}

    def without(self, indexes: Iterable[int]) -> Batch:
        left_out = set(indexes)
        return Batch(self.command, self.item_path, [item for index, item in enumerate(self.items)
                                                    if index not in left_out], self.model)


class CallRefused(Exception):
    """A refusal or silence about the call itself; the rows not sent yet say `not_sent`."""

    def __init__(self, command: str, error: PortalError | NotDelivered | TimeoutError) -> None:
        super().__init__(command)
        self.command, self.error = command, error


def problems_of(error: ValidationError) -> list[Problem]:
    """Each refused column of a row and why, an empty cell `missing` (`customer_number: required`)."""
    found: dict[str, Problem] = {}
    for problem in error.errors():
        column = ".".join(str(part) for part in problem["loc"]) or "row"
        empty = problem["type"] in ("string_too_short", "missing") and problem.get("input") in ("", None)
        found.setdefault(column, Problem(column, "missing", "required") if empty
                         else Problem(column, problem["type"], str(problem["msg"])))
    return list(found.values())


def validated(schema: type[BaseModel], item: dict[str, Any], result: RowResult) -> dict[str, Any] | None:
    try:
        return schema.model_validate(item).model_dump(mode="json", exclude_none=True)
    except ValidationError as error:
        result.refuse(VALIDATION_FAILED, problems_of(error))
        return None


def plan(kind: Kind, rows: list[tuple[int, dict[str, str]]]) -> tuple[list[RowResult], list[Batch]]:
    """Every row's result (the refused ones decided already) and the calls that send the others."""
    results = [RowResult(line, row.get(KEY_COLUMN[kind], "")) for line, row in rows]
    if kind == "consumables":
        return results, consumable_batches(rows, results)
    command, path = ((registration.UpsertModels.routing_key, "models") if kind == "models"
                     else (registration.ImportInstalledBase.routing_key, "devices"))
    schema: type[BaseModel] = registration.ProductModel if kind == "models" else registration.InstalledDevice
    item_of = uploads.model_of if kind == "models" else uploads.installed_device_of
    valid = [(result, item) for result, (_, row) in zip(results, rows, strict=True)
             if (item := validated(schema, item_of(row), result)) is not None]
    batches = [Batch(command, path, valid[start:start + BATCH_ROWS]) for start in range(0, len(valid), BATCH_ROWS)]
    return results, batches


def consumable_batches(rows: list[tuple[int, dict[str, str]]], results: list[RowResult]) -> list[Batch]:
    """One call per model, its rows grouped by ordering's key of the model (`ES5431dn` and `es5431DN` are one list
    there: two calls would have the second replace the first), sent under the name its first row gives."""
    by_model: dict[str, list[tuple[str, RowResult, dict[str, Any] | None]]] = {}
    for result, (_, row) in zip(results, rows, strict=True):
        model = row.get("model", "").strip()
        item = validated(ordering.Consumable, uploads.consumable_of(row), result)
        if not model:
            result.refuse(VALIDATION_FAILED, [Problem("model", "missing", "required"), *result.problems])
            continue
        by_model.setdefault(ordering.model_key(model), []).append((model, result, item))
    batches = []
    for grouped in by_model.values():
        model, items = grouped[0][0], [(result, item) for _, result, item in grouped]
        if len(items) > MAX_CONSUMABLES_PER_MODEL:
            for result, _ in items:
                result.refuse(VALIDATION_FAILED, [Problem("model", TOO_MANY,
                                                          f"more than {MAX_CONSUMABLES_PER_MODEL} consumables")])
            continue
        given_twice(items)
        if any(not result.ok for result, _ in items):
            for result in [result for result, _ in items if result.ok]:
                result.refuse(NOT_SENT, withheld_for=model)
        else:
            batches.append(Batch(ordering.UpsertConsumables.routing_key, "items",
                                 [(result, item) for result, item in items if item is not None], model))
    return batches


def given_twice(items: list[tuple[RowResult, dict[str, Any] | None]]) -> None:
    """Refuse the rows of one model's list that give an article another row gives too, as ordering would."""
    rows_of: dict[str, list[RowResult]] = {}
    for result, item in items:
        if item is not None:
            rows_of.setdefault(item["article_number"], []).append(result)
    for article, same in rows_of.items():
        if len(same) > 1:
            rows = tuple(other.row for other in same)
            text = f"given twice for this model ({article} in rows {', '.join(str(row) for row in rows)})"
            for result in same:
                result.refuse(VALIDATION_FAILED, [Problem("article_number", GIVEN_TWICE, text, rows)])


async def send(batches: list[Batch], call: Call, advance: Callable[[int], None] = lambda rows: None) -> None:
    """Send each batch; `advance(rows)` after each. Raises `CallRefused`, leaving the rows of a call that got no
    reply `no_reply` (it was sent: it may be applied yet) and the rows not sent `not_sent`."""
    for index, batch in enumerate(batches):
        try:
            await send_batch(batch, call)
        except CallRefused as stopped:
            if isinstance(stopped.error, TimeoutError):
                for result, _ in batch.items:
                    if result.ok:
                        result.refuse(NO_REPLY)
            for later in batches[index:]:
                for result, _ in later.items:
                    if result.ok:
                        result.refuse(NOT_SENT)
            raise
        advance(len(batch.items))


async def send_batch(batch: Batch, call: Call, retry: bool = True) -> None:
    try:
        reply = await call(batch.command, batch.body())
    except (NotDelivered, TimeoutError) as error:
        raise CallRefused(batch.command, error) from None
    except PortalError as error:
        if error.code in CALL_CODES:
            raise CallRefused(batch.command, error) from None
        named = items_named(batch, error.fields)
        if retry and named and batch.model is None:  # a model's consumables go all at once or not at all
            for index, problems in named.items():
                batch.items[index][0].refuse(error.code, problems)
            rest = batch.without(named)
            if rest.items:
                await send_batch(rest, call, retry=False)
            return
        refused_rows = tuple(batch.items[index][0].row for index in sorted(named))
        for index, (result, _) in enumerate(batch.items):
            if index in named:
                result.refuse(error.code, named[index])
            elif refused_rows:
                result.refuse(error.code, sent_with=refused_rows)
            else:
                result.refuse(error.code, said=error.message or None)
        return
    for rejected in reply.get("rejected", []):  # the installed base judges each device on its own
        if 0 <= rejected["index"] < len(batch.items):
            batch.items[rejected["index"]][0].refuse(rejected["code"])


def items_named(batch: Batch, fields: dict[str, str]) -> dict[int, list[Problem]]:
    """The items a refusal's `fields` name (`models.3.serial_pattern: ...`), by index, with what is wrong."""
    named: dict[int, list[Problem]] = {}
    pattern = re.compile(rf"^{re.escape(batch.item_path)}\.(\d+)(?:\.(.+))?$")
    for path, problem in fields.items():
        found = pattern.match(path)
        if found and int(found.group(1)) < len(batch.items):
            named.setdefault(int(found.group(1)), []).append(Problem(found.group(2) or "row", SERVICE_SAYS, problem))
    return named
