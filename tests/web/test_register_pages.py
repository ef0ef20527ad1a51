"""The reminder mail's links in the browser: its personal readings link opens the reminder's devices without signing
in, each counter with its last value, and turns what is typed in into readings (a refused device told beside its
fields, each reading stored once); its unsubscribe link turns one device's reminders off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, FilePayload, Locator, Page, expect

from gateway.cookies import SESSION_COOKIE
from services.metering import periods
from tests.builders import PDF, random_id, random_serial
from tests.e2e.conftest import SignedUp, Stack
from tests.readmodels import today
from tests.support import eventually, plain_text
from tests.web.conftest import accessible, link_in_browser, mail_link, new_context

pytestmark = pytest.mark.asyncio(loop_scope="module")

OFFICE = {"name": "Zimmermann GmbH", "street": "Hauptstraße 1", "postal_code": "10115", "city": "Berlin",
          "country": "DE"}
LAST = {"mono": 4500, "color": 5380}


@dataclass
class Reminded:
    """A customer whose user got the reading reminder of three devices."""

    customer: str
    person: SignedUp
    serials: list[str]
    device_ids: dict[str, str]  # serial -> device id
    text: str  # the mail's text

    def readings_link(self) -> str:
        return mail_link(self.text, "/readings?token=")

    def unsubscribe_link(self, serial: str) -> str:
        """The unsubscribe link listed after the device's serial number."""
        return mail_link(self.text[self.text.index(serial):], "/unsubscribe?token=")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reminded(stack: Stack) -> Reminded:
    customer = random_id("C")
    contract = {"contract_number": "K-1", "type": "page_price", "billing_period": "monthly",
                "start_date": (today() - timedelta(days=800)).isoformat()}
    await stack.portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": "Zimmermann GmbH", "contracts": [contract]}, token=stack.operator)
    last_date = (today() - timedelta(days=45)).isoformat()
    serials = sorted(random_serial("AK6C") for _ in range(3))
    await stack.portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": serial, "model": "C332", "customer_number": customer, "contract_number": "K-1",
        "location": OFFICE, "counters": [{"name": name, "value": value, "date": last_date}
                                         for name, value in LAST.items()]} for serial in serials]},
        token=stack.operator)
    metering = stack.db("metering")

    async def known() -> bool:  # accounts (for the sign-up) and metering (for the reminder) learn the devices
        return (await stack.db("accounts").installed_base.find_one({"_id": serials[0]}) is not None
                and await metering.customers.find_one({"_id": customer}) is not None
                and await metering.devices.count_documents({"customer_number": customer,
                                                            "baseline.mono.value": LAST["mono"]}) == 3)
    await eventually(known, timeout=30)
    person = await stack.sign_up("de", customer_number=customer, serial_number=serials[0])
    if person.status != "active":
        await stack.approve(person)
    window = periods.Window(periods.period_end(today(), "monthly"))
    ran = await stack.portal.call("metering.operator.run_reminders", {"as_of": window.opens.isoformat()},
                                  token=stack.operator)
    assert ran["reminders"] == 1
    mail = await stack.mail(person.email, "Zählerstände")
    device_ids = {device["serial_number"]: device["_id"]
                  async for device in metering.devices.find({"customer_number": customer})}
    return Reminded(customer, person, serials, device_ids, plain_text(mail))


def device_box(page: Page, serial: str) -> Locator:
    return page.locator("fieldset", has_text=serial)


async def test_the_readings_link_opens_the_devices_without_sign_in_and_stores_each_reading_once(
        stack: Stack, gateway_url: str, browser: Browser, reminded: Reminded) -> None:
    refused, accepted, later = reminded.serials
    context = await new_context(browser, "de")
    page = await context.new_page()
    await page.goto(link_in_browser(reminded.readings_link(), gateway_url))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Zählerstände")
    for serial in reminded.serials:  # pre-filled: serial, model, location, each counter's last value
        box = device_box(page, serial)
        await expect(box).to_contain_text("C332")
        await expect(box).to_contain_text("Hauptstraße 1, 10115 Berlin")
        await expect(box.get_by_label("Schwarzweiß")).to_have_value("")
        await expect(box).to_contain_text("Letzter Stand: 4.500 am")
        await expect(box).to_contain_text("Letzter Stand: 5.380 am")
    await accessible(page, "link-readings-de")

    # Not a number: nothing is sent, the message beside that field, what was typed kept.
    await device_box(page, refused).get_by_label("Schwarzweiß").fill("4000")
    await device_box(page, refused).get_by_label("Farbe").fill("5400")
    await device_box(page, accepted).get_by_label("Schwarzweiß").fill("4 600")
    await device_box(page, accepted).get_by_label("Farbe").fill("5400")
    await device_box(page, later).get_by_label("Schwarzweiß").fill("zwölf")
    await page.get_by_role("button", name="Zählerstände senden").click()
    await expect(device_box(page, later).locator(".field-error")).to_have_text(
        "Bitte geben Sie eine ganze Zahl ein.")
    await expect(device_box(page, later).get_by_label("Schwarzweiß")).to_have_attribute("aria-invalid", "true")
    await expect(device_box(page, accepted).get_by_label("Schwarzweiß")).to_have_value("4 600")
    assert await stack.db("metering").readings.count_documents({"device_id": {"$in": list(
        reminded.device_ids.values())}}) == 0

    # Lower than the last value: that device refused beside its fields, the other one stored, the empty one not sent.
    await device_box(page, later).get_by_label("Schwarzweiß").fill("")
    await page.get_by_role("button", name="Zählerstände senden").click()
    await expect(device_box(page, refused).locator(".field-error")).to_contain_text("niedriger als der letzte")
    await expect(device_box(page, refused).get_by_label("Schwarzweiß")).to_have_value("4000")
    await expect(device_box(page, accepted)).to_contain_text("Zählerstand eingegangen.")
    await expect(device_box(page, accepted)).to_contain_text("Letzter Stand: 4.600 am")
    await expect(page.locator("#error-summary")).to_contain_text("niedriger als der letzte")
    await accessible(page, "link-readings-refused-de")

    # Corrected: stored, and the page after it (a reload sends nothing again) marks the devices read.
    await device_box(page, refused).get_by_label("Schwarzweiß").fill("4700")
    await page.get_by_role("button", name="Zählerstände senden").click()
    await expect(page.get_by_role("status").first).to_contain_text("Vielen Dank")
    await expect(device_box(page, refused)).to_contain_text("Zählerstand eingegangen.")
    await page.reload()
    await expect(device_box(page, later).get_by_label("Schwarzweiß")).to_be_visible()
    await context.close()

    readings = stack.db("metering").readings
    for serial in (refused, accepted):
        assert await readings.count_documents({"device_id": reminded.device_ids[serial]}) == 1, serial
    assert await readings.count_documents({"device_id": reminded.device_ids[later]}) == 0
    session = await stack.sign_in(reminded.person)
    for serial, mono in ((refused, 4700), (accepted, 4600)):
        history = await stack.portal.call("metering.history", {"device_id": reminded.device_ids[serial]},
                                          token=session)
        assert [{counter["counter"]: counter["value"] for counter in reading["counters"]}
                for reading in history["readings"]] == [{"mono": mono, "color": 5400}]


async def test_the_mails_unsubscribe_link_turns_the_devices_reminders_off_and_the_page_speaks_norwegian(
        stack: Stack, gateway_url: str, browser: Browser, reminded: Reminded) -> None:
    context = await new_context(browser, "nb")
    page = await context.new_page()
    await page.goto(link_in_browser(reminded.readings_link(), gateway_url))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Målerstander")
    await expect(device_box(page, reminded.serials[2]).get_by_label("Svart-hvitt")).to_be_visible()
    await accessible(page, "link-readings-nb")
    # The language picked on the page keeps the link.
    await page.get_by_label("Språk").select_option("de")
    await page.get_by_role("button", name="Bytt").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Zählerstände")
    await expect(device_box(page, reminded.serials[2]).get_by_label("Schwarzweiß")).to_be_visible()
    await page.get_by_label("Sprache").select_option("nb")
    await page.get_by_role("button", name="Wechseln").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Målerstander")

    # A link that is no link: its own page, not the devices of anyone.
    await page.goto(f"{gateway_url}/readings?token={'x' * 32}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Denne lenken er ikke lenger gyldig")
    await accessible(page, "link-invalid-nb")

    serial = reminded.serials[2]
    await page.goto(link_in_browser(reminded.unsubscribe_link(serial), gateway_url))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Ingen flere påminnelser")
    await accessible(page, "unsubscribe-nb")
    await page.get_by_role("button", name="Stopp påminnelsene").click()
    await expect(page.get_by_role("status")).to_be_visible()
    await context.close()

    device_id = reminded.device_ids[serial]

    async def off_in_metering() -> bool:
        device = await stack.db("metering").devices.find_one({"_id": device_id})
        return device is not None and device.get("reminder_recipients") == []
    await eventually(off_in_metering, timeout=20)
    session = await stack.sign_in(reminded.person)
    assert (await stack.portal.call("registration.get_device", {"device_id": device_id},
                                    token=session))["reminders"] is False
    other = await stack.portal.call("registration.get_device", {"device_id": reminded.device_ids[reminded.serials[1]]},
                                    token=session)
    assert other["reminders"] is True

    # Without a link, /readings is the signed-in customer's due readings.
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        anonymous = await client.get("/readings")
        assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/sign-in?next=/readings/due")
        client.cookies.set(SESSION_COOKIE, session)
        signed_in = await client.get("/readings")
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/readings/due")


async def signed_in_context(browser: Browser, gateway_url: str, session: str, language: str) -> BrowserContext:
    context = await new_context(browser, language)
    await context.add_cookies([{"name": SESSION_COOKIE, "value": session, "url": gateway_url}])
    return context


async def test_a_customer_registers_a_bought_device_and_claims_one_under_contract_with_its_neighbour(
        stack: Stack, gateway_url: str, browser: Browser, reminded: Reminded) -> None:
    context = await signed_in_context(browser, gateway_url, await stack.sign_in(reminded.person), "de")
    page = await context.new_page()
    await page.goto(f"{gateway_url}/devices/new")  # the vendor's terms first, then the page asked for
    await page.get_by_label("Ich akzeptiere die Nutzungsbedingungen").check()
    await page.get_by_label("Ich akzeptiere die Datenschutzerklärung").check()
    await page.get_by_role("button", name="Akzeptieren und weiter").click()
    await expect(page).to_have_url(f"{gateway_url}/devices/new")
    # The catalogue's models are offered as the name is typed; a name no model has offers the ones that contain it.
    assert "ES5462 MFP" in await page.locator("#models option").evaluate_all("options => options.map(o => o.value)")
    await page.get_by_label("Modell Ihres Geräts").fill("c33")
    await page.get_by_role("button", name="Wo finde ich die Seriennummer?").click()
    await expect(page.get_by_role("status")).to_contain_text("Für das Modell „c33“ haben wir keinen Hinweis.")
    await page.get_by_role("navigation", name="Modelle mit ähnlichem Namen:").get_by_role("link", name="C332").click()
    await expect(page.get_by_role("status")).to_contain_text("On the label inside the front cover.")
    await expect(page.get_by_label("Modell Ihres Geräts")).to_have_value("C332")
    await accessible(page, "register-device-de")

    serial = random_serial("AK6C")
    proof = FilePayload(name="rechnung.pdf", mimeType="application/pdf", buffer=PDF)
    await page.get_by_label("Seriennummer").fill(serial)
    await page.get_by_label("Kaufdatum").fill((today() - timedelta(days=10)).isoformat())
    await page.get_by_label("Kaufbeleg").set_input_files(proof)
    await page.get_by_role("button", name="Gerät registrieren").click()  # the warranty statement not accepted
    await expect(page.locator("#accept_warranty-error")).to_have_text(
        "Bitte akzeptieren Sie die Garantieerklärung, um das Gerät zu registrieren.")
    await expect(page.get_by_label("Seriennummer")).to_have_value(serial)
    await accessible(page, "register-device-refused-de")
    await page.get_by_label("Kaufbeleg").set_input_files(proof)
    await page.get_by_label("Ich habe die Garantieerklärung gelesen und akzeptiere sie").check()
    await page.get_by_role("button", name="Gerät registrieren").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Gerät registriert")
    await expect(page.locator("dl.facts")).to_contain_text("36 Monate")
    await accessible(page, "register-done-de")
    registered_page = page.url
    await context.close()

    # Someone of no customer yet claims a device under contract by serial and postcode, then asks for its neighbour.
    customer, serials = random_id("C"), sorted(random_serial("AK5A") for _ in range(2))
    await stack.portal.call("accounts.operator.provision_customer", {"customer_number": customer, "name": "Praxis"},
                            token=stack.operator)
    await stack.portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": serial, "model": "ES5431dn", "customer_number": customer,
        "location": {**OFFICE, "postal_code": "0150", "city": "Oslo", "country": "NO"}} for serial in serials]},
        token=stack.operator)
    person = await stack.sign_up("nb")
    if person.status != "active":
        await stack.approve(person)
    context = await signed_in_context(browser, gateway_url, await stack.sign_in(person), "nb")
    page = await context.new_page()
    await page.goto(f"{gateway_url}/devices/claim")
    for box in await page.get_by_role("checkbox").all():
        await box.check()
    await page.get_by_role("button", name="Godta og fortsett").click()
    await expect(page).to_have_url(f"{gateway_url}/devices/claim")
    await page.get_by_label("Serienummer").fill(serials[0])
    await page.get_by_label("Postnummer der enheten står").fill("0151")
    await page.get_by_role("button", name="Legg til enheten").click()
    await expect(page.locator("#postal_code-error")).to_be_visible()
    await expect(page.get_by_label("Serienummer")).to_have_value(serials[0])
    await accessible(page, "register-claim-refused-nb")
    await page.get_by_label("Postnummer der enheten står").fill("0150")
    await page.get_by_role("button", name="Legg til enheten").click()
    await expect(page.get_by_role("status")).to_contain_text(serials[0])
    await accessible(page, "register-claimed-nb")
    await page.get_by_label(f"ES5431dn · {serials[1]}").check()
    await page.get_by_role("button", name="Be om disse enhetene").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Forespørsel sendt")
    answer = await page.goto(registered_page)  # another customer's device: no such page
    assert answer is not None and answer.status == 404
    await context.close()
    pending = await stack.portal.call("registration.operator.list_requests", {"kind": "same_location_claim"},
                                      token=stack.operator)
    assert any(serials[1] in str(request) for request in pending["items"])
