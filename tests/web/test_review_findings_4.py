"""Defects found in the review of the change of 2026-12-04 (dates and numbers per language, two tabs' forms,
Retry-After, the back office's loads, list_models, gateway metrics, browser-session cookies, dashboard paging), each
proven here before it was fixed and kept so it stays fixed: the pages and the API run over the ASGI app with a
stand-in portal that answers the commands as the services would (their contracts' models check what it is sent)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from contracts import accounts, registration, ticketing
from contracts.client import PortalError
from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.metering.handlers import latest_today as meterings_today  # what a reading `in the future` is measured by
from tests.web.offline import SESSION, StandInPortal, offline_client

DEVICE = registration.Device(device_id="d-1", serial_number="S1", model="C650",
                             counters=["mono"]).model_dump(mode="json")

MODELS = 250  # a vendor's catalogue: more names than one page of a list (200 at most)


def due_device(number: int) -> dict[str, Any]:
    return {"device_id": f"d-{number}", "serial_number": f"S{number}", "model": "C650", "friendly_name": None,
            "location": {}, "period_end": "2026-09-30", "window_closes": "2026-10-15", "counters": []}


def checked(model: type[Any], payload: dict[str, Any]) -> None:
    """As a service's runtime does: a payload its contract refuses is `validation_failed`."""
    try:
        model.model_validate(payload)
    except ValidationError as error:
        raise PortalError("validation_failed", "", {".".join(map(str, problem["loc"])): problem["type"]
                                                    for problem in error.errors()}) from error


class Portal(StandInPortal):
    """A customer whose fleet has `due` devices due for a reading (metering pages them as its Page does)."""

    def __init__(self, due: int = 0) -> None:
        self.due = due
        self.calls: list[str] = []

    async def call(self, command: str, payload: Any = None, **_: Any) -> dict[str, Any]:
        payload = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else dict(payload or {})
        self.calls.append(command)
        size, page = int(payload.get("page_size", 50)), int(payload.get("page", 1))
        if command == "metering.list_due":
            numbers = range((page - 1) * size + 1, min(page * size, self.due) + 1)
            return {"items": [due_device(number) for number in numbers], "total": self.due, "page": page,
                    "page_size": size}
        if command == "accounts.get_profile":
            return {"role": "customer", "terms_open": False}
        if command == "accounts.login":  # as accounts answers: 12 hours with "stay signed in", else 1 hour
            checked(accounts.Login, payload)
            hours = 12 if accounts.Login.model_validate(payload).remember_me else 1
            return {"access_token": SESSION, "expires_at": (datetime.now(UTC) + timedelta(hours=hours)).isoformat(),
                    "user": {"language": "en", "role": "customer"}}
        if command == "registration.list_devices":
            return {"items": [DEVICE], "total": 1, "page": 1, "page_size": size}
        if command == "registration.get_device":
            return DEVICE
        if command == "metering.history":
            return {"device_id": "d-1", "serial_number": "S1", "readings": [], "periods": []}
        if command in ("ticketing.list_tickets", "ordering.list_orders"):
            return {"items": [], "total": 0, "page": page, "page_size": size}
        if command == "registration.list_models":  # a catalogue of MODELS names, by name
            names = [f"M{number:03d}" for number in range(1, MODELS + 1)][(page - 1) * size:page * size]
            return {"items": [{"model": name, "has_serial_hint": False} for name in names], "total": MODELS,
                    "page": page, "page_size": size}
        if command == "ticketing.get_ticket":
            checked(ticketing.GetTicket, payload)
        if command == "ticketing.add_note":  # as ticketing answers the 41st note of a ticket
            checked(ticketing.AddNote, payload)
            raise PortalError("rate_limited", "Too many requests.", {"text": "at most 40 notes per ticket"})
        raise PortalError("not_found")

    async def send(self, command: str, body: bytes, **options: Any) -> dict[str, Any]:
        try:
            return {"ok": True, "data": await self.call(command, json.loads(body), **options)}
        except PortalError as error:
            return {"ok": False, "error": {"code": error.code, "message": error.message, "fields": error.fields}}



@pytest.fixture
def portal() -> Portal:
    return Portal()


@pytest.fixture
async def client(portal: Portal) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(portal, signed_in=True) as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/devices/d-1"])
async def test_review4_a_page_asks_a_bounded_number_of_commands_however_many_devices_are_due(
        client: httpx.AsyncClient, portal: Portal, path: str) -> None:
    portal.due = 20_000  # a large customer's fleet in its reading window
    response = await client.get(path)
    assert response.status_code == 200
    assert portal.calls.count("metering.list_due") <= 2, portal.calls.count("metering.list_due")


async def test_review4_a_refusal_no_wait_lifts_does_not_ask_to_retry_later(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/tickets/2026/1/notes", json={"text": "one more"},
                                 headers={"authorization": f"Bearer {SESSION}"})
    assert response.status_code == 429
    assert "retry-after" not in response.headers, response.headers["retry-after"]


async def test_review4_the_dashboards_count_of_due_devices_is_written_as_the_language_does(
        client: httpx.AsyncClient, portal: Portal) -> None:
    portal.due = 1234
    page = (await client.get("/?lang=en")).text
    assert "1,234 devices need their meter readings." in page


async def test_review4_a_page_of_due_readings_past_the_last_does_not_say_none_is_due(
        client: httpx.AsyncClient, portal: Portal) -> None:
    portal.due = 3
    page = (await client.get("/readings/due?page=5")).text
    assert "No meter reading is due right now." not in page


async def test_review4_a_long_ticket_like_number_in_the_quick_search_keeps_the_dashboard(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/?q=" + "1" * 40 + "/1")
    assert response.status_code == 200, response.status_code
    assert "You have no order or service request numbered" in response.text


@pytest.mark.parametrize("remember_me", [1, "true"])
async def test_review4_an_api_sign_in_that_stays_signed_in_gets_a_cookie_that_lasts(
        client: httpx.AsyncClient, remember_me: object) -> None:
    client.cookies.clear()
    response = await client.post("/api/v1/session", json={"login": "anna", "password": "correct horse 1",
                                                          "remember_me": remember_me})
    assert response.status_code == 200, response.text
    session_cookie = next(value for value in response.headers.get_list("set-cookie")
                          if value.startswith("portal_session="))
    assert "Max-Age=" in session_cookie, session_cookie


async def test_review4_a_static_file_is_counted_under_its_mount_not_as_unrouted(portal: Portal) -> None:
    app = create_app(GatewaySettings(amqp_url="amqp://guest:guest@127.0.0.1:1/"), portal)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
        assert (await client.get("/static/portal.css")).status_code == 200
    samples = generate_latest(app.state.metrics.registry).decode()
    assert 'portal_http_requests_total{method="GET",route="unrouted",status="200"}' not in samples


async def test_review4_the_register_page_offers_every_model_of_the_catalogue(client: httpx.AsyncClient) -> None:
    page = (await client.get("/devices/new")).text
    assert '<option value="M001">' in page
    assert f'<option value="M{MODELS:03d}">' in page


def test_review4_the_servers_own_zone_is_no_portal_time_zone() -> None:
    if "localtime" not in available_timezones():
        pytest.skip("this host's zoneinfo has no `localtime`")
    with pytest.raises(ValidationError, match="time zone"):
        GatewaySettings(time_zone="localtime")


async def test_review4_the_reading_forms_default_date_is_one_metering_takes(portal: Portal) -> None:
    if datetime.now(UTC).hour < 10:  # before 10:00 UTC no zone (UTC+14 at most) is a day ahead yet
        pytest.skip("no zone is a day ahead of UTC at this hour")
    app = create_app(GatewaySettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", time_zone="Pacific/Kiritimati"),
                     portal)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
        client.cookies.set("portal_session", SESSION)
        page = (await client.get("/devices/d-1")).text
    offered = re.search(r'id="reading_date"[^>]*value="([^"]+)"', page)
    assert offered is not None
    assert date.fromisoformat(offered.group(1)) <= meterings_today(), offered.group(1)
