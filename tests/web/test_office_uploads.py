"""The back office's uploads over ASGI (no browser) in front of accounts and registration running in this process:
each row of a file loaded or refused on its own, and said in the page's language."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from contracts.client import PortalClient
from gateway.app import create_app
from gateway.cookies import csrf_token
from gateway.settings import GatewaySettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.accounts.conftest import accounts
from tests.admin.support import known_model
from tests.builders import operator_token, random_id
from tests.registration.conftest import registration

__all__ = ["accounts", "registration"]  # the services' own fixtures, reused


@asynccontextmanager
async def german_operator(settings: Settings, portal: PortalClient) -> AsyncIterator[httpx.AsyncClient]:
    """A German operator's browser: signed in, its language German."""
    app = create_app(GatewaySettings(amqp_url=settings.amqp_url, gateway_command_timeout=10), portal)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal.test",
                                 headers={"accept-language": "de-DE"}) as client:
        client.cookies.set("portal_session", operator_token(settings))
        yield client


@pytest.fixture
async def office(settings: Settings, portal: PortalClient, accounts: ServiceInstance,
                 registration: ServiceInstance) -> AsyncIterator[httpx.AsyncClient]:
    async with german_operator(settings, portal) as client:
        yield client


async def upload(office: httpx.AsyncClient, kind: str, name: str, lines: list[str]) -> httpx.Response:
    session = office.cookies["portal_session"]
    return await office.post("/office/uploads", data={"csrf": csrf_token(session), "kind": kind},
                             files={"file": (name, ("\n".join(lines) + "\n").encode(), "text/csv")})


def row_results(page: str) -> dict[str, str]:
    """Each row of the result table by its line in the file: the row's text, tags taken out."""
    cells = re.findall(r"<tr><td>(\d+)</td>(.*?)</tr>", page, flags=re.DOTALL)
    return {line: html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text))).strip() for line, text in cells}


async def test_a_models_file_with_a_row_registration_refuses_loads_the_others_and_says_why_in_german(
        office: httpx.AsyncClient, portal: PortalClient, settings: Settings) -> None:
    prefixes = [f"U{random_id()[:3].upper()}{n}" for n in range(4)]
    response = await upload(office, "models", "models.csv", [
        "model;article_number;serial_pattern;counters",
        f"Model {prefixes[0]};4711;^{prefixes[0]}[0-9]{{6}}$;mono",
        f"Model {prefixes[1]};4712;^({prefixes[1]};mono",  # no regular expression: registration refuses this item
        f"Model {prefixes[2]};4713;^{prefixes[2]}[0-9]{{6}}$;mono, color",
        f"Model {prefixes[3]};;^{prefixes[3]}[0-9]{{6}}$;mono"])  # no article number: refused before it is sent

    assert response.status_code == 200, response.text
    assert "Gespeicherte Zeilen: 2 von 4." in response.text
    rows = row_results(response.text)
    assert rows["2"] == f"Model {prefixes[0]} Gespeichert"
    assert rows["3"] == f"Model {prefixes[1]} Abgelehnt: serial_pattern: Bitte prüfen Sie diese Angabe."
    assert rows["4"] == f"Model {prefixes[2]} Gespeichert"
    assert rows["5"] == f"Model {prefixes[3]} Abgelehnt: article_number: Bitte füllen Sie dieses Feld aus."
    found = [await known_model(portal, settings, f"{prefix}123456") for prefix in prefixes]
    assert found == [f"Model {prefixes[0]}", None, f"Model {prefixes[2]}", None]


@pytest.mark.parametrize(("header", "last", "said"), [
    ("model,article_number,serial_pattern,", "mono", "ohne Namen in der ersten Zeile: Spalte 4,"),  # values unnamed
    ("model,article_number,serial_pattern,Model", "Other", "steht eine Spalte zweimal: Model."),  # a name twice
])
async def test_a_file_whose_columns_cannot_be_told_apart_is_refused_beside_its_field_in_german(
        office: httpx.AsyncClient, portal: PortalClient, settings: Settings, header: str, last: str,
        said: str) -> None:
    prefix = f"U{random_id()[:4].upper()}"
    response = await upload(office, "models", "models.csv",
                            [header, f"Model {prefix},4711,^{prefix}[0-9]{{6}}$,{last}"])

    assert response.status_code == 400, response.text
    refusal = re.search(r'<p class="field-error" id="file-error">([^<]*)</p>', response.text)
    assert refusal and said in html.unescape(refusal.group(1))
    assert await known_model(portal, settings, f"{prefix}123456") is None


async def test_an_upload_that_cannot_reach_registration_says_so_above_rows_not_sent(
        settings: Settings, portal: PortalClient, accounts: ServiceInstance) -> None:
    async with german_operator(settings, portal) as office:  # registration never started: no queue takes the call
        response = await upload(office, "models", "models.csv", [
            "model;article_number;serial_pattern;counters", "Model U1;4711;^U1[0-9]{6}$;mono",
            "Model U2;;^U2[0-9]{6}$;mono"])

    assert response.status_code == 200, response.text
    assert "Das Hochladen wurde abgebrochen, weil das Portal gerade nicht antwortet." in html.unescape(response.text)
    assert row_results(response.text) == {
        "2": "Model U1 Abgelehnt: Nicht gesendet: Das Hochladen wurde abgebrochen.",
        "3": "Model U2 Abgelehnt: article_number: Bitte füllen Sie dieses Feld aus."}
