"""Event consumption: decode or dead-letter at once, handle once, retry a bounded number of times.

Nothing is acked before it is done. A handler that raises is retried with back-off by
republishing the message to its own queue with an attempt counter (classic queues count
nothing themselves); after the last attempt the message goes to `<queue>.dlq`, with why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiormq
from faststream.rabbit import RabbitMessage
from pydantic import ValidationError

from contracts.base import Event
from contracts.logs import message_context
from services.runtime import tracing
from services.runtime.commands import decode_object, field_problems, sent_correlation_id, sent_message_id
from services.runtime.instance import Instance
from services.runtime.mongo import Database
from services.runtime.outbox import tracking_emissions
from services.runtime.topology import DEAD_LETTERS, declare_dead_letter_queue

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-portal-attempt"
MAX_RETRY_DELAY_SECONDS = 30.0
# Why the runtime dead-lettered a message: a table {reason, error, attempts, at}, read by the operators' listing.
DEAD_LETTER_HEADER = "x-portal-dead-letter"
MAX_ERROR_CHARS = 1000


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
    started = time.perf_counter()
    event = spec.model.routing_key
    # Every line logged while the event is handled names it and the ids its publisher set.
    with message_context(service=instance.name, event=event, message_id=sent_message_id(msg),
                         correlation_id=sent_correlation_id(msg)), tracing.handling_event(event, spec.queue, msg):
        outcome = await _run_event(spec, msg, instance)
    instance.metrics.events.labels(event, outcome).inc()
    instance.metrics.event_seconds.labels(event).observe(time.perf_counter() - started)


async def _run_event(spec: EventSpec, msg: RabbitMessage, instance: Instance) -> str:
    """`run_event`'s work; its outcome: handled, duplicate, retried, dead_lettered or undecodable."""
    payload = decode_object(msg.body)
    problem = "not a UTF-8 JSON object" if payload is None else None
    try:
        event = spec.model.model_validate(payload) if payload is not None else None
    except ValidationError as error:
        event, problem = None, "; ".join(f"{path}: {text}" for path, text in field_problems(error).items())
    if event is None:
        log.error("event on %s cannot be decoded, dead-lettered: message_id=%s", spec.queue, msg.message_id)
        await dead_letter(msg, spec.queue, instance, reason="undecodable", error=problem or "", attempts=None)
        return "undecodable"

    attempt = attempt_of(msg)
    message_id = sent_message_id(msg)
    try:
        claim = await instance.claims.claim(spec.queue, message_id) if message_id else None
        if claim is not None and not claim.owned:
            tracing.outcome("duplicate")
            await msg.ack()  # a copy of a message already handled
            return "duplicate"
        try:
            async with instance.claims.held(claim):
                with tracking_emissions() as emissions:
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
    except Exception as error:
        tracing.failed(error)
        if attempt >= instance.settings.event_max_attempts:
            log.exception("event %s on %s failed %d times, dead-lettered: message_id=%s",
                          spec.model.routing_key, spec.queue, attempt, msg.message_id)
            await dead_letter(msg, spec.queue, instance, reason="failed", error=f"{type(error).__name__}: {error}",
                              attempts=attempt)
            return "dead_lettered"
        log.warning("event %s on %s failed (attempt %d), retrying: message_id=%s",
                    spec.model.routing_key, spec.queue, attempt, msg.message_id, exc_info=True)
        await asyncio.sleep(retry_delay(attempt, instance.settings.event_retry_base_delay))
        await instance.broker.publish(
            msg.body, queue=spec.queue, message_id=msg.message_id, correlation_id=msg.correlation_id,
            headers={**msg.headers, ATTEMPT_HEADER: attempt + 1}, content_type="application/json",
            persist=True)
        tracing.outcome("retried")
        await msg.ack()
        return "retried"
    if emissions.any:
        instance.relay.wake()
    tracing.outcome("handled")
    await msg.ack()
    return "handled"


async def dead_letter(msg: RabbitMessage, queue: str, instance: Instance, *, reason: str, error: str,
                      attempts: int | None) -> None:
    """Put `msg` in `<queue>.dlq` with why (DEAD_LETTER_HEADER), then ack it.

    Publishing the copy ourselves, rather than rejecting, is what lets an operator see the handler's
    error and attempts: a rejected message carries only the broker's `x-death` (reason `rejected`).
    The copy is confirmed before the original is acked, as for a retry: a crash in between leaves
    both, and the redelivered original is handled (or dead-lettered) once more, which the claims make
    harmless. If the copy cannot be published, the message is rejected: the broker dead-letters it
    all the same, only without the error.
    """
    tracing.outcome("dead_lettered")
    why: dict[str, Any] = {"reason": reason, "error": error[:MAX_ERROR_CHARS], "at": datetime.now(UTC).isoformat()}
    if attempts is not None:
        why["attempts"] = attempts
    raw = msg.raw_message
    try:
        # Declared here too: a message can fail before the service declared its dead-letter queues (at start).
        await declare_dead_letter_queue(instance.broker, instance.settings, queue)
        # Routed like the broker's own dead-lettering: `portal.dlx` under the queue's name.
        confirmed = await instance.broker.publish(
            msg.body, exchange=DEAD_LETTERS, routing_key=queue, mandatory=True, persist=True,
            message_id=raw.message_id, correlation_id=raw.correlation_id, reply_to=raw.reply_to,
            content_type=raw.content_type, headers={**msg.headers, DEAD_LETTER_HEADER: why})
        if not isinstance(confirmed, aiormq.spec.Basic.Ack):
            raise RuntimeError(f"{queue}.dlq did not take the dead letter: {confirmed!r}")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("dead letter of %s not published with its reason; rejected instead: message_id=%s",
                      queue, msg.message_id)
        await msg.reject()
        return
    await msg.ack()
