"""ordering running in this process; its read models fed with registration's and accounts' events as they send them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.ordering.app import service as ordering_service
from services.ordering.settings import OrderingSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.support import running


@pytest.fixture
def ordering_settings(settings: Settings) -> OrderingSettings:
    return OrderingSettings(**dict(settings))


@pytest.fixture
async def ordering(ordering_settings: OrderingSettings) -> AsyncIterator[ServiceInstance]:
    async with running(ordering_service, ordering_settings) as instance:
        yield instance


@pytest.fixture
async def second_replica(ordering: ServiceInstance, ordering_settings: OrderingSettings
                         ) -> AsyncIterator[ServiceInstance]:
    """Another copy of ordering on the same queues and database, as `--scale ordering=2` runs it."""
    async with running(ordering_service, ordering_settings) as instance:
        yield instance
