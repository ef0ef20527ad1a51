"""Traces read in tests: OpenTelemetry's in-memory exporter installed in this process for a block, and a small
OTLP/HTTP receiver on 127.0.0.1 that service processes export to; both give their spans as `SeenSpan`s."""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sized
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


@dataclass(frozen=True)
class SeenSpan:
    service: str
    name: str
    kind: str  # SERVER, CLIENT, CONSUMER, PRODUCER, INTERNAL
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    attributes: Mapping[str, Any]
    error: bool


async def arrived(things: Sized) -> bool:
    """For `eventually`: whether anything has arrived."""
    return len(things) > 0


def traceparent_ids(header: Any) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C `traceparent` header."""
    assert isinstance(header, str), f"no traceparent: {header!r}"
    version, trace_id, span_id, _flags = header.split("-")
    assert version == "00"
    return trace_id, span_id


class RecordedSpans:
    """The spans this process ended while the block ran."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    @property
    def spans(self) -> list[SeenSpan]:
        return [_seen(span) for span in self.exporter.get_finished_spans()]

    def named(self, name: str, kind: str | None = None) -> list[SeenSpan]:
        return [span for span in self.spans if span.name == name and (kind is None or span.kind == kind)]


def _seen(span: ReadableSpan) -> SeenSpan:
    assert span.context is not None
    return SeenSpan(service=str(span.resource.attributes.get("service.name")), name=span.name, kind=span.kind.name,
                    trace_id=format(span.context.trace_id, "032x"), span_id=format(span.context.span_id, "016x"),
                    parent_id=format(span.parent.span_id, "016x") if span.parent else None,
                    attributes=dict(span.attributes or {}), error=span.status.status_code.name == "ERROR")


@contextlib.contextmanager
def recorded_spans(service: str = "tests") -> Iterator[RecordedSpans]:
    """OpenTelemetry's SDK installed in this process, exporting to memory, while the block runs; then removed again,
    so the tests after it run with tracing off, as the portal does by default.

    OpenTelemetry lets a process set its tracer provider once; taking it back goes through the same two private
    names its own test utilities reset (opentelemetry.test.globals_test)."""
    assert trace._TRACER_PROVIDER is None, "a tracer provider is installed already"
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield RecordedSpans(exporter)
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()


class OtlpReceiver:
    """OTLP over HTTP (protobuf, `POST /v1/traces`) on a free port of 127.0.0.1 while the block runs: what the
    service processes given `endpoint` as OTEL_EXPORTER_OTLP_ENDPOINT exported."""

    def __init__(self) -> None:
        self._spans: list[SeenSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows the test's own output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def spans(self) -> list[SeenSpan]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        seen = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    seen.append(SeenSpan(
                        service=str(resource.get("service.name")), name=span.name,
                        kind=ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        attributes={item.key: _value(item.value) for item in span.attributes},
                        error=span.status.code == span.status.STATUS_CODE_ERROR))
        with self._lock:
            self._spans.extend(seen)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@contextlib.asynccontextmanager
async def copies(amqp_url: str, exchange: str, routing_key: str) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """Copies of the messages published to `exchange` under `routing_key` while the block runs, as a queue of the
    test's own (bound beside the services') receives them: to read their headers."""
    received: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(declared, routing_key=routing_key)

        async def keep(message: AbstractIncomingMessage) -> None:
            received.append(message)
        await queue.consume(keep, no_ack=True)
        yield received
    finally:
        await connection.close()


def run_python(script: str, **otel: str) -> str:
    """`python -c script` with only these OTEL_* variables set; its standard output."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", script], env={**env, **otel}, capture_output=True, text=True,
                          check=True, timeout=60).stdout
