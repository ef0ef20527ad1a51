"""The gateway's traces: a span per HTTP request, parent of the command it sends (contracts/tracing.py).

Off unless the OTEL_* variables ask for an exporter: then `configure` (called by `python -m gateway`) installs
OpenTelemetry's SDK. Off, the middleware's spans are the API's no-ops and the commands carry no trace header.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from contracts.tracing import exporters_wanted, extract, service_name, tracer
from gateway.limits import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gateway")

HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"


def configure(version: str) -> bool:
    """Install a tracer provider exporting the gateway's spans, when the OTEL_* variables ask for it; else nothing.
    The same set-up as the services' (services/runtime/tracing.py), which the gateway may not import."""
    exporters = exporters_wanted()
    if not exporters:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    name = service_name("gateway")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name, SERVICE_VERSION: version}))
    for kind in exporters:
        exporter: SpanExporter
        if kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans of %s exported to %s", name, ", ".join(exporters))
    return True


class Tracing:
    """A SERVER span around each HTTP request, named `<method> <route template>` once the route is known; it continues
    a `traceparent` the request carries (a proxy's), and the commands sent while it runs are its children."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])}
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        attributes = {HTTP_METHOD: method, URL_PATH: str(scope.get("path", "")),
                      URL_SCHEME: str(scope.get("scheme", "http"))}
        with tracer().start_as_current_span(method, context=extract(headers), kind=SpanKind.SERVER,
                                            attributes=attributes) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                # Set by Starlette's router on the scope it was given: a template, never the path's ids.
                template = getattr(scope.get("route"), "path", None)
                if isinstance(template, str):
                    span.update_name(f"{method} {template}")
                    span.set_attribute(HTTP_ROUTE, template)
                if status:
                    span.set_attribute(HTTP_STATUS, status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, str(status)))
