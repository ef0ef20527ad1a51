"""Steps that many accounts tests take: sign up, confirm, sign in."""

from __future__ import annotations

from typing import Any

from contracts.client import PortalClient
from tests.builders import sign_up, token_in
from tests.support import EventTap


async def signed_up(portal: PortalClient, tap: EventTap, **overrides: Any) -> tuple[dict[str, Any], str, str]:
    """Signs up; returns the request, the user id and the confirmation token from the mail's event."""
    request = sign_up(**overrides)
    user_id = (await portal.call("accounts.register", request))["user_id"]
    event = await tap.next("accounts.user.registered", lambda body: body["user_id"] == user_id)
    return request, user_id, token_in(event["confirmation_url"])


async def active_user(portal: PortalClient, tap: EventTap, **overrides: Any) -> tuple[dict[str, Any], str]:
    request, user_id, token = await signed_up(portal, tap, **overrides)
    assert (await portal.call("accounts.confirm_email", {"token": token}))["status"] == "active"
    return request, user_id


async def signed_in(portal: PortalClient, tap: EventTap, **overrides: Any) -> tuple[dict[str, Any], str]:
    """An active user and their access token."""
    request, _ = await active_user(portal, tap, **overrides)
    session = await portal.call("accounts.login", {"login": request["email"], "password": request["password"]})
    return request, session["access_token"]
