"""Prometheus metrics of one service copy, served over HTTP on `PORTAL_METRICS_PORT` when it is set.

Each copy has its own registry (tests run several in one process). Label values come from the service's own
declaration (command names, event routing keys, outbox collections) or from fixed sets (outcomes, the catalogue's
error codes), never from a message: a body or header cannot make a new time series.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

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

from contracts.errors import MESSAGES

__all__ = ["Counter", "Metrics"]

# A refusal's code outside the catalogue is counted as this (a handler's typo must not grow the label set).
OTHER_CODE = "other"
KNOWN_CODES = frozenset(str(code) for code in MESSAGES)
# From a claim answered in a millisecond to a bulk upload's half minute.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, service: str, version: str) -> None:
        self.service = service
        # `/healthz` answers ok until then (time.monotonic()): the service's heartbeat moves it on while the process
        # is healthy, so a process that stops being healthy, or whose event loop hangs, fails its probe.
        self.healthy_until = 0.0
        self.registry = registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        Gauge("portal_service_info", "The service this process runs, and its version.", ["service", "version"],
              registry=registry).labels(service, version).set(1)
        self.commands = Counter(
            "portal_commands", "Commands answered, by command, outcome (ok, refused, unsent) and refusal code.",
            ["command", "outcome", "code"], registry=registry)
        self.command_seconds = Histogram(
            "portal_command_duration_seconds", "From a command's delivery until it was answered and acked.",
            ["command"],
            buckets=SECONDS_BUCKETS, registry=registry)
        self.events = Counter(
            "portal_events", "Events taken from the service's queues, by routing key and outcome "
            "(handled, duplicate, retried, dead_lettered, undecodable).", ["event", "outcome"], registry=registry)
        self.event_seconds = Histogram(
            "portal_event_duration_seconds", "Handling one delivery of an event, retried or not.", ["event"],
            buckets=SECONDS_BUCKETS, registry=registry)
        self.outbox_pending = Gauge(
            "portal_outbox_pending_events", "Events written to an outbox and not yet published, as the relay last "
            "saw them.", ["collection"], registry=registry)
        self.outbox_published = Counter(
            "portal_outbox_published_events", "Events the outbox relay published (confirmed by the broker).",
            ["collection"], registry=registry)
        self._own: dict[str, Counter] = {}
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def command_answered(self, command: str, reply: dict[str, object] | None, seconds: float) -> None:
        """Count a command's answer (None: its reply could not be sent) and time it."""
        if reply is None:
            outcome, code = "unsent", "none"
        elif reply.get("ok"):
            outcome, code = "ok", "none"
        else:
            error = reply.get("error")
            code = str(error.get("code")) if isinstance(error, dict) else OTHER_CODE
            outcome, code = "refused", code if code in KNOWN_CODES else OTHER_CODE
        self.commands.labels(command, outcome, code).inc()
        self.command_seconds.labels(command).observe(seconds)

    def declare(self, commands: Iterable[str], events: Iterable[str], collections: Iterable[str]) -> None:
        """Show every command's and event's series from the start, at zero: a rate over a counter that appears only
        with its first increment misses that increment."""
        for command in commands:
            self.commands.labels(command, "ok", "none")
            self.command_seconds.labels(command)
        for event in events:
            self.events.labels(event, "handled")
            self.event_seconds.labels(event)
        for collection in collections:
            self.outbox_pending.labels(collection).set(0)
            self.outbox_published.labels(collection)

    def counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        """A service's own counter in this registry (the notifier's mails), made on first use."""
        if name not in self._own:
            self._own[name] = Counter(name, documentation, list(labels), registry=self.registry)
        return self._own[name]

    def serve(self, port: int, host: str) -> int:
        """Serve `/metrics` and `/healthz` on `host:port` (0: a free port) from a thread; returns the port."""
        server, thread = start_http_server(port, host, registry=self.registry)
        metrics = server.get_app()
        assert metrics is not None
        server.set_app(self._with_healthz(metrics))
        self._server = (server, thread)
        return int(server.server_port)

    def _with_healthz(self, metrics: WSGIApplication) -> WSGIApplication:
        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != "/healthz":
                return metrics(environ, start_response)
            healthy = time.monotonic() < self.healthy_until
            body = json.dumps({"service": self.service, "status": "ok" if healthy else "unhealthy"}).encode()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
            return [body]
        return app

    def close(self) -> None:
        if self._server is None:
            return
        server, thread = self._server
        self._server = None
        server.shutdown()
        server.server_close()
        thread.join(5)
