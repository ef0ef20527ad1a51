"""ticketing running in this process, one copy per test module: its broker vhost, its database and the service are
shared by the module's tests (each makes customers and devices of its own), which saves starting them per test.

The fixtures override the per-test `amqp_url`, `database_prefix`, `settings` and `portal` of tests/conftest.py with
module-scoped ones (the vhost and prefix are its `module_*` ones); a module's async tests run in one event loop
(`pytestmark = pytest.mark.asyncio(loop_scope="module")`), the loop its service and client live in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.ticketing.app import service as ticketing_service
from services.ticketing.settings import TicketingSettings
from tests.support import TEST_QUEUE_TYPE, running


@pytest.fixture(scope="module")
def amqp_url(module_amqp_url: str) -> str:
    return module_amqp_url


@pytest.fixture(scope="module")
def database_prefix(module_database_prefix: str) -> str:
    return module_database_prefix


@pytest.fixture(scope="module")
def settings(amqp_url: str, mongo_url: str, database_prefix: str) -> TicketingSettings:
    return TicketingSettings(amqp_url=amqp_url, mongodb_url=mongo_url, database_prefix=database_prefix,
                             event_retry_base_delay=0.05, graceful_timeout=5, outbox_poll_seconds=0.5,
                             queue_type=TEST_QUEUE_TYPE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ticketing(settings: TicketingSettings) -> AsyncIterator[ServiceInstance]:
    async with running(ticketing_service, settings) as instance:
        yield instance


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def portal(amqp_url: str) -> AsyncIterator[PortalClient]:
    async with PortalClient(amqp_url, timeout=10) as client:
        yield client
