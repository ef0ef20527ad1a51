"""What operators watch of the gateway: its Prometheus metrics (requests by route template, method and status, on a
port of their own) and `/readyz`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contracts.base import Health
from contracts.topology import SERVICES
from deploy.local.deps import free_port
from gateway.app import READY_REUSE_SECONDS, create_app
from gateway.settings import GatewaySettings


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(sample.labels.items())): sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name}


async def test_requests_are_counted_by_their_routes_template_never_by_what_the_client_sent() -> None:
    app = create_app(GatewaySettings(amqp_url="amqp://guest:guest@127.0.0.1:1/"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
        assert (await client.get("/healthz")).status_code == 200
        for device in ("d-1", "d-2", "secret-id"):  # three ids, one route (no broker here: each a 503)
            assert (await client.get(f"/api/v1/devices/{device}")).status_code == 503
        assert (await client.get("/api/v1/no-such-thing?x=1")).status_code == 404
        assert (await client.request("BREW", "/healthz")).status_code == 405
    text = generate_latest(app.state.metrics.registry).decode()
    counted = samples(text, "portal_http_requests_total")
    assert counted[(("method", "GET"), ("route", "/healthz"), ("status", "200"))] == 1
    assert counted[(("method", "GET"), ("route", "/api/v1/devices/{device_id}"), ("status", "503"))] == 3
    assert counted[(("method", "GET"), ("route", "unrouted"), ("status", "404"))] == 1
    assert counted[(("method", "other"), ("route", "/healthz"), ("status", "405"))] == 1
    assert "d-1" not in text and "secret-id" not in text and "no-such-thing" not in text and "BREW" not in text
    timed = samples(text, "portal_http_request_duration_seconds_count")
    assert timed[(("method", "GET"), ("route", "/api/v1/devices/{device_id}"))] == 3


def test_the_gateway_process_serves_its_metrics_apart_from_its_public_port(amqp_url: str) -> None:
    public, metrics = free_port(), free_port()
    env = {"PORTAL_AMQP_URL": amqp_url, "PORTAL_GATEWAY_PORT": str(public),
           "PORTAL_GATEWAY_METRICS_PORT": str(metrics), "PORTAL_GATEWAY_METRICS_HOST": "127.0.0.1"}
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{public}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or gateway.poll() is not None:
                    pytest.fail("the gateway did not start")
                time.sleep(0.2)
        healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
        for _ in range(50):  # a request is counted as its handler returns, a moment after its answer went out
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
                text = response.read().decode()
            if samples(text, "portal_http_requests_total").get(healthz):
                break
            time.sleep(0.1)
        assert samples(text, "portal_http_requests_total")[healthz] >= 1
        assert "process_cpu_seconds_total" in text
        public_metrics = httpx.get(f"http://127.0.0.1:{public}/metrics", timeout=5)
        assert public_metrics.status_code == 404 and "portal_http_requests" not in public_metrics.text
    finally:
        gateway.terminate()
        gateway.wait(timeout=15)


class CountingPortal:
    """Answers every health command `ok`, a moment later, and counts them."""

    def __init__(self) -> None:
        self.asked = 0

    async def health(self, service: str, *, timeout: float | None = None) -> Health:
        self.asked += 1
        await asyncio.sleep(0.05)
        return Health(service=service, status="ok", version="1")

    async def close(self) -> None:
        pass


async def test_ready_asks_the_services_once_for_requests_at_once_and_reuses_the_answer_a_moment() -> None:
    portal = CountingPortal()
    app = create_app(GatewaySettings(amqp_url="amqp://guest:guest@127.0.0.1:1/"), portal)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
        assert {answer.status_code for answer in answers} == {200}
        assert portal.asked == len(SERVICES)  # one round of health commands, not twenty
        assert (await client.get("/readyz")).status_code == 200
        assert portal.asked == len(SERVICES)
        await asyncio.sleep(READY_REUSE_SECONDS + 0.1)
        assert (await client.get("/readyz")).status_code == 200
        assert portal.asked == 2 * len(SERVICES)
