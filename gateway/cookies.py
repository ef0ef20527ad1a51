"""The session's cookies, shared by the API and the pages: one sign-in serves both."""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from contracts.accounts import Logout
from contracts.client import NotDelivered, PortalClient, PortalError
from gateway.settings import GatewaySettings

log = logging.getLogger("gateway")

SESSION_COOKIE = "portal_session"
CSRF_COOKIE = "portal_csrf"
FORM_COOKIE = "portal_form"  # the pages' form token before sign-in (double submit)


def cookie_name(name: str, settings: GatewaySettings) -> str:
    """In production with the `__Host-` prefix: a browser takes such a cookie only from this very host over HTTPS,
    for path `/`, so a sibling subdomain or a plain-http answer cannot plant a session or a form token (login CSRF)."""
    return f"__Host-{name}" if settings.secure_cookies else name


def session_of(request: Request, settings: GatewaySettings) -> str | None:
    return request.cookies.get(cookie_name(SESSION_COOKIE, settings)) or None


def csrf_token(session: str) -> str:
    """The token a cookie-authenticated write repeats: a hash of the session (no shared secret among replicas),
    which tells nothing of the HttpOnly session cookie to the page's script that reads it."""
    digest = hashlib.sha256(b"portal-csrf:" + session.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def set_session_cookies(response: Response, data: dict[str, Any], settings: GatewaySettings, *,
                        stay_signed_in: bool) -> None:
    """Without "stay signed in" the cookies last as long as the browser (no Max-Age): closing it signs out, on a
    shared computer too; with it, as long as the session (12 hours)."""
    common: dict[str, Any] = {"path": "/", "secure": settings.secure_cookies, "samesite": "lax"}
    if stay_signed_in:
        expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        common["max_age"] = max(0, int((expires - datetime.now(UTC)).total_seconds()))
    session = str(data["access_token"])
    response.set_cookie(cookie_name(SESSION_COOKIE, settings), session, httponly=True, **common)
    # Readable by the page's script, which repeats it in X-CSRF-Token.
    response.set_cookie(cookie_name(CSRF_COOKIE, settings), csrf_token(session), httponly=False, **common)


async def end_replaced_session(portal: PortalClient, request: Request, session: str,
                               settings: GatewaySettings) -> None:
    """A sign-in from a browser that holds another session's cookie replaces that cookie: the older session is
    signed out too, rather than left valid, unseen, until it expires (a shared computer, a second account)."""
    replaced = session_of(request, settings)
    if not replaced or replaced == session:
        return
    try:
        await portal.call(Logout.routing_key, {}, token=replaced, timeout=settings.gateway_command_timeout)
    except PortalError:
        pass  # expired or signed out before: nothing to end
    except (NotDelivered, TimeoutError):
        log.warning("the session a sign-in replaced was not signed out: accounts did not answer")


def clear_session_cookies(response: Response, settings: GatewaySettings) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(cookie_name(name, settings), path="/", secure=settings.secure_cookies, samesite="lax",
                               httponly=name == SESSION_COOKIE)
