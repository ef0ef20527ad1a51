"""The gateway's pages and API over its ASGI app in front of a stand-in portal (no broker, no services): the tests
of the pages' own rules, which need no browser."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.app import create_app
from gateway.settings import GatewaySettings

NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there: a command the stand-in does not take fails
SESSION = "s" * 40  # a signed-in browser's session cookie, as the stand-in portal takes it


class StandInPortal:
    """What the gateway needs of a `PortalClient` besides the commands a test's stand-in answers."""

    async def close(self) -> None:
        pass


def offline_client(portal: Any, *, signed_in: bool = False, **settings: Any) -> httpx.AsyncClient:
    """A client of a gateway whose commands go to `portal`, with the browser's session cookie when `signed_in`; an
    exception that escapes a page is a 500, as uvicorn answers it, not an error in the test."""
    app = create_app(GatewaySettings(amqp_url=NO_BROKER, **settings), portal)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://portal.test")
    if signed_in:
        client.cookies.set("portal_session", SESSION)
    return client
