"""Trace context on the wire: W3C `traceparent`/`tracestate` as extra, optional AMQP headers (OpenTelemetry's API).

Tracing is off unless the standard OTEL_* variables ask for an exporter (`exporters_wanted`); the processes that send
spans (the gateway, the services) then install OpenTelemetry's SDK at start. Off (`tracing_on`), no span is begun and
no header added or read: a message is what it was before. `install` is the one SDK set-up, for the gateway and every
service; it imports the SDK only when tracing is on, so the contracts and the client load nothing but the API.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.topology import COMMANDS_EXCHANGE

log = logging.getLogger(__name__)

TRACER_NAME = "service-portal"
EXPORTERS = ("otlp", "console")
# At exit, unsent spans get this long to reach the collector: one that is away must not hold up a stop.
EXIT_FLUSH_SECONDS = 1.5
# Only W3C trace context crosses a process boundary, never `baggage` (caller-made data the services would carry on),
# and only at sizes a real one has: a `traceparent` is 55 characters; a `tracestate` beyond this is dropped, not
# stored with every event a command writes.
PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
MAX_TRACEPARENT, MAX_TRACESTATE = 55, 512

# OpenTelemetry's semantic conventions for messaging (RabbitMQ) and this portal's own attributes.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION = "messaging.operation.type"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CORRELATION_ID = "messaging.message.conversation_id"  # the semantic conventions' name for it
ERROR_TYPE = "error.type"
OUTCOME = "portal.outcome"  # `ok` or `refused` for a command, what became of an event
ERROR_CODE = "portal.error.code"  # the catalogue's error code of a refused command


def tracer() -> trace.Tracer:
    """The portal's tracer, asked for at each span: it follows the tracer provider installed at the time."""
    return trace.get_tracer(TRACER_NAME)


def tracing_on() -> bool:
    """Whether a tracer provider is installed (OpenTelemetry's SDK, by a process's `install` or by a test). Off, no
    span is begun and no header read or written: about 5 µs a command in all, where the API's no-op spans and header
    parsing took 25 µs (measured on this 2-core machine; a command costs the service about 460 µs)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def exporters_wanted(environ: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the OTEL_* variables ask for; none (tracing off) unless an OTLP endpoint is set or
    `OTEL_TRACES_EXPORTER` names `console`.

    Unlike OpenTelemetry's own default (`otlp` to localhost:4318), nothing is exported without an endpoint:
    a portal run with no variable set sends nothing anywhere."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()]
    for name in names:
        if name not in (*EXPORTERS, "none"):
            log.warning("OTEL_TRACES_EXPORTER names %r, which this portal does not ship: ignored", name)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return [name for name in EXPORTERS if name in names and (name != "otlp" or endpoint)]


def service_name(default: str, environ: Mapping[str, str] | None = None) -> str:
    """`OTEL_SERVICE_NAME` when set, else the process's own name (`accounts`, `gateway`)."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_SERVICE_NAME", "").strip() or default


def install(name: str, version: str) -> bool:
    """Install OpenTelemetry's SDK exporting this process's spans (a service's, the gateway's), when the OTEL_*
    variables ask for it (the standard ones: endpoint, headers, sampler, batch delays); otherwise install nothing.
    Whether it did. The SDK is imported only here, so a process with tracing off never loads it."""
    exporters = exporters_wanted()
    if not exporters:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name(name), SERVICE_VERSION: version}),
                              shutdown_on_exit=False)
    for kind in exporters:
        exporter: SpanExporter
        if kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter()  # OTLP over HTTP (protobuf); its OTEL_EXPORTER_OTLP_* read by itself
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    atexit.register(_flush_within, provider.shutdown, EXIT_FLUSH_SECONDS)
    log.info("tracing on: spans of %s exported to %s", service_name(name), ", ".join(exporters))
    return True


def _flush_within(shutdown: Any, seconds: float) -> None:
    """Run `shutdown` (which sends the spans still waiting) for at most `seconds`: the SDK's own waits for the
    exporter's retries, 7 s and more when the collector is away, on top of the graceful stop."""
    worker = threading.Thread(target=shutdown, name="trace-flush", daemon=True)
    worker.start()
    worker.join(seconds)


class _Headers(Getter[Mapping[str, Any]]):
    """Reads an AMQP header table (or HTTP headers): a value may come as text or as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str) or len(value) > (MAX_TRACEPARENT if key == TRACEPARENT else MAX_TRACESTATE):
            return None  # oversized: ignored rather than parsed (and logged in full by OpenTelemetry)
        return [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(key) for key in carrier]


HEADERS = _Headers()


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Add the trace context (the current one by default) to `headers`; nothing when there is none (tracing off)."""
    PROPAGATOR.inject(headers, context=context)


def extract(headers: Mapping[str, Any]) -> Context:
    """The trace context a message or request carries; an empty one when it carries none."""
    return PROPAGATOR.extract(headers, getter=HEADERS)


def trace_headers() -> dict[str, str]:
    """The current trace context as headers, to send later (an outbox entry); empty when there is none."""
    headers: dict[str, str] = {}
    if tracing_on():
        inject(headers)
    return headers


def record_reply(span: Span, envelope: Mapping[str, Any]) -> None:
    """A reply envelope's outcome on `span`: `ok`, or `refused` with its error code; `internal` marks an error."""
    if envelope.get("ok"):
        span.set_attribute(OUTCOME, "ok")
        return
    error = envelope.get("error")
    code = str(error.get("code", "")) if isinstance(error, Mapping) else ""
    span.set_attribute(OUTCOME, "refused")
    span.set_attribute(ERROR_CODE, code)
    if code == "internal":
        span.set_attribute(ERROR_TYPE, code)
        span.set_status(Status(StatusCode.ERROR, code))


@contextmanager
def sending_command(command: str, headers: MutableMapping[str, Any], *, message_id: str,
                    correlation_id: str) -> Iterator[Span]:
    """The client's span of one command, request to reply, its context added to `headers`."""
    if not tracing_on():
        yield trace.INVALID_SPAN
        return
    attributes = {MESSAGING_SYSTEM: "rabbitmq", MESSAGING_OPERATION: "send", MESSAGING_DESTINATION: COMMANDS_EXCHANGE,
                  MESSAGING_ROUTING_KEY: command, MESSAGING_MESSAGE_ID: message_id,
                  MESSAGING_CORRELATION_ID: correlation_id}
    with tracer().start_as_current_span(command, kind=SpanKind.CLIENT, attributes=attributes) as span:
        inject(headers)
        yield span
