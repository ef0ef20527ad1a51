"""registration running in this process, with the seeds' OKI models loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts.client import PortalClient
from deploy.local.demo import OKI_MODELS
from services.registration.app import service as registration_service
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import operator_token
from tests.support import running


@pytest.fixture
async def registration(settings: Settings, portal: PortalClient) -> AsyncIterator[ServiceInstance]:
    async with running(registration_service, settings) as instance:
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS},
                          token=operator_token(settings))
        yield instance
