"""The containers' health probes as the images run them (`python -m ...`), against a real broker and gateway."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from deploy.local import deps
from deploy.local.deps import free_port
from gateway.healthcheck import healthz_url
from gateway.settings import GatewaySettings
from services.runtime import healthcheck
from services.runtime.metrics import Metrics
from services.runtime.service import Service
from services.runtime.settings import Settings
from tests.conftest import Broker
from tests.support import eventually, running


async def _probe(*argv: str, **env: str) -> tuple[int, str]:
    """Runs a probe the way Docker's HEALTHCHECK does: a process; its exit status and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv, env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def _local(settings: Settings) -> Settings:
    """These settings with the metrics port (and its /healthz) on a free port."""
    return settings.model_copy(update={"metrics_port": 0, "metrics_host": "127.0.0.1"})


async def test_a_service_probe_passes_while_its_own_process_is_healthy_and_fails_once_it_stops(
        settings: Settings) -> None:
    async with running(Service("metering"), _local(settings)) as instance:
        assert instance.metrics_port is not None
        env = {"PORTAL_AMQP_URL": settings.amqp_url, "PORTAL_METRICS_PORT": str(instance.metrics_port)}

        async def passes() -> bool:
            return await _probe("services.runtime.healthcheck", "metering", **env) == (0, "")

        await eventually(passes, timeout=10.0)
        # Another service's probe in this container is not answered by metering.
        status, stderr = await _probe("services.runtime.healthcheck", "ordering", **env)
        assert status == 1 and "metering" in stderr
    started = time.monotonic()
    status, stderr = await _probe("services.runtime.healthcheck", "metering", **env)
    assert status == 1 and "/healthz" in stderr
    assert time.monotonic() - started < healthcheck.TIMEOUT_SECONDS


async def test_a_service_probe_fails_once_its_process_loses_the_broker(rabbitmq: Broker, settings: Settings) -> None:
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(settings.amqp_url).path.lstrip("/"))
    async with running(Service("metering"), _local(settings)) as instance:
        assert instance.metrics_port is not None
        env = {"PORTAL_METRICS_PORT": str(instance.metrics_port)}
        await eventually(lambda: _passes(env), timeout=10.0)
        # The broker is gone for this process: its connections closed, and no reconnecting.
        _rabbitmqctl("clear_permissions", "-p", vhost, "guest")
        _rabbitmqctl("close_all_connections", "-p", vhost, "test: the broker is gone")
        started = time.monotonic()
        await eventually(lambda: _fails(env), timeout=10.0, step=0.5)
        # Within one heartbeat (5 s) and its check (3 s).
        assert time.monotonic() - started < 10.0
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")  # lets it stop in good order


async def _passes(env: dict[str, str]) -> bool:
    return await _probe("services.runtime.healthcheck", "metering", **env) == (0, "")


async def _fails(env: dict[str, str]) -> bool:
    return (await _probe("services.runtime.healthcheck", "metering", **env))[0] == 1


def _rabbitmqctl(*args: str) -> None:
    subprocess.run([deps.executable("rabbitmqctl"), *args], check=True, capture_output=True, timeout=60)


def test_healthz_is_ok_only_while_the_heartbeat_is_fresh() -> None:
    metrics = Metrics("metering", "0.0.0")
    port = metrics.serve(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        with pytest.raises(urllib.error.HTTPError) as refused:  # no heartbeat yet
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        metrics.healthy_until = time.monotonic() + 10
        with urllib.request.urlopen(url, timeout=5) as response:
            assert json.load(response) == {"service": "metering", "status": "ok"}
        metrics.healthy_until = time.monotonic() - 1  # a heartbeat that stopped (a hung event loop)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url, timeout=5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"portal_service_info" in response.read()
    finally:
        metrics.close()


def test_a_service_probe_fails_at_once_without_a_metrics_port(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PORTAL_METRICS_PORT", raising=False)
    assert healthcheck.main(["metering"]) == 1
    assert "PORTAL_METRICS_PORT" in capsys.readouterr().err


def test_a_service_probe_asks_its_own_metrics_port() -> None:
    assert healthcheck.healthz_url(Settings(metrics_port=9100)) == "http://127.0.0.1:9100/healthz"
    assert healthcheck.healthz_url(Settings(metrics_port=9100, metrics_host="::1")) == "http://[::1]:9100/healthz"
    assert healthcheck.healthz_url(Settings(metrics_port=None)) is None


def test_a_service_probe_names_the_services_it_knows() -> None:
    assert healthcheck.main(["metring"]) == 2
    assert healthcheck.main([]) == 2


def test_the_gateway_probe_asks_its_own_port() -> None:
    assert healthz_url(GatewaySettings(gateway_host="0.0.0.0", gateway_port=8080)) == "http://127.0.0.1:8080/healthz"
    assert healthz_url(GatewaySettings(gateway_host="10.0.0.7", gateway_port=80)) == "http://10.0.0.7:80/healthz"
    assert healthz_url(GatewaySettings(gateway_host="::1", gateway_port=8080)) == "http://[::1]:8080/healthz"


def _probe_process(*argv: str, **env: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", *argv], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, timeout=30, check=False)
    return result.returncode, result.stderr


def test_the_gateway_probe_passes_while_it_serves_and_fails_once_stopped(amqp_url: str) -> None:
    env = {"PORTAL_AMQP_URL": amqp_url, "PORTAL_GATEWAY_HOST": "0.0.0.0", "PORTAL_GATEWAY_PORT": str(free_port())}
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env={**os.environ, **env})
    try:
        url = healthz_url(GatewaySettings(gateway_host="0.0.0.0", gateway_port=int(env["PORTAL_GATEWAY_PORT"])))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or gateway.poll() is not None:
                    pytest.fail("the gateway did not start")
                time.sleep(0.2)
        assert _probe_process("gateway.healthcheck", **env) == (0, "")
    finally:
        gateway.terminate()
        gateway.wait(timeout=15)
    status, stderr = _probe_process("gateway.healthcheck", **env)
    assert status == 1 and "/healthz" in stderr
