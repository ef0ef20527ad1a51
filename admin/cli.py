"""`portal-admin` (`python -m admin`): operator commands from a shell, over contracts.client.PortalClient.

    portal-admin dead-letters list [--service S] [--queue Q] [--json]
    portal-admin dead-letters replay --service S --queue Q (--message-id ID | --all)

Each command is one call of the portal's operator commands; the services decide and refuse.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from admin.auth import NoToken, operator_token
from contracts.client import NotDelivered, PortalClient, PortalError
from contracts.dead_letters import list_dead_letters_command, replay_dead_letters_command
from contracts.topology import SERVICES

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY_PREVIEW_CHARS = 60

app = typer.Typer(no_args_is_help=True, help="Operator tools for the service portal.")
dead_letters = typer.Typer(no_args_is_help=True, help="Messages a service could not handle: list and replay them.")
app.add_typer(dead_letters, name="dead-letters")

out, err = Console(), Console(stderr=True)

AmqpUrl = Annotated[str, typer.Option("--amqp-url", envvar="PORTAL_AMQP_URL", help="The portal's broker.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="PORTAL_ADMIN_TOKEN", show_default=False,
    help="An operator's access token; outside production one is minted from PORTAL_TOKEN_SECRET when omitted.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for each reply.")]
T = TypeVar("T")


def _run(call: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(call)


def _token(given: str | None) -> str:
    try:
        return operator_token(given)
    except NoToken as error:
        err.print(f"[red]{error}[/red]")
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
        err.print(f"[red]{_refusal(name, error)}[/red]")
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
    table = Table(title=f"{service}: {shown} dead letters", title_justify="left")
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
        table.add_row(item["queue"], item.get("message_id") or "", item["routing_key"], reason,
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
        err.print(f"[red]{_refusal(service, error)}[/red]")
        raise typer.Exit(1) from None
    out.print(f"replayed {reply['replayed']} dead letter(s) of {queue}")


async def _call(command: str, request: dict[str, Any], token: str, amqp_url: str, timeout: float) -> dict[str, Any]:
    portal = PortalClient(amqp_url, timeout=timeout)  # connects on the first call: NotDelivered when it cannot
    try:
        return await portal.call(command, request, token=token)
    finally:
        await portal.close()
