"""All six services running in this process, one stack per test module: its vhost, its databases, its SMTP sink, its
services and its client are shared by the module's tests (`pytestmark = pytest.mark.asyncio(loop_scope="module")`).

Hypothesis profiles: `HYPOTHESIS_PROFILE=deep` for a long separate run; the default profile is bounded and
derandomised, so `make test` runs the same examples every time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings

from contracts.client import PortalClient
from services.accounts.app import service as accounts_service
from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.notifier.app import service as notifier_service
from services.ordering.app import service as ordering_service
from services.registration.app import service as registration_service
from services.runtime.service import Service, ServiceInstance
from services.ticketing.app import service as ticketing_service
from tests.support import TEST_QUEUE_TYPE, Mailbox, running

SERVICES: tuple[Service, ...] = (accounts_service, registration_service, metering_service, ordering_service,
                                 ticketing_service, notifier_service)

# Examples run against real services, so the shrinker's replays cost real time: the default profile keeps the first
# failure as found. Too-slow and filtered-data health checks judge pure functions, not a broker round trip.
_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
hypothesis_settings.register_profile(
    "default", max_examples=400, deadline=None, derandomize=True, database=None, print_blob=True,
    phases=[Phase.explicit, Phase.generate], suppress_health_check=_SLOW_IS_FINE)
hypothesis_settings.register_profile(
    "deep", max_examples=2000, deadline=None, print_blob=True, suppress_health_check=_SLOW_IS_FINE)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# The module's vhost, databases and SMTP server (tests/conftest.py's `module_*`) under the per-test fixtures' names, so
# the tests and the services here share them.
@pytest.fixture(scope="module")
def amqp_url(module_amqp_url: str) -> str:
    return module_amqp_url


@pytest.fixture(scope="module")
def database_prefix(module_database_prefix: str) -> str:
    return module_database_prefix


@pytest.fixture(scope="module")
def mailbox(module_mailbox: Mailbox) -> Mailbox:
    return module_mailbox


@pytest.fixture(scope="module")
def settings(amqp_url: str, mongo_url: str, database_prefix: str, mailbox: Mailbox) -> MeteringSettings:
    # metering's settings, which every other service reads as its own: its scheduler runs once at start, not during
    # the tests, so no reminder run changes the databases between two snapshots.
    return MeteringSettings(amqp_url=amqp_url, mongodb_url=mongo_url, database_prefix=database_prefix,
                            smtp_host=mailbox.host, smtp_port=mailbox.port, event_retry_base_delay=0.05,
                            graceful_timeout=5, outbox_poll_seconds=0.5, metering_scheduler_seconds=3600.0,
                            queue_type=TEST_QUEUE_TYPE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(settings: MeteringSettings) -> AsyncIterator[dict[str, ServiceInstance]]:
    """Every service, by name."""
    async with AsyncExitStack() as services:
        yield {service.name: await services.enter_async_context(running(service, settings)) for service in SERVICES}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def portal(amqp_url: str) -> AsyncIterator[PortalClient]:
    async with PortalClient(amqp_url, timeout=20) as client:
        yield client
