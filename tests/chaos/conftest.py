"""Fault tests: the services as real processes, killed, cut off from their broker or database, run twice."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from contracts.client import PortalClient
from services.runtime.mongo import mongo_client
from services.runtime.settings import Settings
from tests.chaos.flows import World
from tests.support import Mailbox, ServiceProcesses, wait_healthy

# Faster than production so a fault heals within a test: a dead worker's claim frees a re-sent command after 2 s, a
# mail a killed notifier left in flight goes again after 10 s (not less: on 2 busy cores one attempt, SMTP and its
# record, took over 3 s, and the retry loop sent the mail again); the scheduler's daily run happens at start only.
PROCESS_ENV = {
    "PORTAL_NOTIFIER_LEASE_SECONDS": "10", "PORTAL_NOTIFIER_POLL_SECONDS": "0.5",
    "PORTAL_NOTIFIER_RETRY_BASE_DELAY": "1", "PORTAL_METERING_SCHEDULER_SECONDS": "3600",
}


@pytest.fixture
def chaos_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"claim_lease_seconds": 2.0, "log_level": "WARNING"})


@contextlib.asynccontextmanager
async def world_of(settings: Settings, amqp_url: str, mailbox: Mailbox) -> AsyncIterator[World]:
    """A world on these settings: its processes all stopped, its clients closed when the block ends, however."""
    processes = ServiceProcesses(settings, extra_env=PROCESS_ENV)
    mongo = mongo_client(settings.mongodb_url, settings.mongodb_timeout_ms)
    try:
        async with PortalClient(amqp_url, timeout=10) as portal:
            yield World(settings, amqp_url, portal, mailbox, processes, mongo)
    finally:
        processes.stop_all()
        await mongo.close()


@pytest.fixture
async def world(chaos_settings: Settings, amqp_url: str, mailbox: Mailbox) -> AsyncIterator[World]:
    async with world_of(chaos_settings, amqp_url, mailbox) as world:
        yield world


async def start_healthy(world: World, services: tuple[str, ...], *, replicas: int = 1) -> None:
    world.processes.start(*services, replicas=replicas)
    for service in services:
        await wait_healthy(world.portal, service, timeout=90)


def all_alive(processes: ServiceProcesses) -> bool:
    return all(process.poll() is None for replicas in processes.running.values() for process in replicas)

