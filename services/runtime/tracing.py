"""Traces of the services: OpenTelemetry's SDK installed at start when OTEL_* asks for it, a span per message handled.

A command's span (SERVER) continues the trace its `traceparent` header carries (the gateway's request, a client's
call); the events its handler writes to the outbox keep that context in their entries (`trace_headers`), and the relay
publishes it with them, so each consumer's span (CONSUMER) continues the same trace, however late the relay sends.
Off (no OTLP endpoint set, contracts/tracing.py), nothing is installed, no span begun and no header read or added.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from faststream.rabbit import RabbitMessage
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from contracts.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE
from contracts.tracing import (
    ERROR_TYPE,
    MESSAGING_CORRELATION_ID,
    MESSAGING_DESTINATION,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION,
    MESSAGING_ROUTING_KEY,
    MESSAGING_SYSTEM,
    OUTCOME,
    extract,
    record_reply,
    trace_headers,
    tracer,
    tracing_on,
)

MESSAGING_SUBSCRIPTION = "messaging.destination.subscription.name"

__all__ = ["failed", "handling_command", "handling_event", "outcome", "replied", "span",
           "trace_headers"]


def _message_attributes(msg: RabbitMessage, exchange: str, routing_key: str) -> dict[str, AttributeValue]:
    raw = msg.raw_message
    attributes: dict[str, AttributeValue] = {MESSAGING_SYSTEM: "rabbitmq", MESSAGING_OPERATION: "process",
                                             MESSAGING_DESTINATION: exchange, MESSAGING_ROUTING_KEY: routing_key}
    if isinstance(raw.message_id, str) and raw.message_id:
        attributes[MESSAGING_MESSAGE_ID] = raw.message_id
    if isinstance(raw.correlation_id, str) and raw.correlation_id:
        attributes[MESSAGING_CORRELATION_ID] = raw.correlation_id
    return attributes


@contextmanager
def handling_command(command: str, msg: RabbitMessage) -> Iterator[Span]:
    """The span of one command, from its delivery to its reply, child of the sender's span."""
    if not tracing_on():
        yield trace.INVALID_SPAN
        return
    with tracer().start_as_current_span(command, context=extract(msg.headers), kind=SpanKind.SERVER,
                                        attributes=_message_attributes(msg, COMMANDS_EXCHANGE, command)) as current:
        yield current


@contextmanager
def handling_event(event: str, queue: str, msg: RabbitMessage) -> Iterator[Span]:
    """The span of one event handled on `queue`, child of the span of the command that emitted it."""
    if not tracing_on():
        yield trace.INVALID_SPAN
        return
    attributes = {**_message_attributes(msg, EVENTS_EXCHANGE, event), MESSAGING_SUBSCRIPTION: queue}
    with tracer().start_as_current_span(event, context=extract(msg.headers), kind=SpanKind.CONSUMER,
                                        attributes=attributes) as current:
        yield current


@contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL,
         attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
    """A child span of the message being handled (a mail sent, say)."""
    with tracer().start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def replied(reply: Mapping[str, Any]) -> None:
    """The reply's outcome on the current span: `ok`, or `refused` and its error code."""
    record_reply(trace.get_current_span(), reply)


def outcome(what: str) -> None:
    """What became of the message being handled (`handled`, `duplicate`, `retried`, `dead_lettered`)."""
    trace.get_current_span().set_attribute(OUTCOME, what)


def failed(error: BaseException) -> None:
    """An error the runtime caught while handling the message: on its span, with the stack."""
    current = trace.get_current_span()
    current.record_exception(error)
    current.set_attribute(ERROR_TYPE, type(error).__name__)
    current.set_status(Status(StatusCode.ERROR, type(error).__name__))
