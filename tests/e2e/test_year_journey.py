"""A customer's year as the seeds tell it, with all six services as processes and only the portal's client:
sign up and confirm from the mail, sign in, accept the terms (OKI handbook, steps 1-4), register a newly bought
printer with its proof of purchase, the meter-reading reminder and readings through its personal link (OKI
Seitenpreisvertrag, Canon), toner for the contract printer, a service request, the vendor shipping the toner and
dispatching a technician, and every mail exactly once in the person's language.

How the person comes to the contract printer differs per language, as it does between the seeds:
- de (Canon, OKI): customer number and the serial of a printer under contract: active at once;
- en (OMICRON FAQ 1.8): customer number and a serial the installed base does not know (the new printer's): an
  operator verifies the registration, and the person is told;
- nb (OneRicoh): a new customer without a number claims the contract printer with its serial and postcode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.metering import periods
from tests.builders import PDF, PNG, proof, random_id, random_serial
from tests.e2e.conftest import Stack
from tests.support import eventually, outcome, plain_text, retried_while

pytestmark = pytest.mark.asyncio(loop_scope="module")

READINGS_LINK = re.compile(r"https://portal\.example\.test/readings\?token=([A-Za-z0-9_-]+)")
TONER_BLACK = "44973512"  # the OKI seed's order form for an ES5431dn


@dataclass(frozen=True)
class Locale:
    country: str
    office: dict[str, str]
    proof: dict[str, str]
    problem: str
    # The notifier's mail name → a pattern only that mail's subject matches, in this language.
    subjects: dict[str, str]


LOCALES = {
    "de": Locale("DE", {"name": "Zimmermann GmbH", "street": "Hauptstraße 1", "postal_code": "01067",
                        "city": "Dresden", "country": "DE"},
                 proof(PDF, "Rechnung.pdf", "application/pdf"), "Papierstau in Fach 2",
                 {"account_confirmation": "^Bitte bestätigen Sie Ihre E-Mail-Adresse$",
                  "device_registration": r"^Ihr Gerät C332 \(AK6C\d+\) wurde registriert$",
                  "meter_reading_reminder": "^Bitte melden Sie Ihre Zählerstände",
                  "order_confirmation": "^Bestellbestätigung OR-",
                  "shipping_notice": "^Ihre Bestellung OR-.* wurde versandt$",
                  "ticket_receipt": r"^Ihre Serviceanfrage: Projekt \d+/1 erfasst$",
                  "ticket_status": r"^Serviceanfrage \d+/1: Ein Techniker wurde zugewiesen$"}),
    "en": Locale("GB", {"name": "Lienert Ltd", "street": "1 High Street", "postal_code": "SW1A 1AA",
                        "city": "London", "country": "GB"},
                 proof(PNG, "receipt.png", "image/png"), "Paper jam in tray 2",
                 {"account_confirmation": "^Please confirm your e-mail address$",
                  "verification_decision": "^Your account has been approved$",
                  "device_registration": r"^Your device C332 \(AK6C\d+\) has been registered$",
                  "meter_reading_reminder": "^Please submit your meter readings",
                  "order_confirmation": "^Order confirmation OR-",
                  "shipping_notice": "^Your order OR-.* has been shipped$",
                  "ticket_receipt": r"^Service request \d+/1 received$",
                  "ticket_status": r"^Service request \d+/1: a technician has been assigned$"}),
    "nb": Locale("NO", {"name": "Nordmann AS", "street": "Karl Johans gate 1", "postal_code": "0154",
                        "city": "Oslo", "country": "NO"},
                 proof(PDF, "kvittering.pdf", "application/pdf"), "Papirstopp i skuff 2",
                 {"account_confirmation": "^Bekreft e-postadressen din$",
                  "device_registration": r"^Enheten din C332 \(AK6C\d+\) er registrert$",
                  "meter_reading_reminder": "^Send inn måleravlesningene dine",
                  "order_confirmation": "^Ordrebekreftelse OR-",
                  "shipping_notice": "^Bestillingen din OR-.* er sendt$",
                  "ticket_receipt": r"^Serviceforespørsel \d+/1 er registrert$",
                  "ticket_status": r"^Serviceforespørsel \d+/1: en tekniker er tilordnet$"}),
}


async def accounts_knows_serial(stack: Stack, serial: str) -> None:
    """Wait until accounts' copy of the installed base has the serial (from registration's event): a sign-up
    confirmed before would be judged without it. Read from the database, since no command tells."""
    async def known() -> bool:
        return await stack.db("accounts").installed_base.find_one({"_id": serial}) is not None
    await eventually(known, timeout=30)


@pytest.mark.parametrize("language", ["de", "en", "nb"])
async def test_a_customers_year_from_sign_up_to_a_dispatched_technician_mails_each_step_once_in_their_language(
        stack: Stack, language: str) -> None:
    portal, operator, locale = stack.portal, stack.operator, LOCALES[language]
    today = datetime.now(UTC).date()

    # The vendor's ERP: the customer, its page-price contract with consumables, the printer under it.
    customer, contract = random_id("C"), random_id("K")
    under_contract, bought = random_serial("AK5A"), random_serial("AK6C")  # an ES5431dn, a C332
    await portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": locale.office["name"], "contracts": [{
            "contract_number": contract, "type": "page_price", "start_date": (today - timedelta(days=400)).isoformat(),
            "billing_period": "quarterly", "includes_consumables": True}]}, token=operator)
    last_date = (today - timedelta(days=60)).isoformat()
    imported = await portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": under_contract, "model": "ES5431dn", "customer_number": customer,
        "contract_number": contract, "location": locale.office,
        "counters": [{"name": "mono", "value": 12_000, "date": last_date},
                     {"name": "color", "value": 3_400, "date": last_date}]}]}, token=operator)
    assert imported == {"imported": 1, "rejected": []}

    # Sign up, confirm from the mail, sign in.
    if language == "de":
        await accounts_knows_serial(stack, under_contract)
        person = await stack.sign_up(language, country=locale.country, customer_number=customer,
                                     serial_number=under_contract)
        assert person.status == "active"
    elif language == "en":
        person = await stack.sign_up(language, country=locale.country, customer_number=customer,
                                     serial_number=bought)
        assert person.status == "pending_verification"
        assert await outcome(portal, "accounts.login", {"login": person.email, "password": person.request["password"]}
                             ) == "pending_verification"
        await stack.approve(person)
    else:
        person = await stack.sign_up(language, country=locale.country)
        assert person.status == "active"
    token = await stack.sign_in(person)
    profile = await portal.call("accounts.get_profile", {}, token=token)
    assert (profile["language"], profile["customer_number"]) == (language, None if language == "nb" else customer)

    if language == "nb":
        claimed = await portal.call("registration.claim_device", {
            "serial_number": under_contract, "postal_code": locale.office["postal_code"]}, token=token, lang=language)
        contract_device = claimed["device_id"]
        # A claimant's reminders are off until they turn them on for themselves.
        await portal.call("registration.set_reminders", {"device_id": contract_device, "reminders": True},
                          token=token)
    else:
        contract_device = (await portal.call("registration.get_device", {"serial_number": under_contract},
                                             token=token))["device_id"]

    # Terms first, then the new printer with its proof of purchase, bought ten days ago: the extended warranty.
    assert await outcome(portal, "registration.register_device", {
        "serial_number": bought, "purchase_date": today.isoformat(), "proof_of_purchase": locale.proof,
        "warranty_accepted": True, "location": locale.office}, token) == "terms_not_accepted"
    await portal.call("accounts.accept_terms", {"terms_version": "2026", "privacy_version": "2026"}, token=token)
    purchase_date = today - timedelta(days=10)
    registered = await retried_while(["terms_not_accepted"], lambda: portal.call("registration.register_device", {
        "serial_number": bought, "purchase_date": purchase_date.isoformat(), "proof_of_purchase": locale.proof,
        "warranty_accepted": True, "location": locale.office, "friendly_name": "Empfang",
        "questionnaire": {"purchase_reason": "replacement", "intended_years": 5}}, token=token, lang=language))
    assert registered["model"] == "C332"
    assert registered["warranty"]["months"] == 36 and registered["warranty"]["extended"] is True
    new_device = registered["device_id"]

    # The quarter's reminder, as the scheduler sends it the day the window opens; then readings by its link.
    window = periods.Window(periods.period_end(today, "quarterly"))

    async def reminder_arrived() -> bool:
        # Sent once per recipient and period, however often this runs: again only until metering knows the
        # printer and its contract from the other services' events.
        await portal.call("metering.operator.run_reminders", {"as_of": window.opens.isoformat()}, token=operator)
        return any(re.search(locale.subjects["meter_reading_reminder"], str(mail["Subject"]))
                   for mail in stack.mailbox.to(person.email))
    await eventually(reminder_arrived, timeout=40, step=1.0)
    reminder = await stack.mail(person.email, locale.subjects["meter_reading_reminder"])
    text = plain_text(reminder)
    assert under_contract in text and bought not in text  # the new printer is under no contract
    link = READINGS_LINK.search(text)
    assert link, "no personal readings link in the reminder"
    by_link = await portal.call("metering.submit_by_link", {"token": link.group(1), "readings": [
        {"device_id": contract_device, "counter": "mono", "value": 13_250},
        {"device_id": contract_device, "counter": "color", "value": 3_710}]}, lang=language)
    assert (by_link["accepted"], by_link["rejected"]) == (1, [])
    history = await portal.call("metering.history", {"device_id": contract_device}, token=token)
    [reading] = [item for item in history["readings"] if item["source"] == "customer"]
    assert {counter["counter"]: counter["printed_pages"] for counter in reading["counters"]} == {
        "mono": 1_250, "color": 310}

    # Toner for the contract printer, without knowing its article number.
    orderable = await retried_while(["not_found"], lambda: portal.call(
        "ordering.list_orderable", {"device_id": contract_device}, token=token))
    assert orderable["covered"] is True
    [toner] = [item for item in orderable["items"] if item["kind"] == "toner" and item.get("color") == "black"]
    assert toner["article_number"] == TONER_BLACK
    order = await portal.call("ordering.place_order", {
        "lines": [{"device_id": contract_device, "article_number": toner["article_number"], "quantity": 1}],
        "contact": {"name": person.request["username"], "email": person.email}, "reference": "Q4"},
        token=token, lang=language)
    assert order["status"] == "placed" and order["delivery_address"]["street"] == locale.office["street"]

    # A service request for the new printer.
    ticket = await retried_while(["not_found"], lambda: portal.call("ticketing.open_ticket", {
        "device_id": new_device, "description": locale.problem,
        "contact": {"name": person.request["username"], "email": person.email, "phone": "+49 351 000000"}},
        token=token, lang=language))
    assert ticket["status"] == "to_be_scheduled"

    # The vendor ships the toner and dispatches a technician.
    shipped = await portal.call("ordering.operator.mark_shipped", {
        "order_number": order["order_number"], "carrier": "DHL", "tracking_number": "00340434161094042557",
        "tracking_url": "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html"}, token=operator)
    assert shipped["status"] == "shipped"
    eta = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    await portal.call("ticketing.operator.set_status", {
        "ticket_number": ticket["ticket_number"], "status": "dispatched", "technician": "Ola Tekniker",
        "eta": eta.isoformat()}, token=operator)

    # The person's view at the end: both printers, the order on its way, the ticket with its technician.
    devices = await portal.call("registration.list_devices", {}, token=token)
    assert {device["serial_number"] for device in devices["items"]} == {under_contract, bought}
    assert (await portal.call("ordering.get_order", {"order_number": order["order_number"]}, token=token)
            )["status"] == "shipped"
    assert (await portal.call("ticketing.get_ticket", {"ticket_number": ticket["ticket_number"]}, token=token)
            )["technician"] == "Ola Tekniker"

    mails = await stack.mails_once(person.email, locale.subjects, language)
    assert order["order_number"] in plain_text(mails["order_confirmation"])
    assert "00340434161094042557" in plain_text(mails["shipping_notice"])
    assert ticket["ticket_number"] in plain_text(mails["ticket_receipt"])
    assert [part.get_filename() for part in mails["ticket_status"].iter_attachments()] == [
        f"service-visit-{ticket['ticket_number'].replace('/', '-')}.ics"]
    assert bought in str(mails["device_registration"]["Subject"])
