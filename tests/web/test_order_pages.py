"""Orders and service requests in the browser, as OKI's order pages and OneRicoh's FAQ lead a customer: toner for
two printers at one address (one order, one delivery address), its number, the order in the list and its tracking once
the vendor ships it; a service request, the open one shown with its number when a second is tried, a note, the
cancellation; and another customer's order and request as no page at all."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, expect

from gateway.web import i18n
from tests.builders import random_id, random_serial
from tests.e2e.conftest import SignedUp, Stack
from tests.support import eventually, retried_while
from tests.web.conftest import accessible, new_context, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

TONER_BLACK = "44973512"  # the OKI seed's order form for an ES5431dn
WAREHOUSE_STREET = "Lagerweg 5"
TRACKING_URL = "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode=00340434161094042557"
OFFICES = {"de": {"name": "Zimmermann GmbH", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf",
                  "country": "DE"},
           "nb": {"name": "Nordmann AS", "street": "Karl Johans gate 1", "postal_code": "0154", "city": "Oslo",
                  "country": "NO"}}


@dataclass
class Company:
    """A customer of the vendor's ERP with a consumables contract, two printers at one address and a third elsewhere,
    and a person of it signed up in `language` who accepted the terms."""

    language: str
    person: SignedUp
    token: str
    devices: list[dict[str, Any]]
    found: dict[str, str] = field(default_factory=dict)  # what one test leaves for the next

    def t(self, text: str, **values: Any) -> str:
        """A page text in the person's language, from the portal's catalogues."""
        translated = i18n.translations(self.language).gettext(text)
        return translated % values if values else translated


async def company(stack: Stack, language: str) -> Company:
    portal, operator, today = stack.portal, stack.operator, datetime.now(UTC).date()
    customer, contract = random_id("C"), random_id("K")
    serials = [random_serial("AK5A") for _ in range(3)]  # two at the office, one at the warehouse
    await portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": OFFICES[language]["name"], "contracts": [{
            "contract_number": contract, "type": "page_price", "start_date": (today - timedelta(days=400)).isoformat(),
            "billing_period": "quarterly", "includes_consumables": True}]}, token=operator)
    locations = [{**OFFICES[language], "building_location": "Empfang"},
                 {**OFFICES[language], "building_location": "Kopierraum"},
                 {**OFFICES[language], "name": "Lager", "street": WAREHOUSE_STREET}]
    await portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": serial, "model": "ES5431dn", "customer_number": customer, "contract_number": contract,
        "location": location} for serial, location in zip(serials, locations, strict=True)]}, token=operator)

    async def known() -> bool:  # accounts learns the installed base from registration's event
        return await stack.db("accounts").installed_base.find_one({"_id": serials[0]}) is not None
    await eventually(known, timeout=30)
    person = await stack.sign_up(language, country=OFFICES[language]["country"], customer_number=customer,
                                 serial_number=serials[0])
    assert person.status == "active"
    token = await stack.sign_in(person)
    await portal.call("accounts.accept_terms", {"terms_version": "2026", "privacy_version": "2026"}, token=token)
    devices = [await portal.call("registration.get_device", {"serial_number": serial}, token=token)
               for serial in serials]

    async def known_everywhere() -> bool:  # ordering and ticketing learn devices and contracts from events
        orderable = await retried_while(["not_found"], lambda: portal.call(
            "ordering.list_orderable", {"device_id": devices[1]["device_id"]}, token=token))
        ticketing = await stack.db("ticketing").devices.find_one({"_id": devices[0]["device_id"]})
        return bool(orderable["covered"]) and ticketing is not None
    await eventually(known_everywhere, timeout=40, step=0.5)
    return Company(language, person, token, devices)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def firms(stack: Stack) -> dict[str, Company]:
    return {language: await company(stack, language) for language in ("de", "nb")}


async def signed_in(browser: Browser, gateway_url: str, firm: Company, path: str) -> tuple[BrowserContext, Page]:
    context = await new_context(browser, firm.language)
    page = await context.new_page()
    await sign_in(page, gateway_url, firm.person.request["username"], firm.person.request["password"], path)
    await expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    return context, page


async def test_a_customer_orders_toner_for_two_printers_at_one_address_and_follows_it_to_its_tracking(
        stack: Stack, gateway_url: str, browser: Browser, firms: dict[str, Company]) -> None:
    firm = firms["de"]
    first, second, elsewhere = firm.devices
    context, page = await signed_in(browser, gateway_url, firm, "/orders")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Bestellungen")
    await expect(page.get_by_text("Sie haben noch nichts bestellt.")).to_be_visible()
    await accessible(page, "orders-empty-de")

    # A link naming a printer at the warehouse too: one order is one delivery address, said beside that printer.
    await page.goto(f"{gateway_url}/orders/new?device={first['device_id']}&device={elsewhere['device_id']}")
    for device in (first, elsewhere):
        await page.locator(f"#qty-{device['device_id']}-{TONER_BLACK}").fill("1")
    await page.get_by_label("Vor- und Nachname").fill("Christa Zimmermann")
    await page.get_by_label(firm.t("E-mail address")).fill(firm.person.email)
    await page.get_by_role("button", name="Auftrag beenden").click()
    await expect(page.locator(f"#device-{elsewhere['device_id']}-error")).to_contain_text(
        "Pro Bestellung kann nur eine Lieferadresse verarbeitet werden")
    await accessible(page, "order-two-addresses-de")
    await page.goto(f"{gateway_url}/orders")

    # OKI's "Maschine wählen": a printer, then the other one at the same address ticked beside it.
    await page.get_by_label("Verbrauchsmaterial bestellen für").select_option(first["device_id"])
    await page.get_by_role("button", name=firm.t("Continue")).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Verbrauchsmaterial bestellen")
    await page.get_by_label(second["serial_number"]).check()
    await page.get_by_role("button", name="Verbrauchsmaterial dieser Geräte anzeigen").click()
    await expect(page.get_by_role("group", name=f"ES5431dn · {second['serial_number']}")).to_be_visible()
    await expect(page.get_by_text("Hansaallee 187").first).to_be_visible()
    await accessible(page, "order-new-de")

    # Eleven toners are more than a line may hold: refused beside the quantity, in German.
    black = [page.locator(f"#qty-{device['device_id']}-{TONER_BLACK}") for device in (first, second)]
    await black[0].fill("11")
    await black[1].fill("1")
    await expect(page.get_by_label("Kontaktperson")).to_contain_text("Christa Zimmermann")  # added last time
    await page.get_by_label("z. Hd.").fill("Frau Zimmermann")
    await page.get_by_label("Diese beiden Zeilen für die nächsten Bestellungen").check()
    await page.get_by_label("Ihr Zeichen").fill("Q4")
    await page.get_by_role("button", name="Auftrag beenden").click()
    error = page.locator(f"#qty-{first['device_id']}-{TONER_BLACK}-error")
    await expect(error).to_have_text(firm.t("This number is too large."))
    await expect(black[1]).to_have_value("1")  # kept, not typed again
    await accessible(page, "order-refused-de")

    await black[0].fill("1")
    await page.get_by_role("button", name="Auftrag beenden").click()
    await expect(page).to_have_url(re.compile(r"/orders/OR-[\w-]+\?placed=1$"))
    number = re.search(r"/orders/(OR-[\w-]+)", page.url).group(1)  # type: ignore[union-attr]
    firm.found["order"] = number
    await expect(page.get_by_role("status")).to_contain_text(f"Ihre Auftragsnummer ist {number}")
    await expect(page.get_by_text("Noch nicht versandt.")).to_be_visible()
    await accessible(page, "order-placed-de")

    # OneRicoh's quick search: the order number typed on the dashboard opens the order.
    await page.goto(f"{gateway_url}/")
    await page.get_by_role("searchbox").fill(number.lower())
    await page.get_by_role("button", name="Suchen").click()
    await expect(page).to_have_url(re.compile(re.escape(f"/orders/{number}") + "$"))

    await page.get_by_role("link", name="Alle Bestellungen").click()
    await expect(page.get_by_role("link", name=number)).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile(number))).to_contain_text("Bestellt")

    # The same toner again while the first is on its way: the earlier order named beside it; "z. Hd." and the
    # contact are the ones kept.
    await page.goto(f"{gateway_url}/orders/new?device={first['device_id']}")
    await expect(page.get_by_label("z. Hd.")).to_have_value("Frau Zimmermann")
    await expect(page.get_by_label("Kontaktperson")).to_contain_text("Christa Zimmermann")
    await black[0].fill("1")
    await page.get_by_role("button", name="Auftrag beenden").click()
    await expect(error).to_contain_text(number)
    await expect(page.get_by_label("Trotzdem erneut bestellen")).to_be_visible()

    # The vendor ships it; the order page shows carrier, number and the link to follow the parcel.
    shipped = await stack.portal.call("ordering.operator.mark_shipped", {
        "order_number": number, "carrier": "DHL", "tracking_number": "00340434161094042557",
        "tracking_url": TRACKING_URL}, token=stack.operator)
    assert shipped["status"] == "shipped"
    await page.goto(f"{gateway_url}/orders/{number}")
    await expect(page.locator("dd.status")).to_have_text("Versandt")
    await expect(page.get_by_role("link", name="Sendung bei DHL verfolgen")).to_have_attribute("href", TRACKING_URL)
    await expect(page.get_by_text("00340434161094042557")).to_be_visible()
    await accessible(page, "order-shipped-de")
    await context.close()


async def test_a_service_request_is_opened_found_again_with_its_number_noted_and_cancelled(
        stack: Stack, gateway_url: str, browser: Browser, firms: dict[str, Company]) -> None:
    firm = firms["nb"]
    device = firm.devices[0]
    context, page = await signed_in(browser, gateway_url, firm, "/tickets")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Serviceforespørsler")
    await accessible(page, "tickets-empty-nb")
    await page.get_by_label("Ny serviceforespørsel for").select_option(device["device_id"])
    await page.get_by_role("button", name=firm.t("Continue")).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Ny serviceforespørsel")
    await accessible(page, "ticket-new-nb")
    stale = await context.new_page()  # the same form in a second tab, kept open
    await stale.goto(page.url)

    # Without a description nothing is sent: the message beside the field, in Norwegian.
    await page.get_by_label("Hva gjelder det?").select_option("malfunction")
    await page.get_by_label("Fullt navn").fill("Kari Nordmann")
    await page.get_by_label(firm.t("E-mail address")).fill(firm.person.email)
    await page.get_by_label(firm.t("Phone")).fill("+47 22 00 00 00")
    await page.get_by_role("button", name="Send serviceforespørselen").click()
    await expect(page.locator("#description-error")).to_have_text(firm.t("This field is required."))
    await accessible(page, "ticket-refused-nb")
    await page.get_by_label(firm.t("Description")).fill("Papirstopp i skuff 2")
    await page.get_by_role("button", name="Send serviceforespørselen").click()
    await expect(page).to_have_url(re.compile(r"/tickets/\d+/1\?opened=1$"))
    number = re.search(r"/tickets/(\d+/1)", page.url).group(1)  # type: ignore[union-attr]
    await expect(page.get_by_role("status")).to_contain_text(number)
    await expect(page.locator("ol.track")).to_contain_text(firm.t("To be scheduled"))
    await accessible(page, "ticket-opened-nb")

    # The second tab tries a second request for the printer: the open one, with its number and room for more text.
    await stale.get_by_label(firm.t("Description")).fill("Skriveren piper")
    await stale.get_by_label("Fullt navn").fill("Kari Nordmann")
    await stale.get_by_label(firm.t("E-mail address")).fill(firm.person.email)
    await stale.get_by_role("button", name="Send serviceforespørselen").click()
    await expect(stale.get_by_role("link", name=firm.t("Service request %(number)s", number=number))).to_be_visible()
    await accessible(stale, "ticket-exists-nb")
    await stale.get_by_label(f"Mer informasjon til forespørsel {number}").fill("Også skuff 3")
    await stale.get_by_role("button", name="Legg til i forespørselen").click()
    await expect(stale.get_by_role("status")).to_have_text("Merknaden din er lagt til forespørselen.")
    await expect(stale.locator("ul.notes")).to_contain_text("Også skuff 3")
    contacts = await stack.portal.call("accounts.list_contacts", {}, token=firm.token)
    assert [contact["name"] for contact in contacts["items"]] == ["Kari Nordmann"]  # entered twice, kept once
    await stale.close()
    await page.goto(f"{gateway_url}/tickets/new?device={device['device_id']}")  # a third try: shown at once
    await expect(page.get_by_role("link", name=firm.t("Service request %(number)s", number=number))).to_be_visible()

    # Cancelled with a reason, while no technician is dispatched.
    await page.goto(f"{gateway_url}/tickets/{number}")
    await page.get_by_role("button", name="Kanseller forespørselen").click()
    await expect(page.locator("#reason-error")).to_have_text(firm.t("This field is required."))
    await page.get_by_label("Hvorfor trengs ikke forespørselen lenger?").fill("Løst selv")
    await page.get_by_role("button", name="Kanseller forespørselen").click()
    await expect(page.get_by_role("status")).to_have_text("Serviceforespørselen er kansellert.")
    await expect(page.locator("dd.status")).to_have_text(firm.t("Cancelled"))
    await expect(page.get_by_role("button", name="Kanseller forespørselen")).to_have_count(0)
    await accessible(page, "ticket-cancelled-nb")
    await page.get_by_role("link", name="Alle serviceforespørsler").click()
    await expect(page.get_by_role("row").filter(has_text=number)).to_contain_text(firm.t("Cancelled"))

    # The other printer's request, once the vendor dispatched a technician: who comes and when, and no more changes.
    opened = await stack.portal.call("ticketing.open_ticket", {
        "device_id": firm.devices[1]["device_id"], "description": "Strek på utskriftene",
        "contact": {"name": "Kari Nordmann", "email": firm.person.email}}, token=firm.token)
    eta = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=30, second=0, microsecond=0)
    await stack.portal.call("ticketing.operator.set_status", {
        "ticket_number": opened["ticket_number"], "status": "dispatched", "technician": "Ola Tekniker",
        "eta": eta.isoformat()}, token=stack.operator)
    await page.goto(f"{gateway_url}/tickets/{opened['ticket_number']}")
    await expect(page.locator("ol.track li")).to_have_count(2)
    await expect(page.locator("ol.track")).to_contain_text("Ola Tekniker")
    await expect(page.locator("ol.track")).to_contain_text(eta.strftime("%d.%m.%Y, 09:30 UTC"))  # nb, the portal in UTC
    await expect(page.get_by_role("button", name="Legg til merknaden")).to_have_count(0)
    await accessible(page, "ticket-dispatched-nb")
    await page.goto(f"{gateway_url}/tickets/new?device={firm.devices[1]['device_id']}")
    await expect(page.get_by_role("link", name=firm.t("Service request %(number)s",
                                                      number=opened["ticket_number"]))).to_be_visible()
    await expect(page.get_by_role("textbox")).to_have_count(0)

    # Another customer's order and request: no such page, as for numbers that do not exist.
    order = firms["de"].found.get("order")
    if order:
        await page.goto(f"{gateway_url}/orders/{order}")
        await expect(page.get_by_role("heading", level=1)).to_have_text(firm.t("Not found"))
        await accessible(page, "order-not-yours-nb")
    other, other_page = await signed_in(browser, gateway_url, firms["de"], "/tickets")
    response = await other_page.goto(f"{gateway_url}/tickets/{number}")
    assert response is not None and response.status == 404
    await expect(other_page.get_by_role("heading", level=1)).to_have_text("Nicht gefunden")
    await other.close()
    await context.close()
