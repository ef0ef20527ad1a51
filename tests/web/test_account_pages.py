"""A new customer in the browser, as the seeds' portals lead them: sign up (joining the company with customer and
serial number, as Canon), the confirmation link opened from the mail, sign in, the terms first (OKI step 4), the
dashboard with the company's device, the language kept in the profile; and the forms' refusals, each next to its
field in the page's language."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Browser, Page, expect

from tests.builders import random_id, random_serial
from tests.e2e.conftest import Stack
from tests.support import eventually, plain_text
from tests.web.conftest import accessible, link_in_browser, mail_link, new_context, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXTS = {
    "de": {"sign_up": "Registrieren", "email": "E-Mail-Adresse", "username": "Benutzername", "password": "Passwort",
           "repeat": "Passwort wiederholen", "country": "Land", "customer": "Kundennummer",
           "serial": "Seriennummer eines Geräts des Unternehmens", "terms": "Ich akzeptiere die Nutzungsbedingungen",
           "privacy": "Ich akzeptiere die Datenschutzerklärung", "check_mail": "Bitte sehen Sie in Ihr Postfach",
           "confirm": "E-Mail-Adresse bestätigen", "sign_in": "Anmelden", "login": "E-Mail-Adresse oder Benutzername",
           "accept": "Akzeptieren und weiter", "devices": "Meine Geräte", "mismatch": "stimmen nicht überein",
           "tick": "Bitte setzen Sie hier ein Häkchen.", "stay": "Angemeldet bleiben (12 Stunden)",
           "sign_out": "Abmelden", "signed_out": "Sie sind abgemeldet.", "by_sms": "Per SMS", "save": "Speichern",
           "saved": "Ihr Profil ist gespeichert."},
    "en": {"sign_up": "Sign up", "email": "E-mail address", "username": "Username", "password": "Password",
           "repeat": "Repeat the password", "country": "Country", "customer": "Customer number",
           "serial": "Serial number of one of the company's devices", "terms": "I accept the terms and conditions",
           "privacy": "I accept the privacy notice", "check_mail": "Check your mail",
           "confirm": "Confirm e-mail address", "sign_in": "Sign in", "login": "E-mail address or username",
           "accept": "Accept and continue", "devices": "My devices", "mismatch": "do not match",
           "tick": "Please tick this box.", "stay": "Stay signed in (12 hours)", "sign_out": "Sign out",
           "signed_out": "You are signed out.", "by_sms": "By text message", "save": "Save",
           "saved": "Your profile is saved."},
}
OFFICE = {"name": "Empfang", "street": "Hauptstraße 1", "postal_code": "01067", "city": "Dresden", "country": "DE"}


async def company_with_a_device(stack: Stack) -> tuple[str, str]:
    """A customer the vendor's ERP loaded, with one device of its installed base: (customer number, serial)."""
    customer, serial = random_id("C"), random_serial("AK5A")
    last = (datetime.now(UTC).date() - timedelta(days=60)).isoformat()
    await stack.portal.call("accounts.operator.provision_customer", {"customer_number": customer, "name": "Kanzlei"},
                            token=stack.operator)
    await stack.portal.call("registration.operator.import_installed_base", {"devices": [{
        "serial_number": serial, "model": "ES5431dn", "customer_number": customer, "location": OFFICE,
        "counters": [{"name": "mono", "value": 100, "date": last}, {"name": "color", "value": 10, "date": last}]}]},
        token=stack.operator)

    async def known() -> bool:  # accounts learns the installed base from registration's event
        return await stack.db("accounts").installed_base.find_one({"_id": serial}) is not None
    await eventually(known, timeout=30)
    return customer, serial


async def fill_sign_up(page: Page, texts: dict[str, str], email: str, username: str, password: str, repeat: str,
                       customer: str, serial: str) -> None:
    await page.get_by_label(texts["email"], exact=True).fill(email)
    await page.get_by_label(texts["username"], exact=True).fill(username)
    await page.get_by_label(texts["password"], exact=True).fill(password)
    await page.get_by_label(texts["repeat"], exact=True).fill(repeat)
    await page.get_by_label(texts["country"], exact=True).fill("DE")
    await page.get_by_label(texts["customer"]).fill(customer)
    await page.get_by_label(texts["serial"]).fill(serial)


@pytest.mark.parametrize("language", ["de", "en"])
async def test_a_new_customer_signs_up_confirms_from_the_mail_and_sees_the_companys_device(
        stack: Stack, gateway_url: str, browser: Browser, language: str) -> None:
    texts = TEXTS[language]
    customer, serial = await company_with_a_device(stack)
    email, username, password = f"{random_id('web')}@example.com", random_id("web"), "correct horse battery"
    context = await new_context(browser, language)
    page = await context.new_page()

    await page.goto(f"{gateway_url}/sign-up")
    await expect(page.get_by_role("heading", level=1)).to_have_text(texts["sign_up"])
    await accessible(page, f"sign-up-{language}")

    # First without the boxes ticked and with two different passwords: nothing is sent, each field says why.
    await fill_sign_up(page, texts, email, username, password, password + "x", customer, serial)
    await page.get_by_role("button", name=texts["sign_up"]).click()
    await expect(page.locator("#accept_terms-error")).to_have_text(texts["tick"])
    await accessible(page, f"sign-up-refused-{language}")
    assert stack.mailbox.to(email) == []
    await page.get_by_label(texts["terms"]).check()
    await page.get_by_label(texts["privacy"]).check()
    await page.get_by_label(texts["password"], exact=True).fill(password)
    await page.get_by_label(texts["repeat"], exact=True).fill(password + "x")
    await page.get_by_role("button", name=texts["sign_up"]).click()
    await expect(page.locator("#password_confirm-error")).to_contain_text(re.compile(texts["mismatch"], re.I))
    assert await page.get_by_label(texts["email"], exact=True).input_value() == email  # kept, not typed again

    await page.get_by_label(texts["password"], exact=True).fill(password)
    await page.get_by_label(texts["repeat"], exact=True).fill(password)
    await page.get_by_role("button", name=texts["sign_up"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(texts["check_mail"])

    # The confirmation link from the mail the SMTP server received, opened in the browser.
    mail = await stack.mail(email, ".")
    assert mail["Content-Language"] == language
    await page.goto(link_in_browser(mail_link(plain_text(mail), "/confirm-email"), gateway_url))
    await accessible(page, f"confirm-email-{language}")
    await page.get_by_role("button", name=texts["confirm"]).click()
    await expect(page.get_by_role("status")).to_be_visible()

    # Sign in by username; the terms come first, then the company's device on the dashboard.
    await page.goto(f"{gateway_url}/sign-in")
    await accessible(page, f"sign-in-{language}")
    await page.get_by_label(texts["login"]).fill(username)
    await page.get_by_label(texts["password"], exact=True).fill(password)
    await page.get_by_label(texts["stay"]).check()
    await page.get_by_role("button", name=texts["sign_in"]).click()
    await expect(page).to_have_url(re.compile(r"/terms\?next=/$"))
    await accessible(page, f"terms-{language}")
    await page.get_by_role("button", name=texts["accept"]).click()
    await expect(page.locator("#accept_terms-error")).to_have_text(texts["tick"])  # not accepted unseen
    await page.get_by_label(texts["terms"]).check()
    await page.get_by_label(texts["privacy"]).check()
    await page.get_by_role("button", name=texts["accept"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(texts["devices"])
    await expect(page.get_by_role("cell", name=serial)).to_be_visible()
    await accessible(page, f"dashboard-{language}")
    cookies = {cookie["name"]: cookie for cookie in await context.cookies()}
    assert cookies["portal_session"]["httpOnly"]
    lasts = cookies["portal_session"]["expires"] - datetime.now(UTC).timestamp()
    assert 11 * 3600 < lasts <= 12 * 3600  # "stay signed in": 12 hours

    # The profile: a preference of how to be kept informed, saved and shown ticked.
    await page.goto(f"{gateway_url}/profile")
    await accessible(page, f"profile-{language}")
    await page.get_by_label(texts["by_sms"]).check()
    await page.get_by_role("button", name=texts["save"], exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(texts["saved"])
    await expect(page.get_by_label(texts["by_sms"])).to_be_checked()
    await accessible(page, f"profile-saved-{language}")

    await page.get_by_role("button", name=texts["sign_out"]).click()
    await expect(page.get_by_role("status")).to_have_text(texts["signed_out"])
    await page.goto(f"{gateway_url}/")
    await expect(page).to_have_url(re.compile(r"/sign-in"))
    await context.close()


async def test_the_language_picked_on_a_page_is_kept_in_the_profile_and_follows_the_user(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    person = await stack.sign_up("en", country="NO")
    context = await new_context(browser, "en")
    page = await context.new_page()
    await sign_in(page, gateway_url, person.email, person.request["password"])
    await page.get_by_label("I accept the terms and conditions").check()
    await page.get_by_label("I accept the privacy notice").check()
    await page.get_by_role("button", name="Accept and continue").click()

    # OKI's step 2: the language is picked on the page; the portal and the mails follow it from then on.
    await page.get_by_label("Language", exact=True).select_option("nb")
    await page.get_by_role("button", name="Change").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Mine enheter")
    token = await stack.sign_in(person)
    profile = await stack.portal.call("accounts.get_profile", {}, token=token)
    assert profile["language"] == "nb"

    # Another browser, whose own language is German: after the sign-in the profile's Norwegian holds.
    other = await new_context(browser, "de")
    fresh = await other.new_page()
    await fresh.goto(f"{gateway_url}/sign-in")
    await expect(fresh.get_by_role("heading", level=1)).to_have_text("Anmelden")
    await fresh.get_by_label("E-Mail-Adresse oder Benutzername").fill(person.email)
    await fresh.get_by_label("Passwort", exact=True).fill(person.request["password"])
    await fresh.get_by_role("button", name="Anmelden").click()
    await expect(fresh.get_by_role("heading", level=1)).to_have_text("Mine enheter")
    await asyncio.gather(context.close(), other.close())


async def test_a_form_posted_from_another_site_changes_nothing(stack: Stack, gateway_url: str,
                                                               browser: Browser) -> None:
    """A form needs this browser's form token: another site's form posting to the portal is refused."""
    person = await stack.sign_up("en", country="DE")
    context = await new_context(browser, "en")
    page = await context.new_page()
    await sign_in(page, gateway_url, person.email, person.request["password"])
    response = await page.request.post(f"{gateway_url}/language", form={"language": "de", "next": "/"})
    assert response.status == 403
    token = await stack.sign_in(person)
    assert (await stack.portal.call("accounts.get_profile", {}, token=token))["language"] == "en"
    await context.close()


async def test_a_contract_sign_in_sees_only_its_contracts_devices(stack: Stack, gateway_url: str,
                                                                  browser: Browser) -> None:
    """OKI's page-price portal: customer and contract number, and only that contract's devices."""
    customer, flat_rate, other = random_id("C"), random_id("K"), random_id("K")
    started = (datetime.now(UTC).date() - timedelta(days=400)).isoformat()
    await stack.portal.call("accounts.operator.provision_customer", {
        "customer_number": customer, "name": "Seitenpreis AG", "contracts": [
            {"contract_number": number, "type": "page_price", "start_date": started, "billing_period": "quarterly",
             "includes_consumables": True} for number in (flat_rate, other)]}, token=stack.operator)
    mine, theirs = random_serial("AK5A"), random_serial("AK5A")
    await stack.portal.call("registration.operator.import_installed_base", {"devices": [
        {"serial_number": serial, "model": "ES5431dn", "customer_number": customer, "contract_number": contract,
         "location": OFFICE} for serial, contract in ((mine, flat_rate), (theirs, other))]}, token=stack.operator)
    context = await new_context(browser, "de")
    page = await context.new_page()
    await page.goto(f"{gateway_url}/sign-in")
    await page.get_by_role("link", name="Mit Ihrem Vertrag anmelden").click()
    await page.get_by_label("Kundennummer").fill(customer)
    await page.get_by_label("Vertragsnummer").fill("K-unknown")
    await page.get_by_role("button", name="Anmelden").click()
    await expect(page.locator("#contract_number-error")).to_be_visible()  # refused beside the contract number
    await accessible(page, "sign-in-contract-refused-de")
    await page.get_by_label("Vertragsnummer").fill(flat_rate)
    await page.get_by_role("button", name="Anmelden").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Meine Geräte")
    await expect(page.get_by_role("cell", name=mine)).to_be_visible()
    await expect(page.get_by_role("cell", name=theirs)).to_have_count(0)
    await context.close()


async def test_a_forgotten_password_is_reset_from_the_mails_link_and_a_forgotten_username_is_mailed(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    person = await stack.sign_up("nb", country="NO")
    await stack.portal.call("accounts.update_profile", {"first_name": "Kari", "last_name": "Nordmann"},
                            token=await stack.sign_in(person))
    context = await new_context(browser, "nb")
    page = await context.new_page()
    await page.goto(f"{gateway_url}/sign-in")
    await page.get_by_role("link", name="Glemt passordet?").click()
    await accessible(page, "forgotten-password-nb")
    await page.get_by_label("E-postadresse").fill("no-address")
    await page.get_by_role("button", name="Send meg en lenke").click()
    await expect(page.locator("#email-error")).to_have_text("Skriv inn en gyldig e-postadresse.")
    await page.get_by_label("E-postadresse").fill(person.email)
    await page.get_by_role("button", name="Send meg en lenke").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sjekk e-posten din")

    mail = await stack.mail(person.email, "Tilbakestill passordet ditt")
    await page.goto(link_in_browser(mail_link(plain_text(mail), "/reset-password"), gateway_url))
    await accessible(page, "reset-password-nb")
    new_password = "a brand new passphrase"
    await page.get_by_label("Nytt passord").fill(new_password)
    await page.get_by_label("Gjenta passordet").fill(new_password + "!")
    await page.get_by_role("button", name="Lagre passordet").click()
    await expect(page.locator("#password_confirm-error")).to_be_visible()  # the two differ: nothing changed
    await page.get_by_label("Nytt passord").fill(new_password)
    await page.get_by_label("Gjenta passordet").fill(new_password)
    await page.get_by_role("button", name="Lagre passordet").click()
    await expect(page.get_by_role("status")).to_have_text("Passordet er endret. Logg inn med det nye.")
    await page.get_by_label("E-postadresse eller brukernavn").fill(person.email)
    await page.get_by_label("Passord", exact=True).fill(new_password)
    await page.get_by_role("button", name="Logg inn").click()
    await expect(page).to_have_url(re.compile(r"/terms\?next=/$"))

    # The link is spent: opened again, it sets nothing and says so beside the form.
    await page.goto(link_in_browser(mail_link(plain_text(mail), "/reset-password"), gateway_url))
    await page.get_by_label("Nytt passord").fill("yet another passphrase")
    await page.get_by_label("Gjenta passordet").fill("yet another passphrase")
    await page.get_by_role("button", name="Lagre passordet").click()
    await expect(page.get_by_role("link", name="Be om en ny lenke")).to_be_visible()

    await page.goto(f"{gateway_url}/username")
    await accessible(page, "forgotten-username-nb")
    await page.get_by_label("Fornavn").fill("Kari")
    await page.get_by_label("Etternavn").fill("Nordmann")
    await page.get_by_label("E-postadresse").fill(person.email)
    await page.get_by_role("button", name="Send meg brukernavnet").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sjekk e-posten din")
    reminder = await stack.mail(person.email, "Brukernavnet ditt")
    assert person.request["username"] in plain_text(reminder)
    await context.close()
