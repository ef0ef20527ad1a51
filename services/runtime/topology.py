"""The durable exchanges and queues of CATALOG §1, declared identically by every service."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, cast

import aiormq
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas.queue import ClassicQueueArgs, QuorumQueueArgs

from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    dead_letter_queue,
)
from services.runtime.settings import Settings

COMMANDS = RabbitExchange(COMMANDS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.TOPIC, durable=True)

# A dead letter's deliveries, listings included, before a quorum queue would drop it: never in practice.
DEAD_LETTER_DELIVERY_LIMIT = 2**31 - 1
# The broker's words for a queue that exists with other arguments than a declaration asks for (406).
INEQUIVALENT = re.compile(r"inequivalent arg '(?P<argument>[^']+)' for queue '(?P<queue>[^']+)'[^:]*: (?P<detail>.*)")


def queue_arguments(settings: Settings, name: str) -> dict[str, Any]:
    """The arguments of the durable queue `name`: dead-lettered to `portal.dlx` under its own name, of the
    configured type (`PORTAL_QUEUE_TYPE`).

    Routing dead letters by queue name (not by the original routing key) keeps the dead letters of two
    consumers of the same event apart. A quorum queue also dead-letters, by itself, a message delivered
    more than `delivery_limit` times without an ack (a consumer that crashes on it each time), and
    dead-letters at least once: a dead letter leaves the queue only once its dead-letter queue confirmed
    it (which RabbitMQ allows only with `overflow: reject-publish`; no length limit is set, so publishing
    is never refused for it).
    """
    arguments: dict[str, Any] = {
        "x-queue-type": settings.queue_type,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": name,
    }
    if settings.queue_type == "quorum":
        arguments |= {"x-delivery-limit": settings.delivery_limit, "x-dead-letter-strategy": "at-least-once",
                      "x-overflow": "reject-publish"}
    return arguments


def dead_letter_queue_arguments(settings: Settings) -> dict[str, Any]:
    """A dead-letter queue has no dead-letter exchange: a dead letter is never dropped. Listing its messages hands
    each back, which a quorum queue counts as a delivery, and RabbitMQ 4 gives quorum queues a delivery limit of 20
    unless one is set (dropping the message beyond it): so the limit of a quorum one is set, out of reach (RabbitMQ
    3.x takes no `-1` for none)."""
    if settings.queue_type == "quorum":
        return {"x-queue-type": "quorum", "x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT}
    return {"x-queue-type": "classic"}


def durable_queue(settings: Settings, name: str, routing_key: str) -> RabbitQueue:
    return _queue(settings, name, routing_key, queue_arguments(settings, name))


async def declare_dead_letter_queue(broker: RabbitBroker, settings: Settings, queue: str) -> None:
    dlq = _queue(settings, dead_letter_queue(queue), queue, dead_letter_queue_arguments(settings))
    exchange = await broker.declare_exchange(DEAD_LETTERS)
    declared = await broker.declare_queue(dlq)
    await declared.bind(exchange, routing_key=queue)


def _queue(settings: Settings, name: str, routing_key: str, arguments: dict[str, Any]) -> RabbitQueue:
    if settings.queue_type == "quorum":
        return RabbitQueue(name, QueueType.QUORUM, durable=True, routing_key=routing_key,
                           arguments=cast(QuorumQueueArgs, arguments))
    return RabbitQueue(name, QueueType.CLASSIC, durable=True, routing_key=routing_key,
                       arguments=cast(ClassicQueueArgs, arguments))


class QueueMismatch(Exception):
    """A queue exists on the broker with other arguments than this service declares."""


@contextlib.contextmanager
def explained_queue_mismatch(settings: Settings) -> Iterator[None]:
    """Turns the broker's PRECONDITION_FAILED for an existing queue with other arguments (most often:
    `PORTAL_QUEUE_TYPE` changed on a broker whose queues were declared with the other type) into a
    QueueMismatch that tells an operator what to do."""
    try:
        yield
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        found = INEQUIVALENT.search(str(error))
        if found is None:
            raise
        declared = f"PORTAL_QUEUE_TYPE={settings.queue_type}"
        if settings.queue_type == "quorum":
            declared += f", PORTAL_DELIVERY_LIMIT={settings.delivery_limit}"
        raise QueueMismatch(
            f"the queue {found['queue']!r} exists on the broker with other arguments than this service declares "
            f"({declared}; the broker says: {found['argument']!r} {found['detail'].strip()}). Most likely "
            "PORTAL_QUEUE_TYPE changed since the queues were made, and a queue's type and arguments cannot change: "
            "drain the old queues and delete them, then start the services (they declare them anew), or point the "
            "services at a new vhost; see the README, \"Quorum queues\"") from error
