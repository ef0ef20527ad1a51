"""The gateway's traces: FastAPI's own span per HTTP request, parent of the command it sends (contracts/tracing.py).

FastAPI (0.163) traces each request by itself once a tracer provider is installed (`contracts.tracing.install`,
called by `python -m gateway` when the OTEL_* variables ask for it): a SERVER span named `<method> <route template>`
with OpenTelemetry's HTTP attributes, and spans for the dependencies and the endpoint, inside which the client's
command span runs. Off, FastAPI skips its telemetry and the commands carry no trace header.

The gateway faces the internet, so two things of FastAPI's default are changed here:
- a request's own `traceparent`/`tracestate`/`baggage` headers are dropped before FastAPI reads them, unless
  `PORTAL_GATEWAY_TRUST_TRACE_CONTEXT` says a proxy in front sets them: otherwise any client could switch tracing
  off for its requests (sampled flag 00), force it on, or hand the services data of its own (`baggage`);
- the mails' links carry their secret in `token` (password reset, confirmation, readings, unsubscribe): the request
  span's `url.query` shows it as `REDACTED`, as FastAPI already does for cloud signatures.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import _asgi
from starlette.types import Receive, Scope, Send

UPSTREAM_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
SECRET_QUERY_PARAMETERS = frozenset({"token"})

# FastAPI reads this set on every request span it begins; a test proves the token stays out of the spans.
_asgi._SENSITIVE_QUERY_PARAMETERS = _asgi._SENSITIVE_QUERY_PARAMETERS | SECRET_QUERY_PARAMETERS


class TracedGateway(FastAPI):
    """FastAPI, but a request's trace headers count only from a trusted proxy (`trust_trace_context`)."""

    def __init__(self, *, trust_trace_context: bool, **options: Any) -> None:
        super().__init__(**options)
        self.trust_trace_context = trust_trace_context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            dropped = {b"baggage"} if self.trust_trace_context else UPSTREAM_TRACE_HEADERS
            headers = scope.get("headers") or []
            if any(name.lower() in dropped for name, _ in headers):
                scope = {**scope, "headers": [(name, value) for name, value in headers
                                              if name.lower() not in dropped]}
        await super().__call__(scope, receive, send)
