"""registration running in this process, with the seeds' OKI models loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts.client import PortalClient
from services.registration.app import service as registration_service
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import token_for
from tests.support import running

OKI_MODELS = [
    {"model": "C332", "article_number": "46403102", "serial_pattern": "^AK6C[0-9]{6}$", "counters": ["mono", "color"],
     "serial_hint": "On the label inside the front cover."},
    {"model": "ES5431dn", "article_number": "01332801", "serial_pattern": "^AK5A[0-9]{6}$",
     "counters": ["mono", "color"], "serial_hint": "On the rating plate at the back."},
    {"model": "ES5462 MFP", "article_number": "01332901", "serial_pattern": "^AK5M[0-9]{6}$",
     "counters": ["mono", "color", "scan"], "serial_hint": "On the rating plate below the scanner."},
]


@pytest.fixture
async def registration(settings: Settings, portal: PortalClient) -> AsyncIterator[ServiceInstance]:
    async with running(registration_service, settings) as instance:
        operator, _ = token_for(settings, Role.OPERATOR)
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
        yield instance
