"""Two more ways into the portal, with all six services as processes and only the portal's client.

A dealer registers devices for an end customer by Excel (OKI handbook: "Im Namen Ihres Kunden", "Registrierung
mehrerer Geräte"), and the end customer then takes them into their own view (OneRicoh: a new customer claims a
machine by its serial and postcode and is offered the others at that address, which the vendor approves).
A contract sign-in (OKI Seitenpreisvertrag: customer and contract number) sees its contract and nothing else.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts.base import FileObject
from services.metering import periods
from services.registration import excel
from tests.builders import random_email, random_id, random_serial
from tests.e2e.conftest import Stack
from tests.support import eventually, outcome, retried_while

pytestmark = pytest.mark.asyncio(loop_scope="module")

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
END_CUSTOMER_SITE = {"street": "Königsallee 92", "postal_code": "40212", "city": "Düsseldorf", "country": "DE"}
TONER_BLACK = "44973512"  # the OKI seed's order form for an ES5431dn


def filled_in(template: bytes, language: str, rows: list[dict[str, Any]]) -> bytes:
    """The template as a dealer fills it in: each row's values under the column whose label names them."""
    book = openpyxl.load_workbook(BytesIO(template))
    sheet = book.worksheets[0]
    lang = excel.language_of(language)
    key_of = {column.labels[lang]: column.key for column in excel.COLUMNS}
    keys = [key_of[str(cell.value).removesuffix(" *")] for cell in sheet[1]]
    for row in rows:
        sheet.append([row.get(key) for key in keys])
    buffer = BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def file_of(reply: dict[str, Any]) -> bytes:
    return base64.b64decode(reply["content_base64"])


async def test_a_dealer_registers_25_devices_for_an_end_customer_by_excel_and_the_end_customer_sees_them(
        stack: Stack) -> None:
    portal, operator = stack.portal, stack.operator

    # The dealer signs up under their own customer number; every dealer is verified by the vendor.
    dealer_number = random_id("D")
    dealer = await stack.sign_up("de", country="DE", role="dealer", customer_number=dealer_number)
    assert dealer.status == "pending_verification"
    await stack.approve(dealer)
    dealer_token = await stack.sign_in(dealer)
    await portal.call("accounts.accept_terms", {"terms_version": "1", "privacy_version": "1"}, token=dealer_token)

    # The template in the dealer's language, 25 rows for the end customer, uploaded.
    template = await portal.call("registration.bulk_template", {"language": "de"})
    assert template["content_type"] == XLSX
    end_customer_email = random_email()
    serials = [random_serial("AK6C") for _ in range(25)]
    bought = (date.today() - timedelta(days=14)).isoformat()
    content = filled_in(file_of(template), "de", [
        {"serial_number": serial, "purchase_date": bought, "friendly_name": f"Etage {index // 5 + 1}, Nr. {index}",
         **END_CUSTOMER_SITE, "end_customer_name": "Muster GmbH", "end_customer_email": end_customer_email,
         "warranty_accepted": "ja"} for index, serial in enumerate(serials)])
    upload = await retried_while(["terms_not_accepted"], lambda: portal.call("registration.bulk_upload", {
        "file": FileObject.from_bytes("Geräte Muster GmbH.xlsx", XLSX, content).model_dump()}, token=dealer_token))
    assert upload["status"] == "queued"
    lines: list[dict[str, Any]] = []

    async def processed() -> bool:
        listed = await portal.call("registration.list_bulk_uploads", {}, token=dealer_token)
        lines[:] = [line for line in listed["items"]
                    if line["upload_id"] == upload["upload_id"] and line["status"] in ("processed", "failed")]
        return bool(lines)
    await eventually(processed, timeout=60, step=0.5)
    assert (lines[0]["status"], lines[0]["total"], lines[0]["processed"], lines[0]["unprocessed"]) == (
        "processed", 25, 25, 0)
    result = await portal.call("registration.bulk_result", {"upload_id": upload["upload_id"]}, token=dealer_token)
    book = openpyxl.load_workbook(BytesIO(file_of(result)), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    assert rows[0][-2:] == ("result", "message")
    assert [row[-2] for row in rows[1:]] == ["registered"] * 25
    dealers_view = await portal.call("registration.list_devices", {"page_size": 50}, token=dealer_token)
    assert sorted(device["serial_number"] for device in dealers_view["items"]) == sorted(serials)

    # The end customer, new to the portal, claims one printer at their address and is offered the other 24.
    end_customer = await stack.sign_up("de", country="DE", email=end_customer_email)
    assert end_customer.status == "active"
    end_token = await stack.sign_in(end_customer)
    claimed = await portal.call("registration.claim_device", {
        "serial_number": serials[0], "postal_code": END_CUSTOMER_SITE["postal_code"]}, token=end_token)
    offered = {device["serial_number"]: device["device_id"] for device in claimed["same_location"]}
    assert sorted(offered) == sorted(serials[1:])
    request = await portal.call("registration.claim_same_location", {"device_ids": list(offered.values())},
                                token=end_token)
    assert request["status"] == "pending_approval"
    assert (await portal.call("registration.list_devices", {"page_size": 50}, token=end_token))["total"] == 1
    decided = await portal.call("registration.operator.decide_request", {
        "request_id": request["request_id"], "approve": True}, token=operator)
    assert decided["status"] == "approved"
    end_view = await portal.call("registration.list_devices", {"page_size": 50}, token=end_token)
    assert sorted(device["serial_number"] for device in end_view["items"]) == sorted(serials)
    assert {device["location"]["city"] for device in end_view["items"]} == {"Düsseldorf"}
    assert {device["warranty"]["months"] for device in end_view["items"]} == {36}

    # Mails: the dealer's account and the one result mail for the whole file (not 25); the end customer's account
    # and the vendor's decision.
    dealer_mails = await stack.mails_once(dealer.email, {
        "account_confirmation": "^Bitte bestätigen Sie Ihre E-Mail-Adresse$",
        "verification_decision": "^Ihr Konto wurde freigeschaltet$",
        "bulk_result": r"^Sammelregistrierung Geräte Muster GmbH\.xlsx: 25 von 25 Geräten registriert$"}, "de")
    [attached] = list(dealer_mails["bulk_result"].iter_attachments())
    assert (attached.get_filename() or "").endswith(".xlsx")
    await stack.mails_once(end_customer.email, {
        "account_confirmation": "^Bitte bestätigen Sie Ihre E-Mail-Adresse$",
        "request_decision": "^Ihre Anfrage wurde genehmigt$"}, "de")


async def test_a_contract_sign_in_sees_only_its_contracts_devices_readings_and_orders(stack: Stack) -> None:
    portal, operator = stack.portal, stack.operator
    today = datetime.now(UTC).date()
    customer, flat_rate, other = random_id("C"), random_id("K"), random_id("K")
    started = (today - timedelta(days=500)).isoformat()
    await portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": "Seitenpreis AG", "contracts": [
            {"contract_number": number, "type": "page_price", "start_date": started, "billing_period": "quarterly",
             "includes_consumables": True} for number in (flat_rate, other)]}, token=operator)
    office = {"name": "Seitenpreis AG", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf"}
    last_date = (today - timedelta(days=40)).isoformat()
    mine, also_mine, theirs = (random_serial("AK5A") for _ in range(3))
    await portal.call("registration.operator.import_installed_base", {"devices": [
        {"serial_number": serial, "model": "ES5431dn", "customer_number": customer, "contract_number": contract,
         "location": office, "counters": [{"name": "mono", "value": 1_000, "date": last_date},
                                          {"name": "color", "value": 500, "date": last_date}]}
        for serial, contract in ((mine, flat_rate), (also_mine, flat_rate), (theirs, other))]}, token=operator)

    async def contract_sign_in(contract: str) -> str:
        session = await portal.call("accounts.contract_login", {"customer_number": customer,
                                                                "contract_number": contract})
        assert session["user"]["customer_number"] == customer
        return str(session["access_token"])
    token, other_token = await contract_sign_in(flat_rate), await contract_sign_in(other)

    async def device_id(serial: str, by: str) -> str:
        return str((await portal.call("registration.get_device", {"serial_number": serial}, token=by))["device_id"])

    async def read_and_order(device: str, by: str, mono: int) -> str:
        """A reading and a toner order, each sent again until the service's copy of the device has arrived."""
        await retried_while(["not_found"], lambda: portal.call("metering.submit_reading", {
            "device_id": device, "readings": [{"counter": "mono", "value": mono},
                                              {"counter": "color", "value": 600}]}, token=by))
        order = await retried_while(["not_found", "not_covered_by_contract"], lambda: portal.call(
            "ordering.place_order", {"lines": [{"device_id": device, "article_number": TONER_BLACK, "quantity": 2}],
                                     "contact": {"name": "Einkauf", "email": random_email()}}, token=by))
        return str(order["order_number"])
    mine_id, theirs_id = await device_id(mine, token), await device_id(theirs, other_token)
    my_order = await read_and_order(mine_id, token, 1_800)
    their_order = await read_and_order(theirs_id, other_token, 2_600)

    # Its contract, its devices.
    contracts = await portal.call("accounts.list_contracts", {}, token=token)
    assert [item["contract_number"] for item in contracts["items"]] == [flat_rate]
    devices = await portal.call("registration.list_devices", {}, token=token)
    assert sorted(device["serial_number"] for device in devices["items"]) == sorted([mine, also_mine])
    # Its readings.
    history = await portal.call("metering.history", {"device_id": mine_id}, token=token)
    assert [reading["source"] for reading in history["readings"]] == ["customer"]
    quarter = periods.period_end(today, "quarterly").isoformat()
    usage = await portal.call("metering.usage", {"from": quarter, "to": quarter}, token=token)
    assert [(row["serial_number"], row["total"]) for row in usage["items"]] == [(mine, 800 + 100)]
    # Its orders.
    orders = await portal.call("ordering.list_orders", {}, token=token)
    assert [order["order_number"] for order in orders["items"]] == [my_order]
    assert (await portal.call("ordering.get_order", {"order_number": my_order}, token=token))["order_number"] \
        == my_order

    # The other contract's device, reading and order do not exist for it, whatever it asks.
    refused: dict[str, dict[str, Any]] = {
        "registration.get_device": {"serial_number": theirs},
        "metering.history": {"device_id": theirs_id},
        "metering.submit_reading": {"device_id": theirs_id, "readings": [{"counter": "mono", "value": 9_999},
                                                                         {"counter": "color", "value": 9_999}]},
        "ordering.get_order": {"order_number": their_order},
        "ordering.list_orderable": {"device_id": theirs_id},
        "ordering.place_order": {"lines": [{"device_id": theirs_id, "article_number": TONER_BLACK, "quantity": 1}],
                                 "contact": {"name": "Einkauf", "email": random_email()}},
        "ticketing.open_ticket": {"device_id": theirs_id, "description": "Papierstau",
                                  "contact": {"name": "Einkauf", "email": random_email()}},
    }
    for command, body in refused.items():
        assert await outcome(portal, command, body, token) == "not_found", command
    # And the other way round.
    assert await outcome(portal, "metering.history", {"device_id": mine_id}, other_token) == "not_found"
    assert await outcome(portal, "ordering.get_order", {"order_number": my_order}, other_token) == "not_found"
    assert [order["order_number"] for order in (await portal.call("ordering.list_orders", {}, token=other_token)
                                                )["items"]] == [their_order]
