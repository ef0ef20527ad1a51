"""The gateway as its own process in front of the six services as processes: a customer's journey over HTTP, and
Schemathesis against its OpenAPI document with valid tokens."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import PDF, random_serial, sign_up
from tests.e2e.conftest import CONFIRMATION_LINK, Stack, gateway_url, stack
from tests.support import plain_text

__all__ = ["gateway_url", "stack"]  # the e2e stack and its gateway, used here as fixtures

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# Bounded for `make test`; `make test-api-deep` raises it (GATEWAY_FUZZ_EXAMPLES).
EXAMPLES = os.environ.get("GATEWAY_FUZZ_EXAMPLES", "3")
# Every check but two. positive_data_acceptance: schema-valid bodies name devices and tickets that do not exist, or
# break a catalogue rule (404, 409), as they should. negative_data_rejection: the contracts' models parse leniently
# as pydantic does (`period_end=0` is 1970-01-01 for the services too), so some off-schema values are accepted.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,missing_required_header,unsupported_method,allow_header_conformance,"
          "use_after_free,ensure_resource_availability,ignored_auth")
OFFICE = {"name": "Empfang", "street": "Hauptstraße 1", "postal_code": "01067", "city": "Dresden", "country": "DE"}


async def until_found(call: Any) -> httpx.Response:
    """A read model fed by events (another service's copy of a device) may lag a moment behind the write."""
    for _ in range(200):
        response: httpx.Response = await call()
        if response.status_code != 404:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"still 404: {response.text}")


async def confirmed(http: httpx.AsyncClient, stack: Stack, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign-up and the confirmation link from the mail, over HTTP: the sign-up and the confirmation's reply."""
    person = sign_up(**fields)
    registered = await http.post("/api/v1/users", json=person)
    assert registered.status_code == 201, registered.text
    assert registered.json()["status"] == "pending_confirmation"
    link = CONFIRMATION_LINK.search(plain_text(await stack.mail(person["email"], ".")))
    assert link, "no confirmation link in the mail"
    confirmation = await http.post("/api/v1/users/confirmation", json={"token": link.group(1)})
    assert confirmation.status_code == 200, confirmation.text
    return person, confirmation.json()


async def signed_in(http: httpx.AsyncClient, stack: Stack, language: str = "de") -> dict[str, Any]:
    """Sign-up, the confirmation link from the mail, sign-in: all over HTTP; the reply of the sign-in."""
    person, confirmation = await confirmed(http, stack, language=language)
    assert confirmation["status"] == "active"
    session = await http.post("/api/v1/session", json={"login": person["username"], "password": person["password"]})
    assert session.status_code == 200, session.text
    return {**session.json(), "person": person}


async def test_the_gateway_is_ready_once_the_broker_and_every_service_answer(gateway_url: str, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        ready = await http.get("/readyz")

    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "services": dict.fromkeys(
        ("accounts", "registration", "metering", "ordering", "ticketing", "notifier"), "ok")}

async def registered_device(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    """A C332 of the demo catalogue registered with a PDF proof as multipart; its device id and serial."""
    serial = random_serial("AK6C")
    fields = {"serial_number": serial, "purchase_date": "2026-11-30", "warranty_accepted": True, "location": OFFICE,
              "friendly_name": "Empfang"}
    for _ in range(100):  # registration learns of the accepted terms from accounts' event
        registered = await http.post("/api/v1/devices", headers={**headers, "Idempotency-Key": f"register-{serial}"},
                                     data={"data": json.dumps(fields)},
                                     files={"proof_of_purchase": ("Kaufbeleg.pdf", PDF, "application/pdf")})
        if registered.status_code != 409 or registered.json()["code"] != "terms_not_accepted":
            break
        await asyncio.sleep(0.1)
    assert registered.status_code == 201, registered.text
    assert registered.json()["model"] == "C332"
    return registered.json()["device_id"], serial


async def accepted_terms(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    profile = (await http.get("/api/v1/me", headers=headers)).json()
    assert profile["terms_open"] is True
    accepted = await http.post("/api/v1/me/terms", headers=headers, json={
        "terms_version": profile["current_terms_version"], "privacy_version": profile["current_privacy_version"]})
    assert accepted.status_code == 200, accepted.text


async def test_a_customer_goes_from_sign_up_to_a_service_request_over_http(gateway_url: str, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, headers={"Accept-Language": "de"}) as http:
        session = await signed_in(http, stack)
        person, csrf = session["person"], {"X-CSRF-Token": http.cookies["portal_csrf"]}  # a browser, by cookie

        await accepted_terms(http, csrf)
        device_id, serial = await registered_device(http, csrf)
        devices = (await http.get("/api/v1/devices", params={"serial_number": serial})).json()
        assert [device["device_id"] for device in devices["items"]] == [device_id]

        ticket_request = {"device_id": device_id, "description": "Papierstau in Fach 2",
                          "contact": {"name": person["username"], "email": person["email"]}}
        opened = await until_found(lambda: http.post("/api/v1/tickets", headers={
            **csrf, "Idempotency-Key": f"ticket-{device_id}"}, json=ticket_request))
        assert opened.status_code == 201, opened.text
        number = opened.json()["ticket_number"]
        assert re.fullmatch(r"\d+/\d+", number)
        replayed = await http.post("/api/v1/tickets", headers={**csrf, "Idempotency-Key": f"ticket-{device_id}"},
                                   json=ticket_request)
        assert replayed.json() == opened.json()  # a retried POST: the same ticket, not a second one

        second = await http.post("/api/v1/tickets", headers=csrf, json=ticket_request)
        assert second.status_code == 409
        assert second.json()["code"] == "open_ticket_exists"
        assert second.json()["message"].startswith("Für dieses Gerät gibt es bereits eine offene Serviceanfrage")

        note = await http.post(f"/api/v1/tickets/{number}/notes", headers=csrf, json={"text": "Fach 1 geht noch"})
        assert note.status_code == 200, note.text
        ticket = (await http.get(f"/api/v1/tickets/{number}")).json()
        assert (ticket["status"], ticket["device"]["device_id"]) == ("to_be_scheduled", device_id)
        assert [item["text"] for item in ticket["notes"]] == ["Fach 1 geht noch"]
        await stack.mail(person["email"], number)  # the receipt names the ticket

        usage = await http.get("/api/v1/usage/xlsx", params={"from": "2026-01-01", "to": "2026-12-31"})
        assert usage.status_code == 200, usage.text
        assert usage.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        assert usage.headers["content-disposition"] == (
            "attachment; filename=\"usage-2026-01-01-2026-12-31.xlsx\"; "
            "filename*=UTF-8''usage-2026-01-01-2026-12-31.xlsx")
        assert usage.content.startswith(b"PK")  # the workbook's zip bytes, not base64 text

        signed_out = await http.delete("/api/v1/session", headers=csrf)
        assert signed_out.status_code == 200
        assert (await http.get("/api/v1/me")).status_code == 401


async def test_an_operators_back_office_day_over_http(gateway_url: str, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        signed = await http.post("/api/v1/session", json={
            "login": stack.settings.bootstrap_operator_email,
            "password": stack.settings.bootstrap_operator_password.get_secret_value()})
        assert signed.status_code == 200 and signed.json()["user"]["role"] == "operator"
        http.cookies.clear()  # an operator's tool: bearer token only
        operator = {"Authorization": f"Bearer {signed.json()['access_token']}"}

        # Master data from the ERP: a customer with its contract and a device under it.
        customer, under_contract = f"K-{random_serial('')}", random_serial("AK5A")
        provisioned = await http.put(f"/api/v1/operator/customers/{customer}", headers=operator, json={
            "name": "Muster GmbH", "contracts": [{"contract_number": f"{customer}-1", "type": "page_price",
                                                  "start_date": "2026-01-01", "includes_consumables": True}]})
        assert provisioned.status_code == 200, provisioned.text
        imported = await http.post("/api/v1/operator/installed-base", headers=operator, json={"devices": [{
            "serial_number": under_contract, "model": "ES5431dn", "customer_number": customer,
            "contract_number": f"{customer}-1", "location": OFFICE}]})
        assert imported.json() == {"imported": 1, "rejected": []}

        # A dealer's sign-up waits for the operator.
        dealer, confirmation = await confirmed(http, stack, role="dealer", language="en")
        assert confirmation["status"] == "pending_verification"
        waiting = (await http.get("/api/v1/operator/verifications", headers=operator,
                                  params={"page_size": 200})).json()
        assert confirmation["user_id"] in [user["user_id"] for user in waiting["items"]]
        decided = await http.post(f"/api/v1/operator/verifications/{confirmation['user_id']}/decision",
                                  headers=operator, json={"approve": True, "reason": "Händlervertrag geprüft"})
        assert decided.json()["status"] == "active"

        # The dealer's service request reaches the operator's queue and is dispatched.
        session = await http.post("/api/v1/session", json={"login": dealer["email"], "password": dealer["password"]})
        assert session.status_code == 200, session.text
        http.cookies.clear()
        bearer = {"Authorization": f"Bearer {session.json()['access_token']}"}
        await accepted_terms(http, bearer)
        device_id, _ = await registered_device(http, bearer)
        opened = await until_found(lambda: http.post("/api/v1/tickets", headers=bearer, json={
            "device_id": device_id, "description": "Druckt nur noch leere Seiten",
            "contact": {"name": "Kari Nordmann", "email": dealer["email"]}}))
        assert opened.status_code == 201, opened.text
        number = opened.json()["ticket_number"]
        queue = (await http.get("/api/v1/operator/tickets", headers=operator, params={"page_size": 200})).json()
        assert number in [ticket["ticket_number"] for ticket in queue["items"]]
        dispatched = await http.put(f"/api/v1/operator/tickets/{number}/status", headers=operator, json={
            "status": "dispatched", "technician": "Kari Nordmann", "eta": "2026-12-10T09:30:00+01:00"})
        assert dispatched.json() == {"status": "dispatched"}
        too_late = await http.post(f"/api/v1/tickets/{number}/notes", headers=bearer, json={"text": "noch da?"})
        assert (too_late.status_code, too_late.json()["code"]) == (409, "already_dispatched")
        wrong = await http.put(f"/api/v1/operator/tickets/{number}/status", headers=operator,
                               json={"status": "closed"})
        assert (wrong.status_code, wrong.json()["code"]) == (409, "invalid_transition")

        # The mails are on record, the reminder schedule runs on demand, the dead letters are readable.
        await stack.mail(dealer["email"], number)
        deliveries = (await http.get("/api/v1/operator/deliveries", headers=operator,
                                     params={"recipient": dealer["email"]})).json()
        assert deliveries["total"] >= 2  # the confirmation link and the ticket's receipt at least
        run = await http.post("/api/v1/operator/reminder-runs", headers=operator, json={"as_of": "2026-12-24"})
        assert run.status_code == 200 and set(run.json()) == {"reminders", "overdue"}
        dead = await http.get("/api/v1/operator/services/notifier/dead-letters", headers=operator)
        assert dead.status_code == 200 and dead.json()["items"] == []

        # None of it is open to a customer.
        refused = await http.get("/api/v1/operator/deliveries", headers=bearer)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")


def schemathesis(gateway_url: str, token: str, work_dir: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    """The Schemathesis CLI; its cache and reports go to `work_dir`, not into the repository."""
    return subprocess.run([
        SCHEMATHESIS, "run", f"{gateway_url}/openapi.json", "--max-examples", EXAMPLES, "--seed", "1",
        "--workers", "1", "--phases", "examples,coverage,fuzzing", "--request-timeout", "30",
        "--checks", os.environ.get("GATEWAY_FUZZ_CHECKS", CHECKS),
        "-H", f"Authorization: Bearer {token}", *selection],
        capture_output=True, text=True, timeout=900, cwd=work_dir)


async def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema_as_a_customer(
        gateway_url: str, stack: Stack, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        token = (await signed_in(http, stack, "en"))["access_token"]

    # Signing out would end the token every other request carries.
    result = await asyncio.to_thread(schemathesis, gateway_url, token, tmp_path, "--exclude-tag", "operator",
                                     "--exclude-operation-id", "accounts_logout")

    assert result.returncode == 0, result.stdout[-20000:]


async def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema_as_an_operator(
        gateway_url: str, stack: Stack, tmp_path: Path) -> None:
    result = await asyncio.to_thread(schemathesis, gateway_url, stack.operator, tmp_path, "--include-tag", "operator")

    assert result.returncode == 0, result.stdout[-20000:]
