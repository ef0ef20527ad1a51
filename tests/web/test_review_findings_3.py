"""Defects found in the third review of the web pages (issue 15), each proven here before it was fixed, and kept so
it stays fixed: the pages run over the ASGI app with a stand-in portal that answers the commands as the services
would (one test drives Debian's Chromium over the same app, for a layout only a browser can measure)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Route
from pydantic import ValidationError

from contracts import ordering, registration
from contracts.client import PortalError
from gateway.cookies import csrf_token
from gateway.settings import GatewaySettings, contrast_with_white
from tests.web.conftest import PHONE
from tests.web.offline import SESSION, StandInPortal, offline_client

LOCATION = registration.Location(name="Kanzlei Weber", street="Hauptstraße 1", postal_code="01067", city="Dresden",
                                 country="DE")


def device(number: int) -> dict[str, Any]:
    return registration.Device(device_id=f"d-{number}", serial_number=f"AK5A{number:06d}", model="ES5431dn",
                               counters=["mono"], location=LOCATION).model_dump(mode="json")


PROFILE = {"user_id": "u-1", "email": "anna@example.com", "username": "anna", "role": "customer", "status": "active",
           "customer_number": "100234", "title": None, "first_name": "Anna", "last_name": "Weber", "phone": None,
           "language": "en", "communication": {"email": True, "sms": False, "phone": False, "post": False},
           "terms_open": False, "terms_version": "1", "privacy_version": "1", "current_terms_version": "1",
           "current_privacy_version": "1"}
# As the demo catalogue names an ES5431dn's consumables: long article descriptions without a space to break at.
CONSUMABLES = [{"article_number": f"4497351{index}", "description": f"TONER-{colour}-ES5431/3452/5462-6K",
                "kind": "toner", "color": colour, "included_in_contract": True}
               for index, colour in enumerate(("K", "C", "M", "Y"))] + [
    {"article_number": "44472202", "description": "BELT-UNIT-C310-331/510-531/MC352-562", "kind": "belt",
     "color": None, "included_in_contract": True}]
FLEET = 250  # devices of one customer: more than a page of the services' lists (200 at most)


class Portal(StandInPortal):
    """Answers the commands the pages under review send; every other id is another customer's (not_found)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, command: str, payload: Any = None, **_: Any) -> dict[str, Any]:
        payload = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else dict(payload or {})
        self.calls.append((command, payload))
        if command == "accounts.login":  # as accounts answers: 12 hours with "stay signed in", else 1 hour
            hours = 12 if payload.get("remember_me") else 1
            return {"access_token": SESSION, "expires_at": (datetime.now(UTC) + timedelta(hours=hours)).isoformat(),
                    "user": {"language": "en", "role": "customer"}}
        if command == "accounts.get_profile":
            return PROFILE
        if command == "accounts.update_profile":
            return {**PROFILE, **{key: value for key, value in payload.items() if value is not None}}
        if command == "registration.list_devices":  # the services' Page: at most page_size items, and the total
            size, page = int(payload.get("page_size", 50)), int(payload.get("page", 1))
            numbers = range((page - 1) * size + 1, min(page * size, FLEET) + 1)
            return {"items": [device(number) for number in numbers], "total": FLEET, "page": page,
                    "page_size": size}
        if command == "registration.get_device" and payload.get("device_id") == "d-1":
            return device(1)
        if command == "registration.rename_device":  # checked against the contract, as the service's runtime does
            try:
                registration.RenameDevice.model_validate(payload)
            except ValidationError as error:
                raise PortalError("validation_failed", "", {".".join(map(str, problem["loc"])): problem["type"]
                                                            for problem in error.errors()}) from error
            return {}
        if command == "ticketing.get_ticket" and payload.get("ticket_number") == "7/1":
            return {"ticket_number": "7/1"}  # the quick search only asks whether the user has it
        if command == "metering.usage":  # one device, a reading each month
            return {"items": [{"device_id": "d-1", "serial_number": "AK5A000001", "model": "ES5431dn",
                               "friendly_name": None, "period_end": f"2026-{month:02d}-28",
                               "printed_pages": {"mono": 900 + month, "color": 200}, "total": 1100 + month}
                              for month in range(1, 12)]}
        if command in ("metering.list_due", "ticketing.list_tickets", "ordering.list_orders",
                       "registration.list_bulk_uploads"):
            return {"items": [], "total": 0, "page": 1, "page_size": payload.get("page_size", 50)}
        if command == "accounts.list_contacts":
            return {"items": [{"contact_id": "c-1", "name": "Anna Weber", "email": "anna@example.com",
                               "phone": None}]}
        if command == "ordering.list_orderable" and payload.get("device_id") == "d-1":
            orderable = ordering.Orderable(device_id="d-1", serial_number="AK5A000001", model="ES5431dn",
                                           location=LOCATION, covered=True,
                                           delivery_defaults=ordering.DeliveryDefaults(),
                                           items=[ordering.Consumable(**item) for item in CONSUMABLES])
            return orderable.model_dump(mode="json")
        raise PortalError("not_found")



@pytest.fixture
def portal() -> Portal:
    return Portal()


@pytest.fixture
async def pages(portal: Portal) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(portal, signed_in=True) as client:
        yield client


async def test_review3_the_profile_page_opens(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/profile")
    assert response.status_code == 200, response.status_code
    assert 'id="by_email"' in response.text  # the communication preferences


async def test_review3_a_refused_profile_form_says_why_beside_the_field(pages: httpx.AsyncClient) -> None:
    response = await pages.post("/profile", data={"csrf": csrf_token(SESSION), "first_name": "A" * 101,
                                                  "language": "en", "by_email": "on"})
    assert response.status_code == 400, response.status_code
    assert 'id="first_name-error"' in response.text


async def test_review3_the_dashboard_leads_to_registering_and_to_claiming_a_device(
        pages: httpx.AsyncClient) -> None:
    dashboard = await pages.get("/")
    assert dashboard.status_code == 200
    assert 'href="/devices/new"' in dashboard.text
    assert 'href="/devices/claim"' in dashboard.text


async def test_review3_every_device_of_a_large_fleet_can_be_reached_from_the_dashboard(
        pages: httpx.AsyncClient) -> None:
    dashboard = await pages.get("/")
    assert dashboard.status_code == 200
    listed = set(re.findall(r'href="/devices/(d-\d+)"', dashboard.text))
    pager = re.findall(r'href="(/?\?[^"]*page=2[^"]*)"', dashboard.text)
    assert len(listed) == FLEET or pager, f"{len(listed)} of {FLEET} devices listed and no link to the next page"


async def test_review3_a_dashboard_page_past_the_last_shows_the_last_devices(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/", params={"page": "99"})
    assert response.status_code == 200
    assert 'href="/devices/d-250"' in response.text  # not "You have no devices in the portal yet."


def test_review3_the_focus_outline_stands_out_against_the_white_page() -> None:
    css = (Path(__file__).parents[2] / "gateway" / "web" / "static" / "portal.css").read_text()
    focus = re.search(r"--focus:\s*(#[0-9a-fA-F]{6})", css)
    assert focus is not None
    assert contrast_with_white(focus.group(1)) >= 3.0, f"{focus.group(1)}: {contrast_with_white(focus.group(1)):.2f}:1"


def test_review3_a_brand_colour_the_portal_accepts_keeps_its_links_readable_in_a_notice() -> None:
    def luminance(colour: str) -> float:
        return 1.05 / contrast_with_white(colour) - 0.05  # contrast_with_white is 1.05 / (L + 0.05)

    brand = GatewaySettings(brand_colour="#767676").brand_colour  # 4.54:1 against white: accepted
    css = (Path(__file__).parents[2] / "gateway" / "web" / "static" / "portal.css").read_text()
    notice = re.search(r"\.notice \{[^}]*background: (#[0-9a-fA-F]{6})", css)
    assert notice is not None
    ratio = (luminance(notice.group(1)) + 0.05) / (luminance(brand) + 0.05)
    assert ratio >= 4.5, f"{brand} on {notice.group(1)}: {ratio:.2f}:1"


async def test_review3_a_wrong_flag_in_the_uploads_address_answers_a_page(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/devices/uploads?queued=yes please")
    assert response.headers["content-type"].startswith("text/html"), (response.status_code, response.text[:200])


async def test_review3_an_incomplete_other_service_address_is_marked_beside_its_fields(
        pages: httpx.AsyncClient) -> None:
    response = await pages.post("/tickets/new", data={
        "csrf": csrf_token(SESSION), "device": "d-1", "category": "malfunction", "contact": "c-1",
        "description": "Paper jam in tray 2, the display shows E-371.", "other_city": "Oslo"})
    assert response.status_code == 400
    assert 'id="description-error"' not in response.text  # the description is fine
    assert 'id="other_street-error"' in response.text or 'id="other_postal_code-error"' in response.text


async def test_review3_the_sign_up_join_hint_is_tied_to_its_fields(pages: httpx.AsyncClient) -> None:
    pages.cookies.clear()
    page = (await pages.get("/sign-up")).text
    for name in ("customer_number", "serial_number"):
        field = re.search(rf'<input id="{name}"[^>]*>', page)
        assert field is not None
        assert "join-hint" in field.group(0), field.group(0)


async def test_review3_without_stay_signed_in_the_sign_in_ends_with_the_browser(pages: httpx.AsyncClient) -> None:
    pages.cookies.clear()
    await pages.get("/sign-in")
    response = await pages.post("/sign-in", data={"csrf": pages.cookies["portal_form"], "login": "anna",
                                                  "password": "correct horse battery"})
    assert response.status_code == 303
    session = next(header for header in response.headers.get_list("set-cookie")
                   if header.startswith("portal_session="))
    assert "max-age" not in session.lower() and "expires" not in session.lower(), session


async def test_review3_a_devices_name_can_be_removed(pages: httpx.AsyncClient, portal: Portal) -> None:
    response = await pages.post("/devices/d-1/name", data={"csrf": csrf_token(SESSION), "friendly_name": ""})
    assert response.status_code == 303, re.findall(r'class="field-error"[^>]*>([^<]*)', response.text)
    assert ("registration.rename_device", {"device_id": "d-1", "friendly_name": None}) in portal.calls


async def test_review3_the_quick_search_for_a_number_the_user_has_not_says_so_on_the_dashboard(
        pages: httpx.AsyncClient) -> None:
    found = await pages.get("/", params={"q": "7/1"})
    assert (found.status_code, found.headers.get("location")) == (303, "/tickets/7/1")
    for number in ("8/1", "or-2026-000404"):
        response = await pages.get("/", params={"q": number}, headers={"accept-language": "nb"})
        assert response.status_code == 200, (number, response.status_code)
        assert f"Du har ingen bestilling eller serviceforespørsel med nummeret «{number}»." in response.text


async def test_review3_the_new_contacts_name_and_address_say_when_they_are_required(pages: httpx.AsyncClient) -> None:
    page = (await pages.get("/orders/new", params={"device": "d-1"}, headers={"accept-language": "de"})).text
    for name in ("new_name", "new_email"):
        label = re.search(rf'<label for="{name}">(.*?)</label>', page, re.S)
        assert label is not None, name
        assert "(optional)" not in label.group(1) and "Pflichtangabe bei einer anderen Person" in label.group(1)


async def test_review3_an_order_quantity_in_other_digits_is_refused_beside_its_field(
        pages: httpx.AsyncClient, portal: Portal) -> None:
    response = await pages.post("/orders/new", data={"csrf": csrf_token(SESSION), "device": "d-1", "contact": "c-1",
                                                     "qty-d-1-44973510": "\u0663"})  # Arabic-Indic three
    assert response.status_code == 400, response.status_code
    error = re.search(r'id="qty-d-1-44973510-error">([^<]*)<', response.text)
    assert error is not None and error.group(1) == "Please enter a whole number."
    assert not [command for command, _ in portal.calls if command == "ordering.place_order"]


@asynccontextmanager
async def on_a_phone(browser: Browser) -> AsyncIterator[Page]:
    """A phone's browser whose requests the ASGI app (with the stand-in portal) answers: no server, no services."""
    async with offline_client(Portal(), signed_in=True) as client:

        async def from_the_app(route: Route) -> None:
            request = route.request
            answer = await client.request(request.method, request.url, content=request.post_data_buffer,
                                          headers={"accept-language": "de"})
            await route.fulfill(status=answer.status_code, body=answer.content,
                                headers={key: value for key, value in answer.headers.items()
                                         if key not in ("content-length", "content-encoding")})

        context = await browser.new_context(locale="de-DE", viewport=PHONE)
        try:
            await context.route("http://portal.test/**", from_the_app)
            yield await context.new_page()
        finally:
            await context.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_review3_the_order_form_fits_a_phone(browser: Browser) -> None:
    async with on_a_phone(browser) as page:
        await page.goto("http://portal.test/orders/new?device=d-1")
        assert await page.locator("#qty-d-1-44973510").count() == 1  # the order form, not an error page
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width}px wide on a {PHONE['width']}px screen"


@pytest.mark.asyncio(loop_scope="module")
async def test_review3_the_usage_charts_words_are_readable_on_a_phone(browser: Browser) -> None:
    async with on_a_phone(browser) as page:
        await page.goto("http://portal.test/usage?start=2026-01-01&end=2026-12-31")
        texts = page.locator("svg.chart text")
        assert await texts.count() > 0  # the chart, not an error page
        heights = [box["height"] for box in [await texts.nth(index).bounding_box()
                                             for index in range(await texts.count())] if box]
        assert min(heights) >= 10, f"the chart's smallest text is {min(heights):.1f} px high on a phone"
