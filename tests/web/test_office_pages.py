"""The vendor's staff in the back office, in a real browser: the operator signs in through the same page as
everyone and lands on /office; approves a sign-up the portal could not match and decides an address change; ships
a customer's toner with its tracking number and dispatches a technician with an arrival time; and a customer who
opens the back office is shown that it is not for them. Each form's refusal is checked next to its field."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from contracts.client import PortalError
from contracts.topology import EVENTS_EXCHANGE
from services.metering import periods
from tests.builders import random_id, random_serial
from tests.e2e.conftest import Stack
from tests.support import eventually, retried_while
from tests.web.conftest import accessible, new_context, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

OFFICE = {"name": "Kanzlei", "street": "Hauptstraße 1", "postal_code": "01067", "city": "Dresden", "country": "DE"}
TONER_BLACK = "44973512"  # the OKI seed's order form for an ES5431dn


async def company_under_contract(stack: Stack, last_read_days_ago: int = 60) -> tuple[str, str]:
    """A customer with a contract that includes consumables and one device under it: (customer number, serial)."""
    customer, contract, serial = random_id("C"), random_id("K"), random_serial("AK5A")
    start = (date.today() - timedelta(days=400)).isoformat()
    await stack.portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": "Kanzlei", "contracts": [{
            "contract_number": contract, "type": "page_price", "start_date": start, "billing_period": "quarterly",
            "includes_consumables": True}]}, token=stack.operator)
    last = (date.today() - timedelta(days=last_read_days_ago)).isoformat()
    await stack.portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": serial, "model": "ES5431dn", "customer_number": customer, "contract_number": contract,
        "location": OFFICE, "counters": [{"name": "mono", "value": 100, "date": last},
                                         {"name": "color", "value": 10, "date": last}]}]}, token=stack.operator)

    async def known() -> bool:  # accounts learns the installed base from registration's event
        return await stack.db("accounts").installed_base.find_one({"_id": serial}) is not None
    await eventually(known, timeout=30)
    return customer, serial


async def operator_in_office(browser: Browser, stack: Stack, gateway_url: str,
                             language: str) -> tuple[BrowserContext, Page]:
    """The bootstrap operator signed in through the sign-in page, which leads them to the back office."""
    context = await new_context(browser, language)
    page = await context.new_page()
    await sign_in(page, gateway_url, stack.settings.bootstrap_operator_email,
                  stack.settings.bootstrap_operator_password.get_secret_value())
    await expect(page).to_have_url(f"{gateway_url}/office")
    return context, page


async def test_an_operator_approves_a_sign_up_decides_an_address_change_and_a_customer_may_not_enter(
        stack: Stack, gateway_url: str, browser: Browser, module_amqp_url: str) -> None:
    customer, serial = await company_under_contract(stack)
    # The customer number with a serial the installed base does not know: an operator has to decide.
    person = await stack.sign_up("en", country="DE", customer_number=customer, serial_number=random_serial("AK6C"))
    assert person.status == "pending_verification"

    context, page = await operator_in_office(browser, stack, gateway_url, "en")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Back office")
    await accessible(page, "office-en")

    await page.get_by_role("link", name="Sign-ups", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign-ups to verify")
    row = page.get_by_role("row").filter(has_text=person.email)
    await row.get_by_role("button", name="Reject").click()  # without a reason: refused, nothing decided
    row = page.get_by_role("row").filter(has_text=person.email)
    await expect(row.locator(".field-error")).to_have_text(
        "Please give the reason for the rejection: the person is told it.")
    await accessible(page, "office-verifications-refused-en")
    with pytest.raises(PortalError, match="pending_verification"):
        await stack.sign_in(person)
    await row.get_by_label("Reason").fill("Customer number checked with the contract team")
    await row.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_have_text("Approved.")
    await expect(page.get_by_role("row").filter(has_text=person.email)).to_have_count(0)
    token = await stack.sign_in(person)  # the person can sign in now, as one of the customer's
    assert (await stack.portal.call("accounts.get_profile", {}, token=token))["customer_number"] == customer

    # The person asks for the printer's new address; the operator approves it in the claims and addresses queue.
    device = await retried_while(["not_found"], lambda: stack.portal.call(
        "registration.get_device", {"serial_number": serial}, token=token))
    moved = {**OFFICE, "street": "Neumarkt 5"}
    await stack.portal.call("registration.request_address_change", {
        "device_id": device["device_id"], "address": moved, "reason": "Umzug"}, token=token)
    await page.get_by_role("link", name="Claims and addresses").click()
    row = page.get_by_role("row").filter(has_text=serial)
    await expect(row).to_contain_text("Neumarkt 5")
    await accessible(page, "office-requests-en")
    await row.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_have_text("Approved.")

    async def moved_there() -> bool:
        read = await stack.portal.call("registration.get_device", {"device_id": device["device_id"]}, token=token)
        return bool(read["location"]["street"] == "Neumarkt 5")
    await eventually(moved_there, timeout=20)

    # The decision mail, as the mail deliveries list it; and the dead letters of every service.
    async def sent() -> bool:
        return await stack.db("notifier").deliveries.find_one(
            {"recipient": person.email.lower(), "mail": "verification_decision", "status": "sent"}) is not None
    await eventually(sent, timeout=30)
    await page.get_by_role("link", name="Mail", exact=True).click()
    await page.get_by_label("Recipient").fill(person.email)
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("row").filter(has_text="Your account has been approved")).to_contain_text("Sent")
    await accessible(page, "office-mail-en")
    await page.get_by_role("link", name="Dead letters").click()
    await expect(page.get_by_role("heading", level=2)).to_have_count(6)

    # An event no consumer can read goes to the notifier's dead letters; replayed, it fails and comes back.
    broken = random_id("broken")
    async with await aio_pika.connect(module_amqp_url) as connection:
        channel = await connection.channel()
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await events.publish(aio_pika.Message(b"not json", content_type="application/json", message_id=broken),
                             routing_key="accounts.user.registered")

    async def count_of_broken() -> int:
        letters = await stack.portal.call("notifier.operator.list_dead_letters", {"page_size": 200},
                                          token=stack.operator)
        return sum(letter["count"] for letter in letters["items"] if letter["message_id"] == broken)

    async def dead_lettered() -> bool:
        return await count_of_broken() == 1
    await eventually(dead_lettered, timeout=30)
    await page.get_by_label("Service").select_option("notifier")
    await page.get_by_role("button", name="Show").click()
    row = page.get_by_role("row").filter(has_text=broken)
    await expect(row).to_contain_text("undecodable")
    await accessible(page, "office-dead-letters-en")
    await row.get_by_role("button", name="Replay this message").click()
    await expect(page.get_by_role("status")).to_have_text("Put back on the queue.")

    async def dead_lettered_again() -> bool:
        return await count_of_broken() == 2
    await eventually(dead_lettered_again, timeout=30)

    # The person, signed in, opens the back office: not for customers.
    customer_context = await new_context(browser, "en")
    customer_page = await customer_context.new_page()
    await sign_in(customer_page, gateway_url, person.email, person.request["password"])
    await expect(customer_page).not_to_have_url(re.compile(r"/sign-in"))
    response = await customer_page.goto(f"{gateway_url}/office/orders")
    assert response is not None and response.status == 403
    await expect(customer_page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    await accessible(customer_page, "office-not-allowed-en")
    await customer_context.close()
    await context.close()


async def test_an_operator_ships_an_order_and_dispatches_a_technician_in_german(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    customer, serial = await company_under_contract(stack)
    person = await stack.sign_up("de", country="DE", customer_number=customer, serial_number=serial)
    assert person.status == "active"
    token = await stack.sign_in(person)
    device = await retried_while(["not_found"], lambda: stack.portal.call(
        "registration.get_device", {"serial_number": serial}, token=token))
    await retried_while(["not_found"], lambda: stack.portal.call(
        "ordering.list_orderable", {"device_id": device["device_id"]}, token=token))
    order = await stack.portal.call("ordering.place_order", {
        "lines": [{"device_id": device["device_id"], "article_number": TONER_BLACK, "quantity": 1}],
        "contact": {"name": "Christa Zimmermann", "email": person.email}}, token=token, lang="de")
    ticket = await retried_while(["not_found"], lambda: stack.portal.call("ticketing.open_ticket", {
        "device_id": device["device_id"], "description": "Papierstau in Fach 2",
        "contact": {"name": "Christa Zimmermann", "email": person.email, "phone": "+49 351 000000"}},
        token=token, lang="de"))

    context, page = await operator_in_office(browser, stack, gateway_url, "de")
    await page.goto(f"{gateway_url}/office/orders?lang=de")  # the operator's profile speaks English
    await expect(page.get_by_role("heading", level=1)).to_have_text("Bestellungen: Zu versenden")
    await accessible(page, "office-orders-de")
    row = page.get_by_role("row").filter(has_text=order["order_number"])
    await expect(row).to_contain_text(serial)
    await row.get_by_label("Versanddienst").fill("DHL")
    await row.get_by_role("button", name="Als versandt markieren").click()  # without a tracking number
    row = page.get_by_role("row").filter(has_text=order["order_number"])
    await expect(row.locator(".field-error")).to_have_text("Bitte füllen Sie dieses Feld aus.")
    await expect(row.get_by_label("Versanddienst")).to_have_value("DHL")  # kept, not typed again
    await accessible(page, "office-orders-refused-de")
    await row.get_by_label("Sendungsnummer").fill("00340434161094042557")
    await row.get_by_role("button", name="Als versandt markieren").click()
    await expect(page.get_by_role("status")).to_have_text("Als versandt markiert.")
    shipped = await stack.portal.call("ordering.get_order", {"order_number": order["order_number"]}, token=token)
    assert shipped["status"] == "shipped"
    assert (shipped["tracking"]["carrier"], shipped["tracking"]["tracking_number"]) == ("DHL", "00340434161094042557")
    await page.get_by_role("link", name="Versandt", exact=True).click()
    await page.get_by_role("row").filter(has_text=order["order_number"]).get_by_role(
        "button", name="Als zugestellt markieren").click()
    await expect(page.get_by_role("status")).to_have_text("Als zugestellt markiert.")
    assert (await stack.portal.call("ordering.get_order", {"order_number": order["order_number"]}, token=token)
            )["status"] == "delivered"

    # The service request: dispatched with a technician and the time they arrive, in Berlin's time.
    await page.get_by_role("link", name="Serviceanfragen", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Serviceanfragen: Wird eingeplant")
    row = page.get_by_role("row").filter(has_text=ticket["ticket_number"])
    await expect(row).to_contain_text("Papierstau in Fach 2")
    await accessible(page, "office-tickets-de")
    await row.get_by_label("Neuer Status").select_option("dispatched")
    await row.get_by_role("button", name="Status ändern").click()  # nobody named: refused
    row = page.get_by_role("row").filter(has_text=ticket["ticket_number"])
    await expect(row.locator(".field-error")).to_have_text("Bitte nennen Sie den Techniker, der hinfährt.")
    tomorrow = date.today() + timedelta(days=1)
    await row.get_by_label("Techniker").fill("Kari Nordmann")
    await row.get_by_label("Erwartete Ankunft").fill(f"{tomorrow.isoformat()}T09:30")
    await expect(row.get_by_label("Zeitzone")).to_have_value("UTC")  # the portal's zone (PORTAL_TIME_ZONE)
    await row.get_by_label("Zeitzone").select_option("Europe/Berlin")
    await row.get_by_role("button", name="Status ändern").click()
    await expect(page.get_by_role("status")).to_have_text("Der Status der Serviceanfrage ist geändert.")
    read: dict[str, Any] = await stack.portal.call("ticketing.get_ticket", {"ticket_number": ticket["ticket_number"]},
                                                   token=token)
    assert (read["status"], read["technician"]) == ("dispatched", "Kari Nordmann")
    expected = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert datetime.fromisoformat(read["eta"].replace("Z", "+00:00")) == expected.astimezone(UTC)
    await page.get_by_role("link", name="Techniker zugewiesen").click()
    await expect(page.get_by_role("row").filter(has_text=ticket["ticket_number"])).to_contain_text("Kari Nordmann")
    await context.close()


async def test_an_operator_runs_the_reminders_for_a_past_day_and_records_an_estimate_for_an_overdue_device(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    # Last read half a year ago: nothing for the quarter whose window closed last.
    customer, serial = await company_under_contract(stack, last_read_days_ago=200)
    closed = periods.closed_window_before(date.today(), "quarterly")

    async def metering_knows() -> bool:  # the device and its contract, from registration's and accounts' events
        metering = stack.db("metering")
        return await metering.devices.find_one({"serial_number": serial}) is not None \
            and await metering.customers.find_one({"_id": customer}) is not None
    await eventually(metering_knows, timeout=30)

    context, page = await operator_in_office(browser, stack, gateway_url, "en")
    await page.get_by_role("link", name="Readings", exact=True).click()
    await page.get_by_label("Period ending on").fill(closed.period_end.isoformat())
    await page.get_by_role("button", name="Show").click()
    # The day after the window closed, run now: the device is found overdue.
    await page.get_by_label("Day", exact=True).fill((closed.closes + timedelta(days=1)).isoformat())
    await page.get_by_role("button", name="Run the reminders").click()
    await expect(page.get_by_role("status")).to_contain_text("Devices found overdue: ")
    row = page.get_by_role("row").filter(has_text=serial)
    await expect(row).to_contain_text(customer)
    await accessible(page, "office-readings-en")

    await row.get_by_label("Counters").fill("mono=150")  # the colour counter left out: refused
    await row.get_by_role("button", name="Record estimate").click()
    row = page.get_by_role("row").filter(has_text=serial)
    await expect(row.locator(".field-error")).to_have_text("Please enter every counter of the device at once.")
    await row.get_by_label("Counters").fill("mono=150, color=20")
    await row.get_by_role("button", name="Record estimate").click()
    await expect(page.get_by_role("status")).to_have_text("The estimate is recorded.")
    device = await stack.db("metering").devices.find_one({"serial_number": serial})
    assert device is not None
    estimate = await stack.db("metering").readings.find_one({"device_id": device["_id"], "source": "estimate"})
    assert estimate is not None and estimate["reading_date"] == closed.period_end.isoformat()

    # The vendor's ERP export as csv: each row saved or refused on its own, and why.
    await page.get_by_role("link", name="Uploads").click()
    await page.get_by_role("button", name="Upload", exact=True).click()  # no file: refused beside the field
    await expect(page.locator("#file-error")).to_have_text("Please choose a csv or xlsx file.")
    await accessible(page, "office-uploads-refused-en")
    new, unknown, nobodys = random_serial("AK5A"), random_serial("ZZ9Z"), random_serial("AK5A")
    rows = ["serial_number;model;customer_number;street;postal_code;city;country;counters;counters_date",
            f"{new};ES5431dn;{customer};Neumarkt 5;01067;Dresden;DE;mono=10, color=2;{date.today().isoformat()}",
            f"{unknown};XX-1;{customer};Neumarkt 5;01067;Dresden;DE;;",
            f"{nobodys};ES5431dn;;Neumarkt 5;01067;Dresden;DE;;"]
    await page.get_by_label("What the file holds").select_option("installed_base")
    await page.get_by_label("File", exact=True).set_input_files(
        {"name": "erp.csv", "mimeType": "text/csv", "buffer": "\n".join(rows).encode()})
    await page.get_by_role("button", name="Upload", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("Rows saved: 1 of 3.")
    await expect(page.get_by_role("row").filter(has_text=new)).to_contain_text("Saved")
    await expect(page.get_by_role("row").filter(has_text=unknown)).to_contain_text("Refused")
    await expect(page.get_by_role("row").filter(has_text=nobodys)).to_contain_text(
        "customer_number: This field is required.")
    await accessible(page, "office-uploads-en")
    assert await stack.db("registration").devices.find_one({"serial_number": new}) is not None

    # The consumables of a model as xlsx.
    book = openpyxl.Workbook()
    book.active.append(["model", "article_number", "description", "kind", "color"])
    book.active.append(["C332", "46508712", "TONER-K-C332-3.5K", "toner", "black"])
    sheet = io.BytesIO()
    book.save(sheet)
    await page.get_by_label("What the file holds").select_option("consumables")
    await page.get_by_label("File", exact=True).set_input_files({
        "name": "c332.xlsx", "buffer": sheet.getvalue(),
        "mimeType": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"})
    await page.get_by_role("button", name="Upload", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("Rows saved: 1 of 1.")
    await context.close()
