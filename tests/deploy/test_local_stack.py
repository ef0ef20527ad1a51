"""The local stack of `make run`: its mail sink, and the runner from start to SIGTERM.

The end-to-end test runs `python -m deploy.local` in a subprocess against the test's own vhost,
with its own data directory and free ports for nx-27017 and the mail sink
(PORTAL_LOCAL_DATA_DIR, PORTAL_LOCAL_MONGODB_PORT, PORTAL_LOCAL_SMTP_PORT), so it runs beside a
developer's `make run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from contracts.client import PortalClient
from contracts.topology import SERVICES
from deploy.local.deps import free_port, port_open
from deploy.local.mail_sink import start_mail_sink

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Ctrl-C to stop"


async def send_mail(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "Service Portal <no-reply@portal.localhost>"
    message["To"] = "kunde@example.org"
    message["Subject"] = subject
    message.set_content("Ihr Auftrag ist eingegangen.")
    errors, _ = await aiosmtplib.send(message, hostname="127.0.0.1", port=port,
                                      start_tls=False, use_tls=False, timeout=5)
    assert errors == {}


async def test_the_mail_sink_stores_each_mail_as_a_file_that_parses_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    controller = start_mail_sink(tmp_path, port)
    try:
        with caplog.at_level(logging.INFO, logger="deploy.local.mail_sink"):
            await send_mail(port, "Auftragsbestätigung 4711 – Drucker C650")
            await send_mail(port, "second")
    finally:
        controller.stop()

    files = sorted(await asyncio.to_thread(lambda: list(tmp_path.iterdir())))
    assert [file.suffix for file in files] == [".eml", ".eml"], "only finished mails, no temporary files"
    assert all(re.fullmatch(r"\d{8}T\d{12}Z-\d+\.eml", file.name) for file in files)
    subjects = {email.message_from_bytes(file.read_bytes(), policy=email.policy.default)["subject"]
                for file in files}
    assert subjects == {"Auftragsbestätigung 4711 – Drucker C650", "second"}
    logged = [record.getMessage() for record in caplog.records if record.name == "deploy.local.mail_sink"]
    assert len(logged) == 2
    assert all("kunde@example.org" in line and ".eml" in line for line in logged)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; it only waits for its parent to read its status
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def read_until_ready(runner: asyncio.subprocess.Process) -> str:
    """The runner's standard output up to its ready line; fails if it exits first."""
    assert runner.stdout is not None
    output = ""
    while READY_LINE not in output:
        line = await runner.stdout.readline()
        if not line:
            code = await runner.wait()
            raise AssertionError(f"the runner exited with {code} before it was ready:\n{output}")
        output += line.decode()
    return output


@dataclass
class Runner:
    process: asyncio.subprocess.Process
    data_dir: Path
    mongodb_port: int
    smtp_port: int
    gateway_port: int


@contextlib.asynccontextmanager
async def local_stack(amqp_url: str, tmp_path: Path, data_dir: Path, mongodb_port: int, smtp_port: int,
                      **variables: str) -> AsyncIterator[Runner]:
    """`python -m deploy.local` with this data directory and these ports, on the test's vhost."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PORTAL_MONGODB_URL", "PORTAL_SMTP_HOST")}
    gateway_port = free_port()
    env |= {"PORTAL_LOCAL_DATA_DIR": str(data_dir), "PORTAL_AMQP_URL": amqp_url,
            "PORTAL_LOCAL_MONGODB_PORT": str(mongodb_port), "PORTAL_LOCAL_SMTP_PORT": str(smtp_port),
            "PORTAL_GATEWAY_PORT": str(gateway_port), **variables}
    # The services log a lot; a file, unlike an unread pipe, never fills up and blocks them.
    with (tmp_path / "stderr.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deploy.local", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=log)
        try:
            yield Runner(process, data_dir, mongodb_port, smtp_port, gateway_port)
        finally:
            await stop(process)


@pytest.fixture
async def runner(amqp_url: str, tmp_path: Path) -> AsyncIterator[Runner]:
    """The local stack with its own data directory and free ports."""
    async with local_stack(amqp_url, tmp_path, tmp_path / "data", free_port(), free_port()) as started:
        yield started


async def stop(runner: asyncio.subprocess.Process) -> None:
    """After a failed test: SIGTERM first, since a killed runner would leave its children running."""
    if runner.returncode is not None:
        return
    runner.terminate()
    try:
        async with asyncio.timeout(30):
            await runner.wait()
    except TimeoutError:
        runner.kill()
        await runner.wait()


async def test_the_local_stack_starts_six_healthy_services_and_stops_everything_on_sigterm(
        runner: Runner, amqp_url: str) -> None:
    async with asyncio.timeout(40):
        output = await read_until_ready(runner.process)
    pids = {name: int(pid) for name, pid in re.findall(r"([\w-]+)\s+pid (\d+)", output)}
    assert set(pids) == {*SERVICES, "gateway", "nx-27017"}, output
    ready = re.search(r"ready in ([\d.]+) s", output)
    assert ready is not None and float(ready.group(1)) < 30, output

    async with PortalClient(amqp_url, timeout=10) as portal:
        for service in SERVICES:
            health = await portal.health(service)
            assert (health.service, health.status) == (service, "ok")
        # The demo catalogue is loaded: the seeds' C332 and its serial hint are known.
        assert (await portal.call("registration.serial_hint", {"model": "C332"}))["hint"]
    gateway = re.search(r"HTTP\s+(http://\S+)", output)
    assert gateway is not None and gateway.group(1) == f"http://127.0.0.1:{runner.gateway_port}", output
    async with httpx.AsyncClient(base_url=gateway.group(1)) as http:
        assert (await http.get("/readyz")).json()["status"] == "ok"
        hint = await http.get("/api/v1/serial-hints", params={"model": "C332"})
        assert hint.status_code == 200 and hint.json()["hint"]
        # Each service and the gateway serve their own Prometheus metrics, on the port the summary names.
        metrics = dict(re.findall(r"([\w-]+)\s+pid \d+\s+metrics (http://\S+)", output))
        assert set(metrics) == {*SERVICES, "gateway"}, output
        for service in SERVICES:
            assert f'portal_service_info{{service="{service}"' in (await http.get(metrics[service])).text
        assert 'route="/readyz"' in (await http.get(metrics["gateway"])).text
    await send_mail(runner.smtp_port, "from the test")
    assert len(list((runner.data_dir / "mail").glob("*.eml"))) == 1

    runner.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(runner.process.wait(), 30) == 0
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert not port_open("127.0.0.1", runner.mongodb_port), "nx-27017 still listens"
    assert not port_open("127.0.0.1", runner.smtp_port), "the mail sink still listens"
    assert not port_open("127.0.0.1", runner.gateway_port), "the gateway still listens"


async def test_a_changed_bootstrap_email_on_existing_data_brings_up_a_working_operator(
        amqp_url: str, tmp_path: Path) -> None:
    data_dir, ports = tmp_path / "data", (free_port(), free_port())
    for email_address in ("operator@portal.localhost", "ops-desk@portal.localhost"):
        async with local_stack(amqp_url, tmp_path, data_dir, *ports,
                               PORTAL_BOOTSTRAP_OPERATOR_EMAIL=email_address) as started:
            async with asyncio.timeout(40):
                await read_until_ready(started.process)  # the demo loader signed in as this operator
            started.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(started.process.wait(), 30) == 0
