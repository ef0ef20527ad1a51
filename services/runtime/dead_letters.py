"""Dead letters for operators: list a service's `<queue>.dlq` without consuming, replay to the queue it came from.

Both work on a short connection of their own, opened per command. Listing takes messages with
basic.get and no ack, then closes the channel: the broker puts every one back where it was.
Replaying republishes each to its own queue (the default exchange, routing key = the queue's
name: `portal.events` would deliver it to every other consumer again) with a publisher confirm,
and acks the dead letter only once the copy is confirmed. A crash in between leaves both; the
copy of an event handled already is then acked unhandled (events are claimed by `message_id`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from contracts.base import Page
from contracts.dead_letters import BodyEncoding, DeadLetter, ListDeadLetters, ReplayDeadLetters, ReplayedDeadLetters
from contracts.errors import ErrorCode
from contracts.topology import dead_letter_queue
from services.runtime.commands import CommandContext, CommandError
from services.runtime.events import ATTEMPT_HEADER, DEAD_LETTER_HEADER
from services.runtime.topology import dead_letter_queue_arguments

# How often a message was replayed already: counted into `count`, kept across replays.
REPLAYS_HEADER = "x-portal-replays"
# Headers never shown: they hold credentials (a command's bearer token).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
# Header and body fields whose name holds one of these are shown as REDACTED (a command's password, a reset
# token), and so are texts holding a one-time link's `token=`: the listing is for finding out what went wrong,
# the replay takes the message as it was.
SECRET_MARKS = ("password", "secret", "token")
REDACTED = "[redacted]"
# A one-time link's token inside a longer text (a handler's error quoting the URL it failed on).
LINK_TOKEN = re.compile(r"(token=)[^&\s#\"']+")
# The broker's and the runtime's bookkeeping: shown as reason and count, stripped on replay (full attempts again).
# `x-delivery-count`: a quorum queue's count of a message's returns (its delivery limit).
BOOKKEEPING_HEADERS = frozenset({"x-death", "x-delivery-count", ATTEMPT_HEADER, DEAD_LETTER_HEADER, REPLAYS_HEADER})
BOOKKEEPING_PREFIXES = ("x-first-death-", "x-last-death-")
MAX_SHOWN_BODY_BYTES = 64 * 1024
# Listing past this many dead letters of one queue, or searching one message id beyond them, is refused:
# each message before the page is held unacknowledged by the listing until it ends.
SCAN_LIMIT = 10_000
REPLAY_BATCH = 100
# A batch's bodies held at once, at most (and one message more): the replica answers customers meanwhile.
REPLAY_BATCH_BYTES = 4 * 1024 * 1024
# A listing or replay waits this long for another one of the same service to end (`_alone`).
LOCK_WAIT_SECONDS = 20.0
LOCK_FIRST_WAIT_SECONDS, LOCK_LONGEST_WAIT_SECONDS = 0.02, 0.5


async def list_dead_letters(request: ListDeadLetters, ctx: CommandContext) -> Page[DeadLetter]:
    """The dead letters of this service's queues (or of `queue`), queue by queue, oldest first: why each is there
    and the original message, without its `authorization`. Nothing is consumed. An unknown queue →
    `validation_failed`."""
    queues = _known(ctx, request.queue) if request.queue else ctx.instance.queues
    async with _alone(ctx) as connection:
        channel = await connection.channel()
        try:
            return await _list(request, queues, channel, dead_letter_queue_arguments(ctx.instance.settings))
        finally:
            await channel.close()  # after an error, gives back what is still taken before another may look


async def _list(request: ListDeadLetters, queues: Mapping[str, str], channel: aio_pika.abc.AbstractChannel,
                arguments: dict[str, Any]) -> Page[DeadLetter]:
    waiting: dict[str, int] = {}
    for queue in sorted(queues):
        # Declared, not just looked up: a missing dead-letter queue would close the channel.
        declared = await channel.declare_queue(dead_letter_queue(queue), durable=True, arguments=arguments)
        waiting[queue] = declared.declaration_result.message_count or 0
    skip = (request.page - 1) * request.page_size
    items: list[DeadLetter] = []
    taken: list[int | None] = []
    for queue in sorted(queues):
        if len(items) == request.page_size:
            break
        if skip >= waiting[queue]:
            skip -= waiting[queue]
            continue
        if skip > SCAN_LIMIT:
            raise CommandError(ErrorCode.VALIDATION_FAILED, fields={
                "page": f"lists only the first {SCAN_LIMIT} dead letters of a queue; replay those first"})
        dlq = await channel.get_queue(dead_letter_queue(queue), ensure=False)
        # One at a time, each let go once seen: what it skips stays taken (unacknowledged) but not in memory.
        for _ in range(skip + request.page_size - len(items)):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message.delivery_tag)
            if skip:
                skip -= 1
            else:
                items.append(describe(queue, queues[queue], message))
        skip = 0
    await _give_back(channel, taken)
    return Page[DeadLetter](items=items, total=sum(waiting.values()), page=request.page, page_size=request.page_size)


async def replay_dead_letters(request: ReplayDeadLetters, ctx: CommandContext) -> ReplayedDeadLetters:
    """Put the dead letters with `message_id` (or `all`) back on their own queue, attempts reset → `replayed`.

    An event handled already is not handled again; a re-sent command replays nothing more. No dead letter
    with that `message_id` → `not_found`; an unknown queue → `validation_failed`."""
    _known(ctx, request.queue)
    async with _alone(ctx) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            replayed = await _replay(request, channel, dead_letter_queue_arguments(ctx.instance.settings))
        finally:
            await channel.close()  # after an error, the dead letters not replayed go back
    if replayed == 0 and request.message_id is not None:
        raise CommandError(ErrorCode.NOT_FOUND, fields={"message_id": f"no dead letter with it in {request.queue}"})
    return ReplayedDeadLetters(replayed=replayed)


async def _replay(request: ReplayDeadLetters, channel: aio_pika.abc.AbstractChannel, arguments: dict[str, Any]) -> int:
    """How many dead letters were put back on their queue."""
    replayed = 0
    dlq = await channel.declare_queue(dead_letter_queue(request.queue), durable=True, arguments=arguments)
    # Only what is there now: a replayed message dead-lettered again meanwhile waits for the next replay.
    left = dlq.declaration_result.message_count or 0
    if request.message_id is not None:
        left = min(left, SCAN_LIMIT)
    kept: list[int | None] = []
    while left > 0:
        taken = await _take(dlq, min(left, REPLAY_BATCH), REPLAY_BATCH_BYTES)
        if not taken:
            break
        left -= len(taken)
        chosen = [message for message in taken if request.all or message.message_id == request.message_id]
        kept.extend(message.delivery_tag for message in taken if message not in chosen)
        # The batch's confirms awaited together (one at a time costs a round trip each), then acked.
        await asyncio.gather(*(channel.default_exchange.publish(replay_copy(message), routing_key=request.queue,
                                                                mandatory=True) for message in chosen))
        for message in chosen:
            await message.ack()
        replayed += len(chosen)
    await _give_back(channel, kept)
    return replayed


@contextlib.asynccontextmanager
async def _alone(ctx: CommandContext) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A connection of its own, holding this service's dead-letter lock: one listing or replay at a time, across
    replicas. Each takes the messages it reads (unacknowledged, invisible to others) until it ends, so a second at
    the same time would see a partial page, or not find the message it should replay. The lock is an exclusive
    queue: the broker drops it with the connection, a crashed replica's too. Waited for up to LOCK_WAIT_SECONDS,
    then `conflict`."""
    connection = await aio_pika.connect(ctx.instance.settings.amqp_url)
    try:
        lock = f"{ctx.command.split('.', 1)[0]}.dead_letters.lock"
        loop, wait = asyncio.get_running_loop(), LOCK_FIRST_WAIT_SECONDS
        deadline = loop.time() + LOCK_WAIT_SECONDS
        while True:
            channel = await connection.channel()
            try:
                await channel.declare_queue(lock, exclusive=True, auto_delete=True)
                break
            except aiormq.exceptions.ChannelLockedResource:  # held by another listing or replay; the channel closed
                if loop.time() + wait > deadline:
                    raise CommandError(ErrorCode.CONFLICT, fields={
                        "queue": "another listing or replay of these dead letters is running; try again"}) from None
                await asyncio.sleep(wait)
                wait = min(wait * 2, LOCK_LONGEST_WAIT_SECONDS)
        yield connection
    finally:
        await connection.close()  # drops the lock


def _known(ctx: CommandContext, queue: str) -> dict[str, str]:
    """`{queue: routing key}` when `queue` is this service's; else `validation_failed`.

    Not `not_found`: the service's queues are fixed by its code and documented, so another name is a
    malformed request, not a resource that may or may not exist (`not_found` is for a message id)."""
    if queue not in ctx.instance.queues:
        raise CommandError(ErrorCode.VALIDATION_FAILED, fields={"queue": "not a queue of this service"})
    return {queue: ctx.instance.queues[queue]}


async def _give_back(channel: aio_pika.abc.AbstractChannel, delivery_tags: list[int | None]) -> None:
    """The messages taken and not acked, handed back one by one in the order they were taken. Closing the channel
    would hand them back too, and a classic queue puts each back in its place either way; a quorum queue puts them
    back in the order of their returns, which for a closed channel is no particular order."""
    underlay = await channel.get_underlay_channel()
    for tag in delivery_tags:
        if tag is not None:
            await underlay.basic_nack(tag, requeue=True)


async def _take(dlq: AbstractQueue, most: int, most_bytes: int) -> list[AbstractIncomingMessage]:
    """Up to `most` messages off the queue, unacknowledged (they return when the channel closes), and no more once
    their bodies reach `most_bytes`: a dead letter may be a 10 MB command."""
    taken: list[AbstractIncomingMessage] = []
    size = 0
    while len(taken) < most and size < most_bytes and (message := await dlq.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
        size += len(message.body)
    return taken


def replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The original again: same body, ids and headers, minus the retry and dead-letter bookkeeping."""
    headers = {name: value for name, value in (message.headers or {}).items() if not _bookkeeping(name)}
    headers[REPLAYS_HEADER] = _replays(message) + 1
    # Not `user_id` (the broker checks it against this connection's user) nor `expiration` (dead-lettering
    # dropped it already).
    return aio_pika.Message(
        message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority, correlation_id=message.correlation_id, reply_to=message.reply_to,
        message_id=message.message_id, timestamp=message.timestamp, type=message.type, app_id=message.app_id)


def describe(queue: str, routing_key: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    ours = headers.get(DEAD_LETTER_HEADER)
    death = _death_from(queue, headers.get("x-death"))
    body, encoding = _body(message.body)
    if isinstance(ours, Mapping):
        reason, error = str(ours.get("reason", "unknown")), ours.get("error")
        attempts, at, count = ours.get("attempts"), _instant(ours.get("at")), 1
    elif death is not None:
        reason, error, attempts = str(death.get("reason", "unknown")), None, None
        at, count = _instant(death.get("time")), _integer(death.get("count")) or 1
    else:  # put in the dead-letter queue by hand
        reason, error, attempts, at, count = "unknown", None, None, None, 1
    return DeadLetter(
        queue=queue, message_id=message.message_id, correlation_id=message.correlation_id,
        # The queue is bound by this one key; retries and replays reach it by the queue's name instead.
        routing_key=routing_key, reason=reason,
        error=LINK_TOKEN.sub(rf"\1{REDACTED}", str(error)) if error is not None else None,
        attempts=_integer(attempts), dead_lettered_at=at, count=count + _replays(message),
        headers={name: _redacted(_plain(value)) for name, value in headers.items()
                 if not _bookkeeping(name) and name.lower() not in SECRET_HEADERS and not _secret(name)},
        body=_redacted(body), body_encoding=encoding, body_size=len(message.body))


def _bookkeeping(name: str) -> bool:
    return name in BOOKKEEPING_HEADERS or name.startswith(BOOKKEEPING_PREFIXES)


def _secret(name: str) -> bool:
    return any(mark in name.lower() for mark in SECRET_MARKS)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: REDACTED if _secret(key) else _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, str) and "token=" in value:
        return REDACTED
    return value


def _death_from(queue: str, deaths: Any) -> Mapping[str, Any] | None:
    """The broker's `x-death` entry for `queue` (newest first), if it dead-lettered the message."""
    if not isinstance(deaths, list):
        return None
    for death in deaths:
        if isinstance(death, Mapping) and death.get("queue") == queue:
            return death
    return None


def _replays(message: AbstractIncomingMessage) -> int:
    return _integer((message.headers or {}).get(REPLAYS_HEADER)) or 0


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON")


def _body(body: bytes) -> tuple[Any, BodyEncoding]:
    if len(body) > MAX_SHOWN_BODY_BYTES:
        return None, "omitted"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"
    try:
        return json.loads(text, parse_constant=_refuse_constant), "json"
    except ValueError:
        return text, "text"


def _plain(value: Any) -> Any:
    """A header value as JSON: AMQP tables hold timestamps, decimals and byte strings too."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and value != value:  # NaN has no JSON
        return None
    return value
