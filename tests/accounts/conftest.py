"""accounts running in this process, and a tap on the events it publishes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.accounts.app import service as accounts_service
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.support import EventTap, running


@pytest.fixture
async def accounts(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(accounts_service, settings) as instance:
        yield instance


@pytest.fixture
async def tap(amqp_url: str) -> AsyncIterator[EventTap]:
    async with EventTap(amqp_url, "accounts.#") as events:
        yield events
