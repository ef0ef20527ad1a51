"""Review of the containers, Compose file, Kubernetes manifests and health probes: each test shows a defect and is
expected to fail until it is fixed. Real broker and database where a probe runs; the files are read as they are."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path

import aio_pika
import pytest
import yaml

from contracts.client import PortalClient
from contracts.topology import SERVICES, health_command
from deploy.local.deps import free_port
from gateway.settings import GatewaySettings
from services.metering.settings import MeteringSettings
from services.notifier.settings import NotifierSettings
from services.ordering.settings import OrderingSettings
from services.registration.settings import RegistrationSettings
from services.runtime.service import Service
from services.runtime.settings import Settings
from services.ticketing.settings import TicketingSettings
from tests.gateway.conftest import gateway
from tests.support import running

ROOT = Path(__file__).resolve().parents[2]
# Compose's own variables (interpolated into the file, never read by a process).
COMPOSE_ONLY = {"PORTAL_IMAGE_TAG"}


def _read_variables() -> set[str]:
    """Every `PORTAL_*` variable some process of the portal reads."""
    kinds = (Settings, GatewaySettings, MeteringSettings, NotifierSettings, OrderingSettings, RegistrationSettings,
             TicketingSettings)
    return {f"PORTAL_{name.upper()}" for kind in kinds for name in kind.model_fields} | {"PORTAL_ADMIN_TOKEN"}


def test_every_variable_the_deployment_docs_and_files_name_is_read() -> None:
    texts = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy" / "k8s").glob("*.yaml")),
             ROOT / "deploy" / "k8s" / "README.md"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docker_section = readme.split("## With Docker", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"PORTAL_[A-Z][A-Z0-9_]*", docker_section))
    for path in texts:
        named |= set(re.findall(r"PORTAL_[A-Z][A-Z0-9_]*", path.read_text(encoding="utf-8")))
    assert named - COMPOSE_ONLY - _read_variables() == set()


def test_compose_gives_every_service_the_same_portal_env_as_the_gateway() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    gateway_env = compose["services"]["gateway"]["environment"]["PORTAL_ENV"]
    assert "${PORTAL_ENV" in gateway_env
    for name in SERVICES:
        assert compose["services"][name]["environment"].get("PORTAL_ENV") == gateway_env, name


async def _probe(service: str, **env: str) -> int:
    """The probe as a container runs it (`python -m services.runtime.healthcheck <service>`): its exit status."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.runtime.healthcheck", service, env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.wait_for(process.wait(), 30)
    assert process.returncode is not None
    return process.returncode


async def test_the_probe_fails_in_a_container_whose_own_service_is_not_running(settings: Settings) -> None:
    # Another pod's replica of metering answers on the broker ...
    async with running(Service("metering"), settings):
        # ... while the probe runs in a container where no metering process runs: its own host name, its own
        # (unbound) metrics port, the shared broker.
        status = await _probe("metering", PORTAL_AMQP_URL=settings.amqp_url, HOSTNAME=f"metering-{free_port()}",
                              PORTAL_METRICS_PORT=str(free_port()))

    assert status != 0


async def test_an_unanswered_probe_leaves_nothing_in_the_health_queue(settings: Settings) -> None:
    async with running(Service("metering"), settings):
        pass  # the health queue is declared, as once any replica ran; now nobody consumes it
    timeout = 1.0

    # The container probe asks its own process now; health commands over the broker are the gateway's /readyz.
    async with PortalClient(settings.amqp_url, timeout=30.0) as portal:
        with pytest.raises(TimeoutError):
            await portal.health("metering", timeout=timeout)
    await asyncio.sleep(timeout + 1.0)  # the probe's answer would be of no use to anyone by now

    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(health_command("metering"), passive=True)
        assert queue.declaration_result.message_count == 0


# README, Benchmark: "Reminder run (metering.operator.run_reminders, 100,000 devices, 20,000 recipients, ...) peak RSS
# 76 → 572 MB", measured as the metering process's VmHWM (bench/metering.py).
REMINDER_RUN_PEAK_BYTES = 572 * 1000 * 1000


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit, 1)


def test_meterings_memory_limit_holds_its_measured_reminder_run() -> None:
    documents = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "services.yaml").read_text(encoding="utf-8"))
    (metering,) = [doc for doc in documents if doc and doc["kind"] == "Deployment"
                   and doc["metadata"]["name"] == "metering"]
    (container,) = metering["spec"]["template"]["spec"]["containers"]
    assert _bytes(container["resources"]["limits"]["memory"]) > REMINDER_RUN_PEAK_BYTES


def test_the_compose_cli_can_read_a_file_to_load() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docker_section = readme.split("## With Docker", 1)[1].split("\n## ", 1)[0]
    mounted = bool(compose["services"]["admin"].get("volumes"))
    documented = re.search(r"docker compose run[^\n]*(-v|--volume)[^\n]*admin load", docker_section) is not None
    assert mounted or documented


async def test_the_gateways_readiness_survives_one_service_being_down(amqp_url: str, settings: Settings) -> None:
    documents = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "gateway.yaml").read_text(encoding="utf-8"))
    (deployment,) = [doc for doc in documents if doc and doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    path = container["readinessProbe"]["httpGet"]["path"]
    up = [name for name in SERVICES if name != "ticketing"]  # ticketing is down; the other five answer
    async with contextlib.AsyncExitStack() as stack:
        for name in up:
            await stack.enter_async_context(running(Service(name), settings))
        async with gateway(GatewaySettings(amqp_url=amqp_url)) as http:
            response = await http.get(path)

    assert response.status_code == 200, response.text
