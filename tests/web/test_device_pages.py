"""A customer's device page in the browser: its facts, renaming it, its reminders off and on, a meter reading the
OKI way (the new counters, a preview of the printed pages, then "Accept") that the history table and chart show; a
reading below the last one refused beside its counter with nothing stored; the other forms' refusals; the readings
due; the removal after a confirmation; and another customer's device is the 404 page."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.builders import random_id, random_serial
from tests.e2e.conftest import SignedUp, Stack
from tests.support import eventually
from tests.web.conftest import accessible, new_context, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

OFFICE = {"name": "Empfang", "street": "Hauptstraße 1", "postal_code": "01067", "city": "Dresden", "country": "DE"}
TERMS = {"de": ("Ich akzeptiere die Nutzungsbedingungen", "Ich akzeptiere die Datenschutzerklärung",
                "Akzeptieren und weiter"),
         "en": ("I accept the terms and conditions", "I accept the privacy notice", "Accept and continue")}


async def customer_with_a_device(stack: Stack, language: str) -> tuple[SignedUp, str, str]:
    """A customer of the vendor's ERP under a monthly contract with one ES5431dn (mono 100, colour 10 two months
    ago), and a person of it who signed up with the customer and serial number: (person, serial, contract)."""
    customer, serial, contract = random_id("C"), random_serial("AK5A"), random_id("K")
    today = datetime.now(UTC).date()
    last = (today - timedelta(days=60)).isoformat()
    await stack.portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": "Kanzlei", "contracts": [{
            "contract_number": contract, "type": "flat_rate", "start_date": (today - timedelta(days=400)).isoformat(),
            "end_date": (today + timedelta(days=1000)).isoformat(), "billing_period": "monthly",
            "includes_consumables": True}]}, token=stack.operator)
    await stack.portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": serial, "model": "ES5431dn", "customer_number": customer, "contract_number": contract,
        "location": OFFICE,
        "counters": [{"name": "mono", "value": 100, "date": last}, {"name": "color", "value": 10, "date": last}]}]},
        token=stack.operator)

    async def known() -> bool:  # the other services learn the installed base and the customer from events
        found = [await stack.db(service).devices.find_one({"serial_number": serial})
                 for service in ("metering", "ticketing", "ordering")]
        return (await stack.db("accounts").installed_base.find_one({"_id": serial}) is not None
                and await stack.db("ordering").customers.find_one({"_id": customer}) is not None
                and None not in found)
    await eventually(known, timeout=30)
    person = await stack.sign_up(language, customer_number=customer, serial_number=serial)
    assert person.status == "active"
    return person, serial, contract


async def signed_in(browser: Browser, gateway_url: str, person: SignedUp) -> tuple[BrowserContext, Page]:
    """The person in a browser of their language, signed in, the terms accepted, on the dashboard."""
    terms, privacy, accept = TERMS[person.language]
    context = await new_context(browser, person.language)
    page = await context.new_page()
    await sign_in(page, gateway_url, person.email, person.request["password"])
    await page.get_by_label(terms).check()
    await page.get_by_label(privacy).check()
    await page.get_by_role("button", name=accept).click()
    await expect(page).to_have_url(re.compile(r"/$"))
    return context, page


async def device_of(stack: Stack, person: SignedUp, serial: str) -> dict[str, Any]:
    token = await stack.sign_in(person)
    return await stack.portal.call("registration.get_device", {"serial_number": serial}, token=token)


async def history_of(stack: Stack, person: SignedUp, device_id: str) -> dict[str, Any]:
    token = await stack.sign_in(person)
    return await stack.portal.call("metering.history", {"device_id": device_id}, token=token)


async def test_a_customer_renames_the_device_turns_reminders_off_and_on_and_reports_a_reading_after_its_preview(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    person, serial, contract = await customer_with_a_device(stack, "de")
    device = await device_of(stack, person, serial)
    token = await stack.sign_in(person)
    contact = {"name": "Thomas Lienert", "email": person.email}
    ticket, order = await asyncio.gather(
        stack.portal.call("ticketing.open_ticket", {"device_id": device["device_id"], "contact": contact,
                                                    "description": "Papierstau im Fach 2"}, token=token),
        stack.portal.call("ordering.place_order", {"lines": [{"device_id": device["device_id"],
                                                              "article_number": "44973512", "quantity": 1}],
                                                   "contact": contact}, token=token))
    context, page = await signed_in(browser, gateway_url, person)
    await page.get_by_role("link", name="ES5431dn").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("ES5431dn")
    await expect(page.get_by_text(contract)).to_be_visible()
    await expect(page.get_by_role("link", name=ticket["ticket_number"])).to_have_attribute(
        "href", f"/tickets/{ticket['ticket_number']}")
    await expect(page.get_by_text(f"{order['order_number']} · Bestellt")).to_be_visible()
    await expect(page.get_by_text("Noch keine Zählerstände.")).to_be_visible()
    await accessible(page, "device-de")

    # The name: too long is refused beside the field, then saved.
    await page.get_by_label("Name des Geräts").fill("x" * 101)
    await page.get_by_role("button", name="Name speichern").click()
    await expect(page.locator("#friendly_name-error")).to_be_visible()
    await page.get_by_label("Name des Geräts").fill("Drucker Empfang")
    await page.get_by_role("button", name="Name speichern").click()
    await expect(page.get_by_role("status")).to_have_text("Der Name des Geräts ist gespeichert.")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Drucker Empfang")

    # Reminders off, then on again: the device's setting follows each time.
    reminders = page.get_by_label("Erinnern Sie mich, wenn der Zählerstand dieses Geräts fällig ist")
    await expect(reminders).to_be_checked()
    await reminders.uncheck()
    await page.get_by_role("button", name="Erinnerungen speichern").click()
    await expect(page.get_by_role("status")).to_contain_text("ausgeschaltet")
    await expect(reminders).not_to_be_checked()
    assert (await device_of(stack, person, serial))["reminders"] is False
    await reminders.check()
    await page.get_by_role("button", name="Erinnerungen speichern").click()
    await expect(page.get_by_role("status")).to_contain_text("eingeschaltet")
    device = await device_of(stack, person, serial)
    assert device["reminders"] is True and device["friendly_name"] == "Drucker Empfang"

    # OKI's reading: the last values shown, the new ones typed, the printed pages previewed, then accepted.
    mono = page.get_by_role("row", name=re.compile("Schwarzweiß"))
    await expect(mono.get_by_role("cell", name="100", exact=True)).to_be_visible()
    await page.get_by_label("Schwarzweiß").fill("1600")
    await page.get_by_label("Farbe").fill("60")
    await page.get_by_role("button", name="Vorschau").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Zählerstand prüfen")
    await expect(page.get_by_role("row", name=re.compile("Schwarzweiß")).locator("td.pages")).to_have_text("1.500")
    await expect(page.get_by_role("row", name=re.compile("Farbe")).locator("td.pages")).to_have_text("50")
    await accessible(page, "device-reading-preview-de")
    assert (await history_of(stack, person, device["device_id"]))["readings"] == []  # a preview stores nothing
    await page.get_by_role("button", name="Ändern").click()  # back to the form, the values kept
    await expect(page.get_by_label("Schwarzweiß")).to_have_value("1600")
    await page.get_by_label("Farbe").fill("60")
    await page.get_by_role("button", name="Vorschau").click()
    await page.get_by_role("button", name="Akzeptieren").click()
    await expect(page.get_by_role("status")).to_have_text("Vielen Dank: Der Zählerstand ist übermittelt.")

    history = await history_of(stack, person, device["device_id"])
    assert [(counter["counter"], counter["value"], counter["printed_pages"])
            for counter in history["readings"][0]["counters"]] == [("mono", 1600, 1500), ("color", 60, 50)]
    assert len(history["readings"]) == 1
    chart = page.get_by_role("img", name="Gedruckte Seiten je Abrechnungszeitraum")
    await expect(chart).to_be_visible()
    assert await chart.locator("rect[height]").count() >= 2
    readings = page.get_by_role("table", name="Zählerstände")
    await expect(readings.get_by_role("cell", name=re.compile(r"^1\.600"))).to_be_visible()
    period = page.get_by_role("table", name="Gedruckte Seiten je Abrechnungszeitraum")
    await expect(period.get_by_role("cell", name="1.550", exact=True)).to_be_visible()
    await accessible(page, "device-with-reading-de")
    await context.close()


async def test_a_reading_below_the_last_is_refused_beside_its_counter_and_another_customer_sees_no_such_device(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    (person, serial, _), (other, _, _) = await asyncio.gather(customer_with_a_device(stack, "en"),
                                                             customer_with_a_device(stack, "en"))
    device = await device_of(stack, person, serial)
    context, page = await signed_in(browser, gateway_url, person)
    await page.goto(f"{gateway_url}/devices/{device['device_id']}")

    # Not a number, then below the last value: each time the reason beside the counter, nothing stored.
    await page.get_by_label("Black and white").fill("12a")
    await page.get_by_label("Colour").fill("20")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("#counter-mono-error")).to_have_text("Please enter a whole number.")
    await expect(page.get_by_label("Colour")).to_have_value("20")  # kept, not typed again
    await page.get_by_label("Black and white").fill("50")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("#counter-mono-error")).to_contain_text("lower than the last reading")
    await expect(page.locator("#counter-color-error")).to_have_count(0)
    await expect(page.get_by_label("Black and white")).to_have_attribute("aria-invalid", "true")
    await accessible(page, "device-reading-refused-en")
    assert (await history_of(stack, person, device["device_id"]))["readings"] == []

    # The reminders' address and the address change refuse what they cannot use, beside the field.
    await page.get_by_label("Send the reminders to this e-mail address").fill("not an address")
    await page.get_by_role("button", name="Save the reminders").click()
    await expect(page.locator("#reminder_email-error")).to_have_text("Please enter a valid e-mail address.")
    await page.get_by_role("link", name="Request an address change").click()
    await accessible(page, "device-address-en")
    await page.get_by_label("Street and number").fill("")
    await page.get_by_role("button", name="Send the request").click()
    await expect(page.locator("#street-error")).to_have_text("This field is required.")
    await expect(page.locator("#reason-error")).to_have_text("This field is required.")
    await page.get_by_label("Street and number").fill("Neumarkt 2")
    await page.get_by_label("Why does the address change?").fill("We moved to the new office.")
    await page.get_by_role("button", name="Send the request").click()
    await expect(page.get_by_role("status")).to_contain_text("Your address change is sent.")
    pending = await stack.portal.call("registration.operator.list_requests", {"kind": "address_change",
                                                                               "page_size": 200},
                                      token=stack.operator)
    assert any(request["address"]["street"] == "Neumarkt 2" and request["devices"][0]["serial_number"] == serial
               for request in pending["items"])

    # The readings due link to the device's reading form.
    await page.get_by_role("link", name="All readings due").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Readings due")
    await accessible(page, "readings-due-en")

    # Another customer opening this device's address gets the 404 page, and so do its forms.
    stranger, stranger_page = await signed_in(browser, gateway_url, other)
    response = await stranger_page.goto(f"{gateway_url}/devices/{device['device_id']}")
    assert response is not None and response.status == 404
    await expect(stranger_page.get_by_role("heading", level=1)).to_have_text("Not found")
    response = await stranger_page.goto(f"{gateway_url}/devices/{device['device_id']}/remove")
    assert response is not None and response.status == 404

    # Removing the device asks first; then it is gone from the customer's view.
    await page.goto(f"{gateway_url}/devices/{device['device_id']}")
    await page.get_by_role("link", name="Remove this device from the portal").click()
    await accessible(page, "device-remove-en")
    await page.get_by_role("link", name="Keep it").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("ES5431dn")
    await page.get_by_role("link", name="Remove this device from the portal").click()
    await page.get_by_role("button", name="Remove the device").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("The device is removed")
    response = await page.goto(f"{gateway_url}/devices/{device['device_id']}")
    assert response is not None and response.status == 404
    await asyncio.gather(context.close(), stranger.close())
