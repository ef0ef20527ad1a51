"""Defects an adversarial review of the web layer found, each proven here and fixed; without services: the pages
run over the ASGI app with a portal that answers a few commands as the services would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from contracts.client import PortalError
from gateway.cookies import csrf_token
from tests.web.offline import SESSION, StandInPortal, offline_client


class Portal(StandInPortal):
    """Answers the few commands the pages under review send; every other id is another customer's (not_found)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, command: str, payload: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        payload = dict(payload or {})
        self.calls.append((command, payload))
        if command == "accounts.login":
            return {"access_token": SESSION, "expires_at": "2099-01-01T00:00:00Z", "user": {"language": "en"}}
        if command == "metering.submit_bulk":
            return {"accepted": 1, "rejected": []}
        if command in ("registration.list_devices", "metering.list_due", "ticketing.list_tickets",
                       "ordering.list_orders"):  # as the services answer a contract's session too
            return {"items": [], "total": 0, "page": 1, "page_size": 200}
        if command == "accounts.register":  # as accounts does: an address signs up once
            if any(done == command and earlier["email"] == payload["email"] for done, earlier in self.calls[:-1]):
                raise PortalError("email_taken")
            return {"status": "pending_email"}
        if command == "registration.list_bulk_uploads":
            return {"items": [], "total": 0, "page": 1, "page_size": 50}
        if command == "registration.bulk_upload" and not payload["file"]["content_base64"]:  # as registration does
            raise PortalError("validation_failed", "", {"file.content_base64": "empty"})
        if command == "metering.usage":  # one device, monthly periods over five years
            return {"items": [{"device_id": "d-1", "serial_number": "S1", "model": "C650", "friendly_name": None,
                               "period_end": (date(2020, 1, 31) + timedelta(days=30 * month)).isoformat(),
                               "printed_pages": {"black": 10 + month}, "total": 10 + month}
                              for month in range(60)]}
        raise PortalError("not_found")



@pytest.fixture
def portal() -> Portal:
    return Portal()


@pytest.fixture
async def pages(portal: Portal) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(portal) as pages:
        yield pages


async def test_review_the_sign_in_page_sends_the_password_as_typed(pages: httpx.AsyncClient,
                                                                    portal: Portal) -> None:
    await pages.get("/sign-in")
    response = await pages.post("/sign-in", data={"csrf": pages.cookies["portal_form"], "login": "anna@example.com",
                                                  "password": "  correct horse battery  "})
    assert response.status_code == 303
    login = next(payload for command, payload in portal.calls if command == "accounts.login")
    assert login["password"] == "  correct horse battery  "


async def test_review_changing_the_language_keeps_the_mailed_token(pages: httpx.AsyncClient) -> None:
    token = "t" * 32
    page = await pages.get(f"/reset-password?token={token}")
    picker = page.text.split('action="/language"', 1)[1].split("</form>", 1)[0]
    target = re.search(r'name="next" value="([^"]*)"', picker)
    assert target is not None
    response = await pages.post("/language", data={"csrf": pages.cookies["portal_form"], "language": "de",
                                                   "next": target.group(1)})
    assert response.status_code == 303
    assert token in response.headers["location"]
    again = await pages.get(response.headers["location"])
    assert f'name="token" value="{token}"' in again.text


async def test_review_a_file_past_the_body_limit_is_refused_on_the_page(portal: Portal) -> None:
    async with offline_client(portal, gateway_max_body_bytes=2048, signed_in=True) as pages:
        response = await pages.post("/readings/upload", data={"csrf": csrf_token(SESSION)},
                                    files={"file": ("readings.csv", b"x" * 4096, "text/csv")})
    # A page of its own (the form's fields were never read), in the page's language, with the way back to the form.
    assert response.headers["content-type"].startswith("text/html")
    assert response.status_code == 413
    assert 'id="file-error"' in response.text and 'href="/readings/upload"' in response.text
    assert "content-security-policy" in response.headers


async def test_review_a_streamed_upload_past_the_body_limit_is_no_server_error(portal: Portal) -> None:
    token = csrf_token(SESSION)

    async def body() -> AsyncIterator[bytes]:
        yield (f'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n--b\r\n'
               'Content-Disposition: form-data; name="file"; filename="readings.csv"\r\n'
               "Content-Type: text/csv\r\n\r\n").encode()
        for _ in range(10):
            yield b"x" * 1000
        yield b"\r\n--b--\r\n"

    async with offline_client(portal, gateway_max_body_bytes=2048, signed_in=True) as pages:
        response = await pages.post("/readings/upload", content=body(),
                                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and 'id="file-error"' in response.text


async def test_review_a_wrong_usage_date_is_marked_beside_its_field(pages: httpx.AsyncClient) -> None:
    for query, field in (("start=nonsense", "start"), ("start=2025-05-01&end=2025-01-01", "end")):
        page = await pages.get(f"/usage?{query}")
        assert page.status_code == 400
        assert f'id="{field}-error"' in page.text, query
        for anchor in re.findall(r'<li><a href="#([^"]+)"', page.text):
            assert f'id="{anchor}"' in page.text, (query, anchor)


async def test_review_the_usage_chart_draws_five_years_of_months(pages: httpx.AsyncClient) -> None:
    pages.cookies.set("portal_session", SESSION)
    page = await pages.get("/usage?start=2020-01-01&end=2025-12-31")
    assert page.status_code == 200
    # The bars (each with its title; the legend's swatches have none): one per period, the range asked for.
    widths = [float(width) for width in re.findall(r'<rect [^>]*width="([^"]+)"[^>]*><title>', page.text)]
    assert len(widths) == 60
    assert all(width > 0 for width in widths)


async def test_review_a_page_address_with_another_verb_answers_a_page(pages: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/sign-out"), ("GET", "/language"), ("HEAD", "/sign-in")):
        response = await pages.request(method, path)
        assert response.headers["content-type"].startswith("text/html"), (method, path)
        assert "content-security-policy" in response.headers, (method, path)


async def test_review_a_contract_sign_in_is_offered_no_page_it_cannot_open(pages: httpx.AsyncClient) -> None:
    pages.cookies.set("portal_session", SESSION)
    dashboard = await pages.get("/")  # GetProfile answers not_found, as accounts does for a contract's session
    assert dashboard.status_code == 200
    nav = dashboard.text.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    actions = dashboard.text.split('<ul class="links actions">', 1)[1].split("</ul>", 1)[0]
    for target in re.findall(r'href="(/[^"]*)"', nav + actions):
        assert (await pages.get(target)).status_code != 404, target


async def test_review_a_cookie_planted_from_a_sibling_origin_signs_no_one_in(portal: Portal) -> None:
    for cookie, token in (({"portal_form": "planted"}, "planted"),
                          ({"portal_session": "planted-session"}, csrf_token("planted-session"))):
        async with offline_client(portal, env="production") as pages:
            pages.cookies.update(cookie)
            response = await pages.post("/sign-in", data={"csrf": token, "login": "attacker@evil.example",
                                                          "password": "the attacker's password"})
        assert response.status_code == 403, cookie


async def test_review_an_empty_file_is_refused_beside_the_file_field(pages: httpx.AsyncClient) -> None:
    pages.cookies.set("portal_session", SESSION)
    response = await pages.post("/devices/uploads", data={"csrf": csrf_token(SESSION)},
                                files={"file": ("devices.xlsx", b"", "application/vnd.openxmlformats-officedocument"
                                                                     ".spreadsheetml.sheet")})
    assert response.status_code == 400
    assert 'id="file-error"' in response.text
    for anchor in re.findall(r'<li><a href="#([^"]+)"', response.text):
        assert f'id="{anchor}"' in response.text, anchor


async def test_review_reloading_the_page_after_signing_up_shows_no_refusal(pages: httpx.AsyncClient) -> None:
    await pages.get("/sign-up")
    form = {"csrf": pages.cookies["portal_form"], "email": "anna@example.com", "username": "anna",
            "password": "a long enough password", "password_confirm": "a long enough password", "country": "DE",
            "language": "en", "accept_terms": "on", "accept_privacy": "on"}
    first = await pages.post("/sign-up", data=form)
    assert first.status_code < 400
    reload = await pages.post("/sign-up", data=form) if first.status_code < 300 else await pages.get(
        first.headers["location"])  # what the browser repeats on a reload: the POST, or the GET it was sent to
    assert reload.status_code < 400
