"""The containers' health probes as the images run them (`python -m ...`), against a real broker and gateway."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from deploy.local.deps import free_port
from gateway.healthcheck import healthz_url
from gateway.settings import GatewaySettings
from services.runtime import healthcheck
from services.runtime.service import Service
from services.runtime.settings import Settings
from tests.support import running


async def _probe(*argv: str, **env: str) -> tuple[int, str]:
    """Runs a probe the way Docker's HEALTHCHECK does: a process; its exit status and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv, env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_a_service_probe_passes_while_a_replica_answers_and_fails_once_none_does(settings: Settings) -> None:
    env = {"PORTAL_AMQP_URL": settings.amqp_url}
    # A bare service under the name of metering: it answers `metering.health` like the real one.
    async with running(Service("metering"), settings):
        assert await _probe("services.runtime.healthcheck", "metering", **env) == (0, "")
        assert await healthcheck.probe("metering", settings.amqp_url) is None
    # Its queue is still there, with nobody consuming: no answer within the probe's time.
    started = time.monotonic()
    problem = await healthcheck.probe("metering", settings.amqp_url, timeout=1.0)
    assert problem is not None and "metering.health" in problem and "TimeoutError" in problem
    assert time.monotonic() - started < 3


def test_a_service_probe_fails_at_once_without_a_broker(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORTAL_AMQP_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    started = time.monotonic()
    assert healthcheck.main(["metering"]) == 1
    assert time.monotonic() - started < healthcheck.TIMEOUT_SECONDS
    assert "metering.health" in capsys.readouterr().err


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
