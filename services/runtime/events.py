"""Event consumption: decode or dead-letter at once, handle once, retry a bounded number of times.

Nothing is acked before it is done. A handler that raises is retried with back-off by
republishing the message to its own queue with an attempt counter (classic queues count
nothing themselves); after the last attempt the message is rejected to `<queue>.dlq`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import RabbitMessage
from pydantic import ValidationError

from contracts.base import Event
from services.runtime.commands import decode_object, sent_message_id
from services.runtime.instance import Instance
from services.runtime.mongo import Database

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-portal-attempt"
MAX_RETRY_DELAY_SECONDS = 30.0


@dataclass(frozen=True)
class EventContext:
    event: str
    message_id: str | None
    db: Database
    instance: Instance


EventHandler = Callable[[Any, EventContext], Awaitable[None]]


@dataclass(frozen=True)
class EventSpec:
    model: type[Event]
    queue: str
    handler: EventHandler


def attempt_of(msg: RabbitMessage) -> int:
    """This delivery's attempt number; a header that is not a positive number counts as the first."""
    value = msg.headers.get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value > 0 else 1


def retry_delay(attempt: int, base: float) -> float:
    return float(min(base * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS))


async def run_event(spec: EventSpec, msg: RabbitMessage, instance: Instance) -> None:
    payload = decode_object(msg.body)
    try:
        event = spec.model.model_validate(payload) if payload is not None else None
    except ValidationError:
        event = None
    if event is None:
        log.error("event on %s cannot be decoded, dead-lettered: message_id=%s", spec.queue, msg.message_id)
        await msg.reject()
        return

    attempt = attempt_of(msg)
    message_id = sent_message_id(msg)
    try:
        claim = await instance.claims.claim(spec.queue, message_id) if message_id else None
        if claim is not None and not claim.owned:
            await msg.ack()  # a copy of a message already handled
            return
        try:
            async with instance.claims.held(claim):
                await spec.handler(event, EventContext(event=spec.model.routing_key, message_id=message_id,
                                                       db=instance.db, instance=instance))
        except BaseException:
            if claim is not None:
                await instance.claims.release(claim)
            raise
        if claim is not None:
            await instance.claims.complete(claim)
    except asyncio.CancelledError:
        raise
    except Exception:
        if attempt >= instance.settings.event_max_attempts:
            log.exception("event %s on %s failed %d times, dead-lettered: message_id=%s",
                          spec.model.routing_key, spec.queue, attempt, msg.message_id)
            await msg.reject()
            return
        log.warning("event %s on %s failed (attempt %d), retrying: message_id=%s",
                    spec.model.routing_key, spec.queue, attempt, msg.message_id, exc_info=True)
        await asyncio.sleep(retry_delay(attempt, instance.settings.event_retry_base_delay))
        await instance.broker.publish(
            msg.body, queue=spec.queue, message_id=msg.message_id, correlation_id=msg.correlation_id,
            headers={**msg.headers, ATTEMPT_HEADER: attempt + 1}, content_type="application/json",
            persist=True)
        await msg.ack()
        return
    instance.relay.wake()
    await msg.ack()
