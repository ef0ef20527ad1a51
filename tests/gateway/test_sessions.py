"""Sign-in by cookie or bearer token, CSRF for cookie-authenticated writes, sign-out, Idempotency-Key."""

from __future__ import annotations

import re
from typing import Any

import httpx

from contracts.client import PortalClient
from gateway.cookies import CSRF_COOKIE, SESSION_COOKIE
from gateway.settings import GatewaySettings
from services.runtime.service import ServiceInstance
from tests.accounts.flows import active_user
from tests.gateway.conftest import gateway
from tests.support import EventTap


async def signed_in(http: httpx.AsyncClient, portal: PortalClient, tap: EventTap) -> dict[str, Any]:
    """An active user signed in over HTTP: the reply of `POST /api/v1/session`, the client holding its cookies."""
    person, _ = await active_user(portal, tap)
    response = await http.post("/api/v1/session", json={"login": person["email"], "password": person["password"]})
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    return session


def set_cookie(response: httpx.Response, name: str) -> str:
    return next(header for header in response.headers.get_list("set-cookie") if header.startswith(f"{name}="))


async def test_sign_in_sets_an_httponly_lax_session_cookie_and_a_readable_csrf_cookie(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    person, _ = await active_user(portal, tap)
    response = await http.post("/api/v1/session", json={"login": person["email"], "password": person["password"]})

    session = set_cookie(response, SESSION_COOKIE).lower()
    csrf = set_cookie(response, CSRF_COOKIE).lower()
    assert f"{SESSION_COOKIE}={response.json()['access_token']}".lower() in session
    assert "httponly" in session and "samesite=lax" in session and "path=/" in session
    assert "httponly" not in csrf and "samesite=lax" in csrf
    assert "secure" not in session  # development serves plain http
    profile = await http.get("/api/v1/me")  # the cookie alone signs a read in
    assert profile.status_code == 200
    assert profile.json()["email"] == person["email"]
    assert "max-age" not in session and "expires" not in session  # without remember_me: the browser's session

    remembered = await http.post("/api/v1/session", json={"login": person["email"], "password": person["password"],
                                                         "remember_me": True})
    max_age = re.search(r"max-age=(\d+)", set_cookie(remembered, SESSION_COOKIE).lower())
    assert max_age is not None and 11 * 3600 < int(max_age.group(1)) <= 12 * 3600  # "stay signed in": 12 hours


async def test_cookies_are_secure_in_production(gateway_settings: GatewaySettings, portal: PortalClient,
                                                tap: EventTap, accounts: ServiceInstance) -> None:
    person, _ = await active_user(portal, tap)
    async with gateway(gateway_settings.model_copy(update={"env": "production"})) as http:
        response = await http.post("/api/v1/session", json={"login": person["email"],
                                                             "password": person["password"]})

    # Secure, and named `__Host-`: only this host over HTTPS can set them, no sibling subdomain can plant a session.
    assert "secure" in set_cookie(response, f"__Host-{SESSION_COOKIE}").lower()
    assert "secure" in set_cookie(response, f"__Host-{CSRF_COOKIE}").lower()


async def test_a_cookie_authenticated_write_needs_the_csrf_token(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    await signed_in(http, portal, tap)
    contact = {"name": "Thomas Lienert", "email": "t.lienert@example.com"}

    missing = await http.post("/api/v1/contacts", json=contact)
    wrong = await http.post("/api/v1/contacts", json=contact, headers={"X-CSRF-Token": "guessed"})
    right = await http.post("/api/v1/contacts", json=contact, headers={"X-CSRF-Token": http.cookies[CSRF_COOKIE]})

    for refused in (missing, wrong):
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden"
        assert "X-CSRF-Token" in refused.json()["fields"]
    assert right.status_code == 201
    contacts = (await http.get("/api/v1/contacts")).json()
    assert [item["name"] for item in contacts["items"]] == ["Thomas Lienert"]  # the refused writes changed nothing


async def test_a_bearer_token_needs_no_csrf_token(http: httpx.AsyncClient, portal: PortalClient, tap: EventTap,
                                                  accounts: ServiceInstance) -> None:
    session = await signed_in(http, portal, tap)
    http.cookies.clear()

    response = await http.post("/api/v1/contacts", json={"name": "Kari", "email": "kari@example.com"},
                               headers={"Authorization": f"Bearer {session['access_token']}"})

    assert response.status_code == 201


async def test_sign_out_clears_the_cookies_and_revokes_the_session(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    session = await signed_in(http, portal, tap)

    response = await http.delete("/api/v1/session", headers={"X-CSRF-Token": http.cookies[CSRF_COOKIE]})

    assert response.status_code == 200
    assert SESSION_COOKIE not in http.cookies and CSRF_COOKIE not in http.cookies
    cleared = set_cookie(response, SESSION_COOKIE).lower()
    assert "max-age=0" in cleared or "expires=thu, 01 jan 1970" in cleared
    revoked = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert revoked.status_code == 401


async def test_signing_in_again_from_the_same_browser_signs_the_replaced_session_out(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance,
        gateway_settings: GatewaySettings) -> None:
    """The cookie of the first session is replaced by the second's: the first session is revoked, not left valid
    and unseen until it expires (a second account on a shared computer). A sign-in from another browser, without
    that cookie, leaves the others alone."""
    first = await signed_in(http, portal, tap)
    second = await signed_in(http, portal, tap)
    async with gateway(gateway_settings) as elsewhere:
        apart = await signed_in(elsewhere, portal, tap)

    assert http.cookies[SESSION_COOKIE] == second["access_token"]
    for session, status in ((first, 401), (second, 200), (apart, 200)):
        me = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {session['access_token']}"})
        assert me.status_code == status, (session, me.text)


async def test_a_replayed_idempotency_key_is_applied_once_and_answered_the_same(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    token = (await signed_in(http, portal, tap))["access_token"]
    http.cookies.clear()
    bearer = {"Authorization": f"Bearer {token}"}
    contact = {"name": "Kari Nordmann", "email": "kari@example.com"}

    first = await http.post("/api/v1/contacts", json=contact, headers={**bearer, "Idempotency-Key": "add-kari-1"})
    replayed = await http.post("/api/v1/contacts", json=contact, headers={**bearer, "Idempotency-Key": "add-kari-1"})
    other_body = await http.post("/api/v1/contacts", json={**contact, "name": "Ola"},
                                 headers={**bearer, "Idempotency-Key": "add-kari-1"})
    without_key = await http.post("/api/v1/contacts", json=contact, headers=bearer)

    assert first.status_code == replayed.status_code == without_key.status_code == 201
    assert replayed.json() == first.json()
    assert other_body.status_code == 409 and other_body.json()["code"] == "conflict"
    contacts = (await http.get("/api/v1/contacts", headers=bearer)).json()["items"]
    assert [item["name"] for item in contacts] == ["Kari Nordmann", "Kari Nordmann"]  # the first and without_key


async def test_an_idempotency_key_of_invisible_characters_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/contacts", json={}, headers={"Idempotency-Key": "two words",
                                                                      "Authorization": "Bearer x"})

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["fields"]


async def test_a_session_begun_on_one_replica_works_on_another(
        gateway_settings: GatewaySettings, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    async with gateway(gateway_settings) as first, gateway(gateway_settings) as second:
        await signed_in(first, portal, tap)
        second.cookies.update(first.cookies)  # the load balancer sends the next request elsewhere

        added = await second.post("/api/v1/contacts", json={"name": "Kari", "email": "kari@example.com"},
                                  headers={"X-CSRF-Token": second.cookies[CSRF_COOKIE]})
        seen = await first.get("/api/v1/contacts")

    assert added.status_code == 201  # nothing of the session lives in a replica
    assert [item["name"] for item in seen.json()["items"]] == ["Kari"]
