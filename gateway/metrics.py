"""Prometheus metrics of one gateway process, served on their own port (`PORTAL_GATEWAY_METRICS_PORT`), never on
the public one: requests by route, method and status, and their time.

The route label is the route's template (`/api/v1/devices/{device_id}`), a mount's path for the files it serves
(`/static`), `unrouted` for an address no route has: no path, query or header a client sends can make a new time
series.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNROUTED = "unrouted"
# From /healthz in a millisecond to an upload waiting on its service.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self, version: str) -> None:
        self.registry = registry = CollectorRegistry()  # one per app: tests run several in one process
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        Gauge("portal_gateway_info", "This gateway's version.", ["version"], registry=registry).labels(version).set(1)
        self.requests = Counter("portal_http_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.seconds = Histogram("portal_http_request_duration_seconds", "From a request's arrival to its answer.",
                                 ["route", "method"], buckets=SECONDS_BUCKETS, registry=registry)
        self._server: Any = None

    def serve(self, port: int, host: str) -> int:
        """Serve `/metrics` on `host:port` (0: a free port) from a thread; returns the port."""
        self._server, _ = start_http_server(port, host, registry=self.registry)
        served: int = self._server.server_port
        return served

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class CountRequests:
    """ASGI middleware: each HTTP request counted once it is answered, under its route's template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an exception before the answer's start is a 500 to the client

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_of(scope)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.seconds.labels(route, method).observe(time.perf_counter() - started)


def route_of(scope: Scope) -> str:
    """The route's template (the router sets it on the shared scope); for a mounted app (the static files) the
    mount's path, which FastAPI's router leaves out of the scope: it names the mounted app its `endpoint`."""
    route = scope.get("route")
    if route is None and scope.get("endpoint") is not None:
        route = next((mount for mount in getattr(scope.get("router"), "routes", ())
                      if isinstance(mount, Mount) and mount.app is scope["endpoint"]), None)
    return getattr(route, "path", None) or UNROUTED


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
