"""The pages' own rules, without services: the vendor's brand, the security headers, where a form may lead back
to, and forms posted without this browser's token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from contracts.client import data_of
from gateway.app import create_app
from gateway.cookies import csrf_token
from gateway.problems import RATE_LIMIT_WINDOW_SECONDS
from gateway.settings import GatewaySettings, contrast_with_white
from gateway.web.view import local_path

BRAND = {"brand_name": "Druckerhaus Nord", "brand_logo_url": "https://cdn.druckerhaus.example/logo.svg",
         "brand_colour": "#6a1b9a", "brand_contact_email": "service@druckerhaus.example",
         "brand_contact_phone": "+49 40 123456", "brand_terms_url": "https://druckerhaus.example/agb",
         "brand_privacy_url": "https://druckerhaus.example/datenschutz",
         "brand_imprint_url": "https://druckerhaus.example/impressum"}


@pytest.fixture
async def pages() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", **BRAND))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
        yield client


async def test_every_page_carries_the_vendors_name_logo_colour_contact_and_legal_links(
        pages: httpx.AsyncClient) -> None:
    page = (await pages.get("/sign-in", headers={"accept-language": "de"})).text
    for value in ("Druckerhaus Nord", "https://cdn.druckerhaus.example/logo.svg", "service@druckerhaus.example",
                  "+49 40 123456", "https://druckerhaus.example/agb", "https://druckerhaus.example/datenschutz",
                  "https://druckerhaus.example/impressum"):
        assert value in page
    assert "#6a1b9a" in (await pages.get("/brand.css")).text
    # The logo's host is the one outside address the page may load an image from.
    policy = (await pages.get("/sign-in")).headers["content-security-policy"]
    assert "img-src 'self' data: https://cdn.druckerhaus.example;" in policy


def test_a_brand_colour_white_text_is_hard_to_read_on_is_refused() -> None:
    assert contrast_with_white("#0b4f8a") >= 4.5  # the neutral default
    assert round(contrast_with_white("#000000"), 1) == 21.0
    with pytest.raises(ValidationError, match="4.5:1"):
        GatewaySettings(brand_colour="#ffcc00")


async def test_pages_with_a_mailed_token_leak_it_to_no_other_site_and_are_never_cached(
        pages: httpx.AsyncClient) -> None:
    response = await pages.get("/reset-password?token=" + "t" * 32)
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert 'value="' + "t" * 32 + '"' in response.text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil", ""])
def test_a_form_leads_back_only_to_a_page_of_this_portal(target: str) -> None:
    assert local_path(target) == "/"


def test_a_page_of_this_portal_is_a_place_to_lead_back_to() -> None:
    assert local_path("/devices/d-1?tab=readings") == "/devices/d-1?tab=readings"


async def test_a_form_without_this_browsers_token_is_refused_before_anything_is_sent(
        pages: httpx.AsyncClient) -> None:
    # The broker address is closed: a form that got past the token check would answer "not answering" (503).
    for path in ("/sign-in", "/sign-up", "/password", "/username", "/reset-password", "/confirm-email",
                 "/unsubscribe", "/language"):
        response = await pages.post(path, data={"login": "x", "password": "y", "csrf": "forged"})
        assert response.status_code == 403, path
        # Nor is it when the browser says another site's page (or a sibling subdomain's) sent it.
        for origin in ("cross-site", "same-site"):
            response = await pages.post(path, data={"login": "x", "password": "y", "csrf": "forged"},
                                        headers={"sec-fetch-site": origin})
            assert response.status_code == 403, (path, origin)
    await pages.get("/sign-in")
    token = pages.cookies["portal_form"]  # the form token this browser got with its first page
    response = await pages.post("/sign-in", data={"login": "x", "password": "y", "csrf": token})
    assert response.status_code == 503  # past the check: refused by the services' absence, not by the token


async def test_two_pages_opened_before_the_browser_had_a_form_cookie_both_send_their_form(
        pages: httpx.AsyncClient) -> None:
    # Two tabs opened at once: neither request carried a cookie, each page got a token, the cookie kept the second.
    first = await pages.get("/sign-in")
    pages.cookies.clear()
    second = await pages.get("/sign-up")
    first_token, second_token = (re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
                                 for page in (first, second))
    assert first_token != second_token == pages.cookies["portal_form"]
    # The first tab's form, as a browser sends it from this portal's own page: past the check (503: no services).
    response = await pages.post("/sign-in", data={"login": "x", "password": "y", "csrf": first_token},
                                headers={"sec-fetch-site": "same-origin"})
    assert response.status_code == 503
    assert 'id="login"' in response.text and 'value="x"' in response.text  # the form again, as typed
    # The same token from another site's page is still refused.
    response = await pages.post("/sign-in", data={"login": "x", "password": "y", "csrf": first_token},
                                headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403


async def test_a_page_and_a_problem_saying_no_service_answered_say_when_to_try_again(
        pages: httpx.AsyncClient) -> None:
    await pages.get("/sign-in")
    page = await pages.post("/sign-in", data={"login": "x", "password": "y", "csrf": pages.cookies["portal_form"]})
    assert (page.status_code, page.headers["retry-after"]) == (503, "5")
    problem = await pages.post("/api/v1/session", json={"login": "x", "password": "y"})
    assert (problem.status_code, problem.headers["retry-after"]) == (503, "5")
    assert "retry-after" not in (await pages.get("/sign-in")).headers


def test_a_time_zone_no_one_knows_is_refused_at_start() -> None:
    assert GatewaySettings().time_zone == "UTC"
    assert GatewaySettings(time_zone="Europe/Oslo").time_zone == "Europe/Oslo"
    for zone in ("Europe/Olso", "CEST", "../../etc/passwd", ""):
        with pytest.raises(ValidationError, match="time zone"):
            GatewaySettings(time_zone=zone)


async def test_a_page_that_needs_a_sign_in_leads_to_it_and_back(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/profile")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=/profile"


async def test_an_unknown_address_is_a_page_in_the_browsers_language_and_the_api_keeps_its_problems(
        pages: httpx.AsyncClient) -> None:
    page = await pages.get("/no-such-page", headers={"accept-language": "nb"})
    assert page.status_code == 404
    assert "Ikke funnet" in page.text and page.headers["content-type"].startswith("text/html")
    api = await pages.get("/api/v1/no-such-resource")
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"


class LimitedPortal:
    """Answers every command as a service whose limit the caller reached (registration's failed claims)."""

    async def send(self, command: str, body: bytes, **_: Any) -> dict[str, Any]:
        return {"ok": False, "error": {"code": "rate_limited", "message": "Too many attempts.", "fields": {}}}

    async def call(self, command: str, payload: Any = None, **options: Any) -> dict[str, Any]:
        return data_of(await self.send(command, b""))

    async def close(self) -> None:
        pass


async def test_a_page_and_a_problem_refused_by_a_services_limit_say_when_to_try_again() -> None:
    app = create_app(GatewaySettings(), LimitedPortal())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
        claim = {"serial_number": "AB12345678", "postal_code": "10115"}
        problem = await client.post("/api/v1/device-claims", json=claim, headers={"authorization": "Bearer t"})
        assert (problem.status_code, problem.headers["retry-after"]) == (429, str(RATE_LIMIT_WINDOW_SECONDS))
        client.cookies.set("portal_session", "s" * 40)
        page = await client.post("/devices/claim", data={**claim, "csrf": csrf_token("s" * 40)})
        assert (page.status_code, page.headers["retry-after"]) == (429, str(RATE_LIMIT_WINDOW_SECONDS))
        assert "Too many attempts." in page.text and 'value="AB12345678"' in page.text  # the form again, as typed
        page = await client.get("/devices/d-1")  # a page's read refused so: the trouble page, 429 too
        assert (page.status_code, page.headers["retry-after"]) == (429, str(RATE_LIMIT_WINDOW_SECONDS))
