"""`portal-admin` (`python -m admin`): operator commands from a shell, over contracts.client.PortalClient.

    portal-admin dead-letters list [--service S] [--queue Q] [--json]
    portal-admin dead-letters replay --service S --queue Q (--message-id ID | --all)
    portal-admin load models|consumables|installed-base FILE [--json]
    portal-admin deliveries [--recipient R] [--status sent|retrying|failed] [--event E] [--json]
    portal-admin reminders run [--date YYYY-MM-DD] [--json]
    portal-admin overdue [--period-end YYYY-MM-DD] [--json]

Each command calls the portal's operator commands (a load: one per batch of rows, see `contracts/loads.py`); the
services decide and refuse. Exit codes: 0 done; 1 refused (a load: some rows refused); 2 a usage or token problem,
and for a load also a file that cannot be read or a call refused as a whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from admin.auth import NoToken, operator_token
from admin.loads import as_json as row_json
from admin.loads import message
from contracts import loads, metering, notifier, uploads
from contracts.client import NotDelivered, PortalClient, PortalError
from contracts.dead_letters import list_dead_letters_command, replay_dead_letters_command
from contracts.topology import SERVICES

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY_PREVIEW_CHARS = 60

app = typer.Typer(no_args_is_help=True, help="Operator tools for the service portal.")
dead_letters = typer.Typer(no_args_is_help=True, help="Messages a service could not handle: list and replay them.")
app.add_typer(dead_letters, name="dead-letters")
load = typer.Typer(no_args_is_help=True, help="The catalogue, consumables or installed base from a csv or xlsx file: "
                   "the column names in the first row, one row per item.")
app.add_typer(load, name="load")
reminders = typer.Typer(no_args_is_help=True, help="Metering's meter-reading reminders.")
app.add_typer(reminders, name="reminders")

out, err = Console(), Console(stderr=True)

AmqpUrl = Annotated[str, typer.Option("--amqp-url", envvar="PORTAL_AMQP_URL", help="The portal's broker.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="PORTAL_ADMIN_TOKEN", show_default=False,
    help="An operator's access token; outside production one is minted from PORTAL_TOKEN_SECRET when omitted.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for each reply.")]
AsJson = Annotated[bool, typer.Option("--json", help="The reply as JSON.")]
Page = Annotated[int, typer.Option("--page", min=1)]
PageSize = Annotated[int, typer.Option("--page-size", min=1, max=200)]
T = TypeVar("T")


def _failed(message: str) -> None:
    """A message on stderr in red, as plain text: it holds what files, services and dead letters say."""
    err.print(Text(message, style="red"))


def _row(table: Table, *cells: str | Text) -> None:
    """A table row of plain text: a cell is what a file or a service holds, never console markup (a model named
    `Laser [b/w]` is shown so, and `[/]` in a dead letter's body is no closing tag)."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def _run(call: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(call)


def _token(given: str | None) -> str:
    try:
        return operator_token(given)
    except NoToken as error:
        _failed(str(error))
        raise typer.Exit(2) from None


def _refusal(service: str, error: Exception) -> str:
    if isinstance(error, PortalError):
        fields = "; ".join(f"{path}: {problem}" for path, problem in error.fields.items())
        detail = f" ({fields})" if fields else f": {error.message}" if error.message else ""
        return f"{service}: {error.code}{detail}"
    if isinstance(error, NotDelivered):
        return f"{service}: not answering ({error})"
    return f"{service}: no reply within the timeout"


@dead_letters.command("list")
def list_dead_letters(
    service: Annotated[str | None, typer.Option("--service", help="One service; default: all six.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="One queue of that service.")] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The services' replies as JSON, bodies included.")] = False,
    amqp_url: AmqpUrl = DEFAULT_AMQP_URL, token: Token = None, timeout: Timeout = 30.0,
) -> None:
    """List dead letters, queue by queue, with why they are there; nothing is taken off the queues."""
    if queue and not service:
        raise typer.BadParameter("--queue needs --service", param_hint="--queue")
    request: dict[str, Any] = {"page": page, "page_size": page_size, **({"queue": queue} if queue else {})}
    replies = _run(_list_each([service] if service else list(SERVICES), request, _token(token), amqp_url, timeout))
    if as_json:
        out.print_json(json.dumps({name: reply if isinstance(reply, dict) else {"error": _refusal(name, reply)}
                                   for name, reply in replies.items()}))
    else:
        for name, reply in replies.items():
            if isinstance(reply, dict):
                out.print(_table(name, reply))
    failed = [(name, reply) for name, reply in replies.items() if isinstance(reply, Exception)]
    for name, error in failed:
        _failed(_refusal(name, error))
    if failed:
        raise typer.Exit(1)


async def _list_each(services: list[str], request: dict[str, Any], token: str, amqp_url: str,
                     timeout: float) -> dict[str, dict[str, Any] | Exception]:
    replies: dict[str, dict[str, Any] | Exception] = {}
    portal = PortalClient(amqp_url, timeout=timeout)  # connects on the first call: NotDelivered when it cannot
    try:
        for name in services:
            try:
                replies[name] = await portal.call(list_dead_letters_command(name), request, token=token)
            except (PortalError, NotDelivered, TimeoutError) as error:
                replies[name] = error
    finally:
        await portal.close()
    return replies


def _table(service: str, page: dict[str, Any]) -> Table:
    items = page.get("items", [])
    shown = f"{len(items)} of {page.get('total', 0)}" + (f", page {page['page']}" if page.get("page", 1) > 1 else "")
    table = Table(title=Text(f"{service}: {shown} dead letters"), title_justify="left")
    for column in ("queue", "message id", "routing key", "reason", "dead-lettered at", "count", "body"):
        table.add_column(column, overflow="fold")
    for item in items:
        reason = item["reason"]
        if item.get("attempts"):
            reason += f" after {item['attempts']} attempts"
        if item.get("error"):
            reason += f": {item['error']}"
        body = item["body"] if item["body_encoding"] == "text" else json.dumps(item["body"])
        if item["body_encoding"] in ("base64", "omitted"):
            body = f"({item['body_encoding']}, {item['body_size']} bytes)"
        _row(table, item["queue"], item.get("message_id") or "", item["routing_key"], reason,
             item.get("dead_lettered_at") or "", str(item["count"]), body[:BODY_PREVIEW_CHARS])
    return table


@dead_letters.command("replay")
def replay_dead_letters(
    service: Annotated[str, typer.Option("--service", help="The service whose queue it is.")],
    queue: Annotated[str, typer.Option("--queue", help="The queue the dead letters came from (not its .dlq).")],
    message_id: Annotated[str | None, typer.Option("--message-id", help="Replay this message.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every dead letter of the queue.")] = False,
    amqp_url: AmqpUrl = DEFAULT_AMQP_URL, token: Token = None, timeout: Timeout = 120.0,
) -> None:
    """Put dead letters back on their own queue with their attempts reset; a message handled already stays handled."""
    if (message_id is None) == (not every):
        raise typer.BadParameter("give either --message-id or --all", param_hint="--message-id/--all")
    request: dict[str, Any] = {"queue": queue, **({"all": True} if every else {"message_id": message_id})}
    try:
        reply = _run(_call(replay_dead_letters_command(service), request, _token(token), amqp_url, timeout))
    except (PortalError, NotDelivered, TimeoutError) as error:
        _failed(_refusal(service, error))
        raise typer.Exit(1) from None
    out.print(Text(f"replayed {reply['replayed']} dead letter(s) of {queue}"))


async def _call(command: str, request: dict[str, Any], token: str, amqp_url: str, timeout: float) -> dict[str, Any]:
    portal = PortalClient(amqp_url, timeout=timeout)  # connects on the first call: NotDelivered when it cannot
    try:
        return await portal.call(command, request, token=token)
    finally:
        await portal.close()


# --- load: models, consumables, installed base from a file ----------------------------------------------------------

LoadFile = Annotated[Path, typer.Argument(help="A csv (comma, semicolon or tab) or xlsx file.", show_default=False)]
LoadJson = Annotated[bool, typer.Option("--json", help="Each row's result as JSON instead of the table.")]


@load.command("models", help=f"Product models (registration): {uploads.COLUMNS['models']}.")
def load_models(file: LoadFile, as_json: LoadJson = False, amqp_url: AmqpUrl = DEFAULT_AMQP_URL,
                token: Token = None, timeout: Timeout = 60.0) -> None:
    _load("models", file, as_json, amqp_url, token, timeout)


@load.command("consumables", help=f"Each model's consumables (ordering; a model's list replaces the one before): "
                                  f"{uploads.COLUMNS['consumables']}.")
def load_consumables(file: LoadFile, as_json: LoadJson = False, amqp_url: AmqpUrl = DEFAULT_AMQP_URL,
                     token: Token = None, timeout: Timeout = 60.0) -> None:
    _load("consumables", file, as_json, amqp_url, token, timeout)


@load.command("installed-base", help=f"Devices under contract from the ERP (registration): "
                                     f"{uploads.COLUMNS['installed_base']}; counters as `mono=12000, color=3400`.")
def load_installed_base(file: LoadFile, as_json: LoadJson = False, amqp_url: AmqpUrl = DEFAULT_AMQP_URL,
                        token: Token = None, timeout: Timeout = 120.0) -> None:
    _load("installed_base", file, as_json, amqp_url, token, timeout)


def _load(kind: loads.Kind, file: Path, as_json: bool, amqp_url: str, token: str | None, timeout: float) -> None:
    """Exit 0 when every row went in, 1 when some were refused, 2 for a file it cannot read or a refused call."""
    try:
        with file.open("rb") as opened:
            content = opened.read(uploads.MAX_FILE_BYTES + 1)  # one byte past the limit: refused as too large
        rows = uploads.numbered_rows(file.name, content, kind)
    except uploads.UnknownColumns as error:
        _not_loaded(file, as_json, "unknown_columns",
                    f"{file}: not loaded (nothing was sent), it has columns a file of {kind.replace('_', ' ')} does "
                    f"not have: {', '.join(error.columns)}. Its columns can be: {uploads.COLUMNS[kind]}",
                    columns=error.columns)
    except uploads.RepeatedColumns as error:
        _not_loaded(file, as_json, "repeated_columns",
                    f"{file}: not loaded (nothing was sent), its first row names a column twice: "
                    f"{', '.join(error.columns)}", columns=error.columns)
    except uploads.UnnamedColumns as error:
        _not_loaded(file, as_json, "unnamed_columns",
                    f"{file}: not loaded (nothing was sent), it has values in columns without a name in the first "
                    f"row: {', '.join(f'column {at}' for at in error.positions)}. Its columns can be: "
                    f"{uploads.COLUMNS[kind]}", positions=error.positions)
    except (OSError, uploads.Unreadable) as error:
        reason = (error.strerror or type(error).__name__) if isinstance(error, OSError) else str(error)
        _not_loaded(file, as_json, reason,
                    f"{file}: cannot be read ({reason}); a csv or xlsx file of at most "
                    f"{uploads.MAX_FILE_BYTES // 1024 // 1024} MB and {uploads.MAX_ROWS} rows, its column names in "
                    f"the first row")
    results, batches = loads.plan(kind, rows)
    stopped = _run(_send_all(batches, len(results), _token(token), amqp_url, timeout))
    if as_json:
        out.print_json(json.dumps([row_json(result) for result in results]))
    else:
        out.print(_results_table(kind, file, results))
    if stopped is not None:
        unsure = "; its rows say no_reply: sent, they may still be applied" \
            if isinstance(stopped.error, TimeoutError) else ""
        _failed(f"stopped: {_refusal(stopped.command, stopped.error)}{unsure}")
        raise typer.Exit(2)
    if not all(result.ok for result in results):
        raise typer.Exit(1)


def _not_loaded(file: Path, as_json: bool, error: str, message: str, **detail: Any) -> NoReturn:
    """Exit 2 for a file not loaded; with --json also a document saying why, with no rows (`{"error": ...}`)."""
    _failed(message)
    if as_json:
        out.print_json(json.dumps({"file": str(file), "error": error, "message": message, **detail, "rows": []}))
    raise typer.Exit(2)


async def _send_all(batches: list[loads.Batch], total: int, token: str, amqp_url: str,
                    timeout: float) -> loads.CallRefused | None:
    portal = PortalClient(amqp_url, timeout=timeout)  # connects on the first call: NotDelivered when it cannot
    sent = sum(len(batch.items) for batch in batches)
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("rows", total=total, completed=total - sent)  # the rows refused already

            async def call(command: str, body: dict[str, Any]) -> dict[str, Any]:
                return await portal.call(command, body, token=token, lang="en")
            await loads.send(batches, call, lambda rows: progress.advance(task, rows))
    except loads.CallRefused as stopped:
        return stopped
    finally:
        await portal.close()
    return None


def _results_table(kind: loads.Kind, file: Path, results: list[loads.RowResult]) -> Table:
    saved = sum(result.ok for result in results)
    table = Table(title=Text(f"{file.name}: {saved} of {len(results)} rows in"), title_justify="left")
    for column in ("row", loads.KEY_COLUMN[kind], "result", "code", "message"):
        table.add_column(column, overflow="fold")
    for result in results:
        _row(table, str(result.row), result.key, Text("ok") if result.ok else Text("refused", style="red"),
             result.code or "", message(result) or "")
    return table


# --- mail deliveries, reminders, overdue readings -------------------------------------------------------------------

@app.command("deliveries")
def list_deliveries(
    recipient: Annotated[str | None, typer.Option("--recipient", help="Only mails to this address.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="sent, retrying or failed.")] = None,
    event: Annotated[str | None, typer.Option("--event", help="Only mails caused by this event.")] = None,
    page: Page = 1, page_size: PageSize = 50, as_json: AsJson = False,
    amqp_url: AmqpUrl = DEFAULT_AMQP_URL, token: Token = None, timeout: Timeout = 30.0,
) -> None:
    """The mails the notifier sent, is still trying to send, or gave up on; newest first (bodies are not shown)."""
    if status is not None and status not in ("sent", "retrying", "failed"):
        raise typer.BadParameter("sent, retrying or failed", param_hint="--status")
    request = {"page": page, "page_size": page_size, "recipient": recipient, "status": status, "event": event}
    reply = _answer("notifier", notifier.ListDeliveries.routing_key,
                    {name: value for name, value in request.items() if value is not None}, token, amqp_url, timeout)
    if as_json:
        out.print_json(json.dumps(reply))
        return
    table = Table(title=f"{_shown(reply)} deliveries", title_justify="left")
    for column in ("created at", "recipient", "mail", "event", "status", "attempts", "subject", "last error"):
        table.add_column(column, overflow="fold")
    for item in reply["items"]:
        _row(table, item["created_at"], item["recipient"], item["mail"], item["event"], item["status"],
             str(item["attempts"]), item["subject"], item.get("last_error") or "")
    out.print(table)


@reminders.command("run")
def run_reminders(
    day: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD",
                                            help="The day to run the schedule for; default: today (UTC).")] = None,
    as_json: AsJson = False, amqp_url: AmqpUrl = DEFAULT_AMQP_URL, token: Token = None, timeout: Timeout = 120.0,
) -> None:
    """Run metering's reminder schedule for that day now, as its scheduler does daily: opening and second
    reminders, and the devices whose window closed without a reading found overdue. Each is done at most once,
    so a day still to come is refused."""
    today = datetime.now(UTC).date()
    as_of = _date(day, "--date") if day else today
    if as_of > today:  # a typo's reminders would go now, and each goes once: the real ones never would
        raise typer.BadParameter(f"{as_of} is still to come (today is {today}, UTC): reminders are run for today "
                                 f"or a day missed", param_hint="--date")
    reply = _answer("metering", metering.RunReminders.routing_key, {"as_of": as_of.isoformat()}, token, amqp_url,
                    timeout)
    if as_json:
        out.print_json(json.dumps({"as_of": as_of.isoformat(), **reply}))
    else:
        out.print(f"reminders run for {as_of}: {reply['reminders']} reminder(s), {reply['overdue']} overdue")


@app.command("overdue")
def list_overdue(
    period_end: Annotated[str | None, typer.Option(
        "--period-end", metavar="YYYY-MM-DD",
        help="The period's last day; default: the latest quarter whose window has closed.")] = None,
    page: Page = 1, page_size: PageSize = 50, as_json: AsJson = False,
    amqp_url: AmqpUrl = DEFAULT_AMQP_URL, token: Token = None, timeout: Timeout = 30.0,
) -> None:
    """Devices without a reading for a period whose window has closed: where the contract team estimates."""
    end = _date(period_end, "--period-end") if period_end else metering.last_closed_quarter(datetime.now(UTC).date())
    reply = _answer("metering", metering.ListOverdue.routing_key,
                    {"period_end": end.isoformat(), "page": page, "page_size": page_size}, token, amqp_url, timeout)
    if as_json:
        out.print_json(json.dumps(reply))
        return
    table = Table(title=f"{_shown(reply)} devices overdue for the period ending {end}", title_justify="left")
    for column in ("serial number", "model", "customer", "contract", "last reading", "window closed", "device id"):
        table.add_column(column, overflow="fold")
    for item in reply["items"]:
        _row(table, item["serial_number"], item["model"], item.get("customer_number") or "",
             item.get("contract_number") or "", item.get("last_date") or "", item["window_closed"], item["device_id"])
    out.print(table)


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("a date as YYYY-MM-DD", param_hint=option) from None


def _shown(page: dict[str, Any]) -> str:
    shown = f"{len(page['items'])} of {page['total']}"
    return shown + (f", page {page['page']}," if page["page"] > 1 else "")


def _answer(service: str, command: str, request: dict[str, Any], token: str | None, amqp_url: str,
            timeout: float) -> dict[str, Any]:
    """The command's reply; exit 1 when it is refused or none comes."""
    try:
        return _run(_call(command, request, _token(token), amqp_url, timeout))
    except (PortalError, NotDelivered, TimeoutError) as error:
        _failed(_refusal(service, error))
        raise typer.Exit(1) from None
