"""Fault tests: the services as real processes, killed, cut off from their broker or database, run twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from contracts.client import PortalClient
from services.runtime.mongo import mongo_client
from services.runtime.settings import Settings
from tests.chaos.flows import World
from tests.support import Mailbox, ServiceProcesses, wait_healthy

# Faster than production so a fault heals within a test: a dead worker's claim frees a re-sent command after 2 s, a
# mail a killed notifier left in flight goes again after 3 s; the scheduler's daily run happens at start only.
PROCESS_ENV = {
    "PORTAL_NOTIFIER_LEASE_SECONDS": "3", "PORTAL_NOTIFIER_POLL_SECONDS": "0.5",
    "PORTAL_NOTIFIER_RETRY_BASE_DELAY": "1", "PORTAL_METERING_SCHEDULER_SECONDS": "3600",
}


@pytest.fixture
def chaos_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"claim_lease_seconds": 2.0, "log_level": "WARNING"})


@pytest.fixture
def processes(chaos_settings: Settings) -> Iterator[ServiceProcesses]:
    processes = ServiceProcesses(chaos_settings, **PROCESS_ENV)
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
async def world(chaos_settings: Settings, amqp_url: str, portal: PortalClient, mailbox: Mailbox,
                processes: ServiceProcesses) -> AsyncIterator[World]:
    mongo = mongo_client(chaos_settings.mongodb_url, chaos_settings.mongodb_timeout_ms)
    try:
        yield World(chaos_settings, amqp_url, portal, mailbox, processes, mongo)
    finally:
        await mongo.close()


async def start_healthy(world: World, services: tuple[str, ...], *, replicas: int = 1) -> None:
    world.processes.start(*services, replicas=replicas)
    for service in services:
        await wait_healthy(world.portal, service, timeout=90)
