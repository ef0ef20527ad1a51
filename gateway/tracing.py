"""The gateway's traces: FastAPI's own span per HTTP request, parent of the command it sends (contracts/tracing.py).

FastAPI (0.163) traces each request by itself once a tracer provider is installed: a SERVER span named
`<method> <route template>` with OpenTelemetry's HTTP attributes, continuing a `traceparent` the request carries, and
spans for the dependencies and the endpoint, inside which the client's command span runs. Off unless the OTEL_*
variables ask for an exporter: then `configure` (called by `python -m gateway`) installs OpenTelemetry's SDK. Off,
FastAPI skips its telemetry and the commands carry no trace header.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from contracts.tracing import exporters_wanted, service_name

log = logging.getLogger("gateway")


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
