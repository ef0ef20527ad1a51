"""Defects found in the second review of the web layer (device, order, office, register pages),
each proven here and fixed; without services: the pages run over the ASGI app with a stand-in portal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contracts import registration
from contracts.client import PortalError
from gateway.cookies import csrf_token
from tests.web.offline import SESSION, StandInPortal, offline_client

DEVICE = registration.Device(
    device_id="d-1", serial_number="S1", model="C650", counters=["mono"],
    location=registration.Location(street="Hauptstr. 1", postal_code="10115", city="Berlin", country="DE"),
    last_readings=[registration.CounterReading(name="mono", date="2026-09-30", value=100)]).model_dump(mode="json")
TOKEN = "t" * 32
EMPTY = {"items": [], "total": 0, "page": 1, "page_size": 50}


class Portal(StandInPortal):
    """Answers the commands the pages under review send; every other id is another customer's (not_found)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []

    async def call(self, command: str, payload: Any = None, **options: Any) -> dict[str, Any]:
        payload = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else dict(payload or {})
        self.calls.append((command, payload, options.get("message_id")))
        if command == "registration.get_device" and payload.get("device_id") == "d-1":
            return DEVICE
        if command == "metering.history":
            return {"device_id": "d-1", "serial_number": "S1", "readings": [], "periods": []}
        if command in ("ticketing.list_tickets", "ordering.list_orders", "metering.list_due",
                       "registration.list_devices", "accounts.operator.list_pending_verifications"):
            return EMPTY
        if command == "metering.submit_reading":  # the id was another caller's, or another body's (the runtime)
            raise PortalError("conflict", "This request was sent already.",
                              {"message_id": "already used for another command or by another caller"})
        if command == "metering.link_devices" and payload.get("token") == TOKEN:
            return {"period_end": "2026-09-30", "window_closes": "2099-12-31", "devices": [
                {"device_id": "d-1", "serial_number": "S1", "model": "C650", "friendly_name": None,
                 "location": registration.Location().model_dump(),
                 "counters": [{"counter": "mono", "last_value": 100, "last_date": "2026-06-30"}]}]}
        if command == "metering.submit_by_link":
            return {"accepted": 1, "rejected": [], "reading_ids": ["d-1:2"]}
        if command == "registration.claim_same_location":  # each message id a request of its own (request_id_for)
            return {"request_id": f"r-{len(self.calls)}"}
        if command in ("ticketing.operator.list_tickets", "ordering.operator.list_orders"):
            return EMPTY  # the row moved on: another operator changed its status meanwhile
        if command == "ticketing.operator.set_status":
            raise PortalError("invalid_transition", "The service request is no longer in that status.",
                              {"status": "not from en_route"})
        raise PortalError("not_found")



@pytest.fixture
def portal() -> Portal:
    return Portal()


@pytest.fixture
async def pages(portal: Portal) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(portal, signed_in=True) as client:
        yield client


def anchors_resolve(html: str) -> list[str]:
    """The error summary's links whose target is not in the page."""
    return [anchor for anchor in re.findall(r'<li><a href="#([^"]+)"', html) if f'id="{anchor}"' not in html]


async def test_review2_an_office_page_with_a_wrong_number_in_its_address_answers_a_page(
        pages: httpx.AsyncClient) -> None:
    for path in ("/office/orders?page=two", "/office/verifications?page=1x", "/office/readings?reminders=x&overdue=1"):
        response = await pages.get(path)
        assert response.headers["content-type"].startswith("text/html"), (path, response.status_code, response.text)


async def test_review2_a_refused_accept_of_a_reading_says_why_beside_the_form(pages: httpx.AsyncClient) -> None:
    response = await pages.post("/devices/d-1/reading", data={
        "csrf": csrf_token(SESSION), "action": "accept", "counter-mono": "150", "reading_date": "2026-11-30",
        "submission": "0b9e4cf2-6a4e-4f47-9d4b-8c1f1d9c8a11"})
    assert response.status_code == 400
    assert "error-summary" in response.text
    assert anchors_resolve(response.text) == []


async def test_review2_a_reminder_form_posted_twice_stores_its_readings_once(pages: httpx.AsyncClient,
                                                                             portal: Portal) -> None:
    pages.cookies.clear()  # the mail's link: no sign-in
    await pages.get(f"/readings?token={TOKEN}")
    form = {"csrf": pages.cookies["portal_form"], "token": TOKEN, "d-1:mono": "150"}
    # A double click (both posts reach the gateway before the redirect), or a reload of the page that came back
    # with another device refused: the browser posts the same form again.
    for _ in range(2):
        assert (await pages.post("/readings", data=form)).status_code == 303
    sent = [message_id for command, _, message_id in portal.calls if command == "metering.submit_by_link"]
    assert len(sent) == 2
    # metering.submit_by_link is Replay.STORED: only the same message id is answered with the first reply; a new one
    # is judged anew, and equal values are not lower than the last: a second reading (seq 2) and its event.
    assert sent[0] is not None and sent[0] == sent[1]


async def test_review2_an_upload_with_an_overlong_csv_field_is_refused_beside_the_file(
        pages: httpx.AsyncClient) -> None:
    content = b"model,article_number,serial_pattern,counters\nC650,01,^A$," + b"m" * 200_000 + b"\n"
    response = await pages.post("/office/uploads", data={"csrf": csrf_token(SESSION), "kind": "models"},
                                files={"file": ("models.csv", content, "text/csv")})
    assert response.status_code == 400, response.status_code
    assert 'id="file-error"' in response.text


async def test_an_upload_with_a_column_its_kind_does_not_have_is_refused_beside_the_file_naming_it(
        pages: httpx.AsyncClient, portal: Portal) -> None:
    content = b"serial_number,model,customer_number,E-Maintenance\nAK5A000001,ES5431dn,C-1,yes\n"
    response = await pages.post("/office/uploads", data={"csrf": csrf_token(SESSION), "kind": "installed_base"},
                                files={"file": ("erp.csv", content, "text/csv")})
    assert response.status_code == 400, response.status_code
    refusal = re.search(r'<p class="field-error" id="file-error">([^<]*)</p>', response.text)
    assert refusal and "does not have: E-Maintenance." in refusal.group(1)
    assert [command for command, _, _ in portal.calls if command.startswith("registration.")] == []


async def test_review2_reloading_the_same_location_request_asks_once(pages: httpx.AsyncClient,
                                                                     portal: Portal) -> None:
    form = {"csrf": csrf_token(SESSION), "device-d-7": "on", "device-d-8": "on"}
    first = await pages.post("/devices/claim/same-location", data=form)
    assert first.status_code < 400
    if first.status_code != 303:  # a page answering the POST: the browser's reload posts the form again
        assert (await pages.post("/devices/claim/same-location", data=form)).status_code < 400
    sent = [message_id for command, _, message_id in portal.calls if command == "registration.claim_same_location"]
    # registration makes each message id a request of its own (request_id_for): two ids, two requests for the operator.
    assert len(sent) == 1 or (sent[0] is not None and len(set(sent)) == 1)


async def test_review2_a_status_change_refused_as_moved_meanwhile_says_so_on_the_page(
        pages: httpx.AsyncClient) -> None:
    response = await pages.post("/office/tickets/1484049/17", data={
        "csrf": csrf_token(SESSION), "from": "to_be_scheduled", "status": "dispatched", "technician": "Kim"})
    assert response.status_code == 400
    assert "The service request is no longer in that status." in response.text
    assert anchors_resolve(response.text) == []


async def test_review2_a_counter_typed_with_a_superscript_digit_is_refused_beside_it(
        pages: httpx.AsyncClient) -> None:
    response = await pages.post("/devices/d-1/reading", data={
        "csrf": csrf_token(SESSION), "action": "preview", "counter-mono": "15²", "reading_date": "2026-11-30"})
    assert response.status_code == 400, response.status_code
    assert 'id="counter-mono-error"' in response.text


async def test_review2_an_orders_or_requests_page_number_with_a_superscript_answers_a_page(
        pages: httpx.AsyncClient) -> None:
    for path in ("/orders?page=1", "/tickets?page=1", "/orders?page=%C2%B2", "/tickets?page=%C2%B2"):
        response = await pages.get(path)
        assert response.status_code == 200, (path, response.status_code)


async def test_review2_a_counter_of_thousands_of_digits_is_refused_beside_it(pages: httpx.AsyncClient) -> None:
    huge = "9" * 5000
    device = await pages.post("/devices/d-1/reading", data={
        "csrf": csrf_token(SESSION), "action": "preview", "counter-mono": huge, "reading_date": "2026-11-30"})
    assert device.status_code == 400, device.status_code
    assert 'id="counter-mono-error"' in device.text
    pages.cookies.clear()  # the mail's link: no sign-in
    await pages.get(f"/readings?token={TOKEN}")
    link = await pages.post("/readings", data={"csrf": pages.cookies["portal_form"], "token": TOKEN,
                                               "d-1:mono": huge})
    assert link.status_code == 400, link.status_code
    assert 'id="d1c1-error"' in link.text
