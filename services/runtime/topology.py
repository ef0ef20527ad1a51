"""The durable exchanges and queues of CATALOG §1, declared identically by every service."""

from __future__ import annotations

from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    dead_letter_queue,
)

COMMANDS = RabbitExchange(COMMANDS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.TOPIC, durable=True)


def durable_queue(name: str, routing_key: str) -> RabbitQueue:
    """A queue whose rejected messages go to `portal.dlx` under the queue's own name.

    Routing dead letters by queue name (not by the original routing key) keeps the dead
    letters of two consumers of the same event apart.
    """
    return RabbitQueue(name, durable=True, routing_key=routing_key, arguments={
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": name,
    })


async def declare_dead_letter_queue(broker: RabbitBroker, queue: str) -> None:
    dlq = RabbitQueue(dead_letter_queue(queue), durable=True, routing_key=queue)
    exchange = await broker.declare_exchange(DEAD_LETTERS)
    declared = await broker.declare_queue(dlq)
    await declared.bind(exchange, routing_key=queue)
