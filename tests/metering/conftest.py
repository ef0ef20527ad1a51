"""metering running in this process; its read models fed with registration's and accounts' events as they send them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.support import running


@pytest.fixture
def metering_settings(settings: Settings) -> MeteringSettings:
    # The built-in scheduler runs today's schedule once at start (nothing is known then) and not again during a test.
    return MeteringSettings(**dict(settings), metering_scheduler_seconds=3600.0)


@pytest.fixture
async def metering(metering_settings: MeteringSettings) -> AsyncIterator[ServiceInstance]:
    async with running(metering_service, metering_settings) as instance:
        yield instance
