"""`portal-admin load`: a csv or xlsx file of product models, consumables or the installed base, read as the back
office reads it (`contracts.uploads`) and sent as the operator commands that take lists, batch by batch, keeping each
row's fate: in, or refused with a code and why.

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
from contracts.errors import message_for

Kind = Literal["models", "consumables", "installed_base"]
Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# Rows per call for models and devices: each call a small write and a visible step of the progress bar. The commands
# take up to 2,000 models and 10,000 devices, more than a file here holds (`uploads.MAX_ROWS`).
BATCH_ROWS = 100
MAX_CONSUMABLES_PER_MODEL = 500  # ordering.UpsertConsumables.items
# Refusals about the call, not its rows: every later call would meet them too.
CALL_CODES = frozenset({"unauthenticated", "forbidden", "rate_limited", "internal", "invalid_message"})
NOT_SENT = "not_sent"
# Sent, but no reply came within the timeout: the command waits in its durable queue and may be applied later.
NO_REPLY = "no_reply"
KEY_COLUMN: dict[Kind, str] = {"models": "model", "consumables": "article_number", "installed_base": "serial_number"}


@dataclass
class RowResult:
    row: int  # its line in the file, the column names being line 1
    key: str
    code: str | None = None  # None: in
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None

    def refuse(self, code: str, message: str) -> None:
        self.code, self.message = code, message

    def as_json(self) -> dict[str, Any]:
        return {"row": self.row, "key": self.key, "ok": self.ok, "code": self.code, "message": self.message}


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


def problems(error: ValidationError) -> str:
    """Each refused column of a row and why: `customer_number: required`."""
    found: dict[str, str] = {}
    for problem in error.errors():
        column = ".".join(str(part) for part in problem["loc"]) or "row"
        empty = problem["type"] in ("string_too_short", "missing") and problem.get("input") in ("", None)
        found.setdefault(column, "required" if empty else str(problem["msg"]))
    return "; ".join(f"{column}: {text}" for column, text in found.items())


def validated(schema: type[BaseModel], item: dict[str, Any], result: RowResult) -> dict[str, Any] | None:
    try:
        return schema.model_validate(item).model_dump(mode="json", exclude_none=True)
    except ValidationError as error:
        result.refuse("validation_failed", problems(error))
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
            result.refuse("validation_failed", "; ".join(filter(None, ["model: required", result.message])))
            continue
        by_model.setdefault(ordering.model_key(model), []).append((model, result, item))
    batches = []
    for grouped in by_model.values():
        model, items = grouped[0][0], [(result, item) for _, result, item in grouped]
        if len(items) > MAX_CONSUMABLES_PER_MODEL:
            for result, _ in items:
                result.refuse("validation_failed", f"model: more than {MAX_CONSUMABLES_PER_MODEL} consumables")
            continue
        given_twice(items)
        if any(not result.ok for result, _ in items):
            withheld(model, [result for result, _ in items if result.ok])
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
            for result in same:
                result.refuse("validation_failed", f"article_number: given twice for this model ({article} in "
                                                   f"rows {', '.join(str(other.row) for other in same)})")


def withheld(model: str, results: list[RowResult]) -> None:
    for result in results:
        result.refuse(NOT_SENT, f"another row of {model} was refused, and its list is replaced as a whole")


async def send(batches: list[Batch], call: Call, advance: Callable[[int], None]) -> None:
    """Send each batch; `advance(rows)` after each. Raises `CallRefused`, leaving the rows of a call that got no
    reply `no_reply` (it was sent: it may be applied yet) and the rows not sent `not_sent`."""
    for index, batch in enumerate(batches):
        try:
            await send_batch(batch, call)
        except CallRefused as stopped:
            if isinstance(stopped.error, TimeoutError):
                for result, _ in batch.items:
                    if result.ok:
                        result.refuse(NO_REPLY, "sent, but no reply within the timeout: it may still be applied; "
                                                "load the file again to be sure")
            for later in batches[index:]:
                for result, _ in later.items:
                    if result.ok:
                        result.refuse(NOT_SENT, "not sent: the load stopped")
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
            for index, problem in named.items():
                batch.items[index][0].refuse(error.code, problem)
            rest = batch.without(named)
            if rest.items:
                await send_batch(rest, call, retry=False)
            return
        rows = ", ".join(str(batch.items[index][0].row) for index in sorted(named))
        whole = f"not saved: sent in one call with refused row {rows}" if rows else \
            error.message or message_for(error.code, "en")
        for index, (result, _) in enumerate(batch.items):
            result.refuse(error.code, named.get(index) or whole)
        return
    for rejected in reply.get("rejected", []):  # the installed base judges each device on its own
        if 0 <= rejected["index"] < len(batch.items):
            batch.items[rejected["index"]][0].refuse(rejected["code"], message_for(rejected["code"], "en"))


def items_named(batch: Batch, fields: dict[str, str]) -> dict[int, str]:
    """The items a refusal's `fields` name (`models.3.serial_pattern: ...`), by index, with what is wrong."""
    named: dict[int, str] = {}
    pattern = re.compile(rf"^{re.escape(batch.item_path)}\.(\d+)(?:\.(.+))?$")
    for path, problem in fields.items():
        found = pattern.match(path)
        if found and int(found.group(1)) < len(batch.items):
            column = found.group(2) or "row"
            named[int(found.group(1))] = "; ".join(filter(None, [named.get(int(found.group(1))),
                                                                  f"{column}: {problem}"]))
    return named
