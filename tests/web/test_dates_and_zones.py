"""Dates, times and numbers on the pages as a reader of each language writes them, times in the portal's own zone
(PORTAL_TIME_ZONE); without services: the pages run over the ASGI app with a portal that answers as they would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from contracts import registration, ticketing
from contracts.client import PortalError
from gateway.app import create_app
from gateway.cookies import csrf_token
from gateway.settings import GatewaySettings
from gateway.web.i18n import shown_count, shown_day, shown_moment

SESSION = "s" * 40
DEVICE = registration.Device(
    device_id="d-1", serial_number="S1", model="C650", counters=["mono"],
    warranty=registration.Warranty(start_date="2015-03-25", end_date="2018-03-25", months=36, extended=True),
    last_readings=[registration.CounterReading(name="mono", date="2026-09-30", value=1234567)],
).model_dump(mode="json")
TICKET = ticketing.Ticket(
    ticket_number="2026/1", status="to_be_scheduled", updatable=True, category="malfunction", description="Paper jam",
    device=ticketing.TicketDevice(device_id="d-1", serial_number="S1", model="C650"),
    contact=ticketing.TicketContact(name="Kari", email="kari@example.com"), service_address=registration.Location(),
    address_permanent=False, opened_at="2026-12-04T17:20:00Z", eta="2026-12-07T14:00:00Z", history=[], notes=[],
).model_dump(mode="json")
ORDER: dict[str, Any] = {"order_number": "OR-2026-000001", "placed_at": "2026-12-04T17:20:00Z", "status": "placed",
                         "lines": [], "tracking": None}


class Portal:
    """Answers what the dashboard and the orders page ask: one device, one order, and devices by the thousand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def call(self, command: str, payload: Any = None, **_: Any) -> dict[str, Any]:
        if command == "ticketing.operator.list_tickets":
            return {"items": [TICKET], "total": 1, "page": 1, "page_size": 50}
        if command == "ticketing.operator.set_status":
            self.sent.append(dict(payload))
            return TICKET
        if command == "registration.get_device":
            return DEVICE
        if command == "metering.history":
            return {"device_id": "d-1", "serial_number": "S1", "readings": [], "periods": []}
        if command == "accounts.get_profile":
            return {"role": "customer", "terms_open": False}
        if command == "registration.list_devices":
            return {"items": [DEVICE], "total": 12345, "page": 1, "page_size": 200}
        if command == "ordering.list_orders":
            return {"items": [ORDER], "total": 1, "page": 1, "page_size": 50}
        if command in ("metering.list_due", "ticketing.list_tickets", "metering.operator.overdue"):
            return {"items": [], "total": 0, "page": 1, "page_size": 200}
        raise PortalError("not_found")

    async def close(self) -> None:
        pass


Pages = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def portal() -> Portal:
    return Portal()


@pytest.fixture
def pages(portal: Portal) -> Pages:
    @asynccontextmanager
    async def signed_in(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(GatewaySettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", **settings),
                         portal)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test") as client:
            client.cookies.set("portal_session", SESSION)
            yield client
    return signed_in


@pytest.mark.parametrize(("language", "warranty_end", "devices"),
                         [("de", "25.03.2018", "(12.345)"), ("en", "25 Mar 2018", "(12,345)"),
                          ("nb", "25.03.2018", "(12\u00a0345)")])
async def test_the_dashboard_writes_a_warranty_end_and_a_count_as_the_language_does(
        pages: Pages, language: str, warranty_end: str, devices: str) -> None:
    async with pages() as client:
        page = (await client.get(f"/?lang={language}")).text
    assert f"<td>{warranty_end}</td>" in page
    assert devices in page
    assert "2018-03-25" not in page


async def test_a_time_is_shown_in_the_portals_zone_with_the_zone_named(pages: Pages) -> None:
    async with pages(time_zone="Europe/Oslo") as client:
        assert "<td>04.12.2026, 18:20 CET</td>" in (await client.get("/orders?lang=nb")).text
        assert "<td>04.12.2026, 18:20 MEZ</td>" in (await client.get("/orders?lang=de")).text
        assert "<td>4 Dec 2026, 18:20 CET</td>" in (await client.get("/orders?lang=en")).text
    async with pages() as client:  # the default: UTC
        assert "<td>4 Dec 2026, 17:20 UTC</td>" in (await client.get("/orders?lang=en")).text


async def test_an_operator_states_an_arrival_in_the_portals_zone_unless_another_is_picked(
        pages: Pages, portal: Portal) -> None:
    async with pages(time_zone="America/New_York") as client:
        page = (await client.get("/office/tickets?lang=en")).text
        assert "Expected: 7 Dec 2026, 09:00 -0500" in page  # no short name in English: the offset
        assert '<option value="America/New_York" selected>' in page
        assert '<option value="Europe/Oslo">' in page  # the picker keeps the others
        for zone, sent in ((None, "2026-12-07T14:00:00Z"), ("Europe/Oslo", "2026-12-07T08:00:00Z")):
            form = {"csrf": csrf_token(SESSION), "from": "to_be_scheduled", "status": "dispatched",
                    "technician": "Ola", "eta": "2026-12-07T09:00", **({"zone": zone} if zone else {})}
            assert (await client.post("/office/tickets/2026/1", data=form)).status_code == 303
            assert datetime.fromisoformat(portal.sent[-1]["eta"]) == datetime.fromisoformat(sent)


@pytest.mark.parametrize(("path", "field"), [("/devices/d-1", "reading_date"), ("/office/readings", "as_of")])
async def test_a_forms_default_date_is_today_where_the_portal_is(pages: Pages, path: str, field: str) -> None:
    # A day ahead of UTC in Kiritimati from 10:00 UTC, a day behind in Etc/GMT+12 until 12:00 UTC: at any time one
    # of them is another day than the server's UTC.
    shown = {}
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        async with pages(time_zone=zone) as client:
            page = (await client.get(path)).text
        shown[zone] = re.search(rf'id="{field}"[^>]*value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        assert shown[zone] == datetime.now(ZoneInfo(zone)).date().isoformat()
    assert set(shown.values()) != {datetime.now(UTC).date().isoformat()}


def test_a_moment_near_midnight_is_the_day_it_is_where_the_portal_is() -> None:
    assert shown_day("2026-12-04T23:30:00Z", "de", "Europe/Oslo") == "05.12.2026"
    assert shown_day("2026-12-04T23:30:00Z", "de", "UTC") == "04.12.2026"
    assert shown_moment("2026-07-04T12:00:00+00:00", "de", "Europe/Berlin") == "04.07.2026, 14:00 MESZ"


@pytest.mark.parametrize("value", ["soon", "2026-13-45", "", "2026-12-04T25:00"])
def test_a_date_that_does_not_parse_is_shown_as_it_came(value: str) -> None:
    assert shown_day(value, "de", "UTC") == value
    assert shown_moment(value, "nb", "Europe/Oslo") == value
    assert shown_day(None, "en", "UTC") == shown_moment(None, "en", "UTC") == ""


def test_a_count_that_is_no_number_is_shown_as_it_came() -> None:
    assert shown_count("–", "de") == "–"
    assert shown_count(1234, "nb") == "1\u00a0234"
    assert shown_count("1234", "de") == "1.234"
