"""The gateway in this process (httpx over ASGI, no socket) in front of services running in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.accounts.conftest import accounts, tap
from tests.registration.conftest import registration

__all__ = ["accounts", "registration", "tap"]  # the services' own fixtures, reused


@pytest.fixture
def gateway_settings(amqp_url: str) -> GatewaySettings:
    return GatewaySettings(amqp_url=amqp_url, gateway_command_timeout=10, gateway_max_body_bytes=64 * 1024)


@asynccontextmanager
async def gateway(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a fresh gateway app; its broker connection is closed afterwards."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client
    finally:
        await app.state.portal.close()


@pytest.fixture
async def http(gateway_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(gateway_settings) as client:
        yield client
