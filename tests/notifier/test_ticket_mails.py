"""The ticketing mails as received: the receipt and status changes to the ticket's contact, the note to the desk."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import pytest
from icalendar import Calendar

from contracts.accounts import Language
from contracts.client import PortalClient
from contracts.registration import Location
from contracts.ticketing import (
    Actor,
    Note,
    StatusChange,
    TicketContact,
    TicketDevice,
    TicketOpened,
    TicketStatus,
    TicketStatusChanged,
    TicketUpdated,
)
from contracts.topology import dead_letter_queue, event_queue
from services.notifier.app import service
from services.notifier.handlers import INVALID_ADDRESS
from services.notifier.mails import LANGUAGES, render
from services.notifier.settings import NotifierSettings
from services.notifier.tickets import MAILED_STATUSES, CalendarMethod, visit_calendar
from services.runtime.service import ServiceInstance
from tests.builders import drain_queue, random_email, random_id
from tests.notifier.support import SmtpServer, list_deliveries, publish
from tests.notifier.test_deliveries import wait_for_mails
from tests.notifier.test_mails import only_mail_to, parts
from tests.notifier.test_registration_mails import known_user
from tests.notifier.test_reminders import text_of
from tests.support import eventually, running

PORTAL = "https://service.example.test"
CET = timezone(timedelta(hours=1))
ETA = datetime(2027, 3, 9, 9, 30, tzinfo=CET)
ADDRESS_LINES = ("Zimmermann GmbH", "Kundenbüro", "Hansaallee 187", "40549 Düsseldorf")


def ticket_number() -> str:
    return f"{1_000_000 + secrets.randbelow(9_000_000)}/1"


def link_of(number: str) -> str:
    return f"{PORTAL}/tickets/{number.replace('/', '%2F')}"


def file_part(number: str) -> str:
    return number.replace("/", "-")


def service_address() -> Location:
    return Location(name="Zimmermann GmbH", street="Hansaallee 187", postal_code="40549", city="Düsseldorf",
                    country="DE", building_location="Kundenbüro")


def ticket_fields(email: str, language: str, *, number: str | None = None, name: str = "Christine Zimmermann",
                  **device: Any) -> dict[str, Any]:
    # The contact is not validated: the notifier must hold out against values an older sender let through.
    return {"ticket_number": number or ticket_number(), "customer_number": "17102995", "language": language,
            "device": TicketDevice(**{"device_id": random_id("d"), "serial_number": "AK6C004746",
                                      "model": "ES5462 MFP", "friendly_name": "Empfang 2. OG", **device}),
            "contact": TicketContact.model_construct(name=name, email=email, phone="0211/5266-252"),
            "service_address": service_address()}


def opened(email: str, language: str = "en", *, description: str = "Papierstau in Fach 2.\nFehler 391.",
           **fields: Any) -> TicketOpened:
    return TicketOpened(**ticket_fields(email, language, **fields), opened_by=random_id("u"),
                        opened_at=datetime(2027, 3, 5, 9, 30, tzinfo=UTC), category="malfunction",
                        description=description)


PREVIOUS: dict[str, TicketStatus] = {"dispatched": "to_be_scheduled", "en_route": "dispatched",
                                     "on_site": "en_route", "resolved": "on_site", "closed": "resolved",
                                     "cancelled": "to_be_scheduled"}


def status_changed(email: str, status: TicketStatus, language: str = "en", *, technician: str | None = None,
                   eta: datetime | None = None, note: str | None = None, reason: str | None = None,
                   by: Actor = "operator", sequence: int = 1, previous_status: TicketStatus | None = None,
                   eta_changed: bool = False, **fields: Any) -> TicketStatusChanged:
    change = StatusChange(status=status, at=datetime(2027, 3, 6, 8, 0, tzinfo=UTC), by=by, technician=technician,
                          eta=eta, note=note)
    return TicketStatusChanged(**ticket_fields(email, language, **fields), status=status,
                               previous_status=previous_status or PREVIOUS[status], change=change, reason=reason,
                               sequence=sequence, eta_changed=eta_changed)


def dispatched(email: str, language: str = "en", *, eta: datetime | None = ETA, **fields: Any) -> TicketStatusChanged:
    return status_changed(email, "dispatched", language, technician="Kari Nordmann", eta=eta, **fields)


def updated(text: str = "Fehler tritt nur bei Duplex auf.\nBitte vormittags kommen.") -> TicketUpdated:
    return TicketUpdated(**ticket_fields(random_email(), "nb"),
                         note=Note(text=text, at=datetime(2027, 3, 5, 10, 15, tzinfo=UTC), by="customer"))


def texts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts with `\n` line ends, whichever transfer encoding carried them."""
    text, html = parts(message)
    return "\n".join(text.splitlines()), "\n".join(html.splitlines())


def attachments(message: EmailMessage) -> list[EmailMessage]:
    return list(message.iter_attachments())


def calendar_of(message: EmailMessage) -> tuple[EmailMessage, Calendar]:
    [attachment] = attachments(message)
    return attachment, Calendar.from_ical(attachment.get_content())


@dataclass(frozen=True)
class Words:
    receipt: str  # the receipt's subject, {} = the ticket number
    greeting: str
    receipt_facts: tuple[str, ...]  # the number's line, status, category, the note on adding information
    dispatched: str  # the subject of the dispatch mail
    dispatch_facts: tuple[str, ...]  # technician and ETA
    details: tuple[str, ...]  # device and service address


WORDS = {
    "de": Words(
        receipt="Ihre Serviceanfrage: Projekt {} erfasst", greeting="Guten Tag Christine Zimmermann,",
        receipt_facts=("Projekt: {} erfasst", "Status: Zu planen", "Kategorie: Störung",
                       "Solange noch kein Techniker disponiert ist, können Sie die Anfrage im Portal ergänzen"),
        dispatched="Serviceanfrage {}: Ein Techniker wurde zugewiesen",
        dispatch_facts=("Techniker: Kari Nordmann", "Voraussichtliche Ankunft: 09.03.2027, 09:30 Uhr (UTC+01:00)"),
        details=("Gerät: ES5462 MFP, Seriennummer AK6C004746", "Gerätename: Empfang 2. OG", "Serviceadresse:")),
    "en": Words(
        receipt="Service request {} received", greeting="Hello Christine Zimmermann,",
        receipt_facts=("Ticket number: {}", "Status: To be scheduled", "Category: Malfunction",
                       "As long as no technician has been dispatched, you can add information to the request"),
        dispatched="Service request {}: a technician has been assigned",
        dispatch_facts=("Technician: Kari Nordmann", "Expected arrival: 2027-03-09 09:30 (UTC+01:00)"),
        details=("Device: ES5462 MFP, serial number AK6C004746", "Device name: Empfang 2. OG", "Service address:")),
    "nb": Words(
        receipt="Serviceforespørsel {} er registrert", greeting="Hei Christine Zimmermann,",
        receipt_facts=("Nummer på serviceforespørselen: {}", "Status: Skal avtales", "Kategori: Funksjonsfeil",
                       "Så lenge ingen tekniker er sendt ut, kan du legge til mer informasjon"),
        dispatched="Serviceforespørsel {}: en tekniker er tilordnet",
        dispatch_facts=("Tekniker: Kari Nordmann", "Forventet ankomst: 09.03.2027 kl. 09:30 (UTC+01:00)"),
        details=("Maskin: ES5462 MFP, serienummer AK6C004746", "Maskinnavn: Empfang 2. OG", "Serviceadresse:")),
}


def assert_details(message: EmailMessage, words: Words) -> None:
    text, html = texts(message)
    for fact in (*words.details, *ADDRESS_LINES):
        assert fact in text
    for fact in ("ES5462 MFP", "AK6C004746", "Empfang 2. OG", *ADDRESS_LINES):
        assert fact in text_of(html)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_ticket_receipt_reaches_the_contact_with_the_number_the_device_and_the_link_to_the_ticket(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    words = WORDS[language]
    event = opened(random_email(), language)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = texts(message)
    assert message["Subject"] == words.receipt.format(event.ticket_number)
    assert message["To"].addresses[0].display_name == "Christine Zimmermann"
    assert message["Content-Language"] == language
    assert message["Auto-Submitted"] == "auto-generated"
    assert text.startswith(words.greeting)
    for fact in (*(fact.format(event.ticket_number) for fact in words.receipt_facts), "  Papierstau in Fach 2.",
                 "  Fehler 391.", link_of(event.ticket_number)):
        assert fact in text
    for fact in (*(fact.format(event.ticket_number) for fact in words.receipt_facts), "Papierstau in Fach 2.",
                 "Fehler 391."):
        assert fact in text_of(html)
    assert f'href="{link_of(event.ticket_number)}"' in html
    assert_details(message, words)
    assert attachments(message) == []


async def test_a_ticket_in_a_language_without_templates_is_mailed_in_english(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = opened(random_email(), "fr")
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    assert message["Content-Language"] == "en"
    assert message["Subject"] == f"Service request {event.ticket_number} received"


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_dispatch_mail_names_the_technician_and_the_eta_in_the_tickets_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    words = WORDS[language]
    event = dispatched(random_email(), language)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = texts(message)
    assert message["Subject"] == words.dispatched.format(event.ticket_number)
    assert message["Auto-Submitted"] == "auto-generated"
    assert text.startswith(words.greeting)
    for fact in (*words.dispatch_facts, link_of(event.ticket_number)):
        assert fact in text
    for fact in words.dispatch_facts:
        assert fact in text_of(html)
    assert_details(message, words)


async def test_the_dispatch_mail_carries_the_visit_as_a_calendar_entry_that_a_later_one_would_update(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = dispatched(random_email(), sequence=1)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    assert message.get_content_type() == "multipart/mixed"
    attachment, calendar = calendar_of(message)
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "PUBLISH"
    assert str(attachment.get_param("charset")).lower() == "utf-8"
    assert attachment.get_filename() == f"service-visit-{file_part(event.ticket_number)}.ics"
    assert (calendar["VERSION"], calendar["METHOD"]) == ("2.0", "PUBLISH")
    assert calendar["PRODID"]
    [visit] = calendar.walk("VEVENT")
    assert visit["UID"] == f"ticket-{file_part(event.ticket_number)}@service.example.test"
    assert visit.decoded("SEQUENCE") == 1
    start, end = visit.decoded("DTSTART"), visit.decoded("DTEND")
    assert start == ETA and start.utcoffset() == timedelta(0)  # the same moment, written in UTC
    assert visit.to_ical().decode().count("DTSTART:20270309T083000Z") == 1
    assert end - start == timedelta(minutes=120)
    assert visit.decoded("DTSTAMP").utcoffset() == timedelta(0)
    assert str(visit["LOCATION"]) == "Zimmermann GmbH, Kundenbüro, Hansaallee 187, 40549 Düsseldorf, DE"
    assert event.ticket_number in str(visit["SUMMARY"]) and "ES5462 MFP" in str(visit["SUMMARY"])
    assert "Kari Nordmann" in str(visit["DESCRIPTION"]) and "AK6C004746" in str(visit["DESCRIPTION"])
    text, _ = texts(message)
    assert "The attached calendar entry (.ics) holds the visit" in text


def test_the_calendar_entry_lasts_the_configured_visit_length_and_keeps_its_uid_with_a_higher_sequence() -> None:
    settings = NotifierSettings(public_url="https://portal.vendor.example/", notifier_visit_minutes=45)
    event = dispatched("c.zimmermann@example.com", number="1484049/1", sequence=3)
    later = event.model_copy(update={"sequence": 5})
    first, second = (Calendar.from_ical(visit_calendar(each, eta=ETA, language="de", settings=settings))
                     for each in (event, later))
    [visit], [update] = first.walk("VEVENT"), second.walk("VEVENT")
    assert visit["UID"] == update["UID"] == "ticket-1484049-1@portal.vendor.example"
    assert (visit.decoded("SEQUENCE"), update.decoded("SEQUENCE")) == (3, 5)
    assert visit.decoded("DTEND") - visit.decoded("DTSTART") == timedelta(minutes=45)
    assert str(visit["SUMMARY"]) == "Servicetermin 1484049/1: ES5462 MFP"
    assert str(visit["DESCRIPTION"]).startswith("Techniker: Kari Nordmann\nSeriennummer: AK6C004746")


@pytest.mark.parametrize("method", ["PUBLISH", "CANCEL"])
@pytest.mark.parametrize(("mail_from", "address", "name"), [
    ("Service Portal <no-reply@portal.vendor.example>", "mailto:no-reply@portal.vendor.example", "Service Portal"),
    ("service@portal.vendor.example", "mailto:service@portal.vendor.example", None),
], ids=["with_a_display_name", "address_alone"])
def test_the_calendar_entry_names_the_portals_sender_as_its_organizer(
        method: CalendarMethod, mail_from: str, address: str, name: str | None) -> None:
    # RFC 5546 §3.2.1 and §3.2.5: a VEVENT sent with METHOD:PUBLISH or METHOD:CANCEL has exactly one ORGANIZER.
    settings = NotifierSettings(public_url="https://portal.vendor.example/", mail_from=mail_from)
    calendar = Calendar.from_ical(visit_calendar(dispatched("c@example.com", number="1484049/1"), eta=ETA,
                                                 language="en", settings=settings, method=method))
    [visit] = calendar.walk("VEVENT")
    assert visit.to_ical().decode().count("ORGANIZER") == 1
    assert str(visit["ORGANIZER"]) == address
    assert visit["ORGANIZER"].params.get("CN") == name


async def test_the_calendar_entry_is_in_the_language_saved_for_the_contacts_address(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "de")
    event = dispatched(address.upper().replace("@EXAMPLE.COM", "@example.com"), "nb")  # the address in another case
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    assert message["Content-Language"] == "de"
    _, calendar = calendar_of(message)
    [visit] = calendar.walk("VEVENT")
    assert str(visit["SUMMARY"]).startswith("Servicetermin")


async def test_a_dispatch_without_technician_customer_number_or_full_address_is_still_mailed_with_its_visit(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = status_changed(random_email(), "dispatched", technician=None,
                           eta=datetime(2027, 3, 9, 9, 30, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
                           friendly_name=None)
    event.customer_number = None
    event.service_address = Location(street="Hansaallee 187")
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = texts(message)
    assert "Expected arrival: 2027-03-09 09:30 (UTC-03:30)" in text and "Technician" not in text
    _, calendar = calendar_of(message)
    [visit] = calendar.walk("VEVENT")
    assert visit.decoded("DTSTART") == datetime(2027, 3, 9, 13, 0, tzinfo=UTC)
    assert str(visit["LOCATION"]) == "Hansaallee 187"


async def test_an_eta_without_a_zone_is_read_as_utc(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = dispatched(random_email(), eta=datetime(2027, 3, 9, 8, 30))
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = texts(message)
    assert "Expected arrival: 2027-03-09 08:30 (UTC)" in text
    _, calendar = calendar_of(message)
    [visit] = calendar.walk("VEVENT")
    assert visit.decoded("DTSTART") == ETA


async def test_a_dispatch_without_an_eta_has_no_calendar_entry(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = dispatched(random_email(), eta=None)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = texts(message)
    assert message.get_content_type() == "multipart/alternative"
    assert attachments(message) == []
    assert "Technician: Kari Nordmann" in text
    assert "Expected arrival" not in text and ".ics" not in text


async def test_a_new_eta_on_the_way_moves_the_calendar_entry_to_the_new_time(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    # The same UID with a higher SEQUENCE replaces the dispatch's entry in the customer's calendar.
    email, later, number = random_email(), datetime(2027, 3, 9, 11, 0, tzinfo=CET), ticket_number()
    event = status_changed(email, "en_route", technician="Kari Nordmann", eta=later, number=number, sequence=2,
                           eta_changed=True)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, email)
    text, html = texts(message)
    assert "Expected arrival: 2027-03-09 11:00 (UTC+01:00)" in text
    moved = "The attached calendar entry (.ics) holds the visit at its new time"
    assert moved in text and moved in text_of(html)
    attachment, calendar = calendar_of(message)
    assert attachment.get_param("method") == "PUBLISH"
    assert attachment.get_filename() == f"service-visit-{file_part(number)}.ics"
    assert calendar["METHOD"] == "PUBLISH"
    [visit] = calendar.walk("VEVENT")
    assert visit["UID"] == f"ticket-{file_part(number)}@service.example.test"
    assert visit.decoded("SEQUENCE") == 2
    assert visit.decoded("DTSTART") == later
    assert "STATUS" not in visit


async def test_on_the_way_without_a_new_eta_the_mail_carries_no_calendar_entry(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    # ticketing carries the dispatch's ETA forward: the customer's calendar has it already.
    event = status_changed(random_email(), "en_route", technician="Kari Nordmann", eta=ETA, sequence=2)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = texts(message)
    assert "Expected arrival: 2027-03-09 09:30 (UTC+01:00)" in text
    assert message.get_content_type() == "multipart/alternative"
    assert attachments(message) == []
    assert ".ics" not in text


async def test_cancelling_a_dispatched_visit_withdraws_its_calendar_entry(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    email, number = random_email(), ticket_number()
    dispatch = dispatched(email, number=number, sequence=1)
    await publish(amqp_url, dispatch)
    _, published = calendar_of(await only_mail_to(smtp, email))
    [visit] = published.walk("VEVENT")

    # ticketing carries the dispatch's ETA forward into the cancellation's change.
    cancel = status_changed(email, "cancelled", number=number, note="Kunde hat abgesagt.", sequence=2,
                            previous_status="dispatched", eta=ETA)
    await publish(amqp_url, cancel)

    async def both() -> bool:
        return len(smtp.mailbox.to(email)) == 2
    await eventually(both)
    [second] = [mail for mail in smtp.mailbox.to(email) if "cancelled" in str(mail["Subject"])]
    attachment, calendar = calendar_of(second)
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "CANCEL"
    assert str(attachment.get_param("charset")).lower() == "utf-8"
    assert attachment.get_filename() == f"service-visit-{file_part(number)}.ics"
    [withdrawn] = calendar.walk("VEVENT")
    assert calendar["METHOD"] == "CANCEL" and withdrawn["STATUS"] == "CANCELLED"
    assert withdrawn["UID"] == visit["UID"] and withdrawn.decoded("SEQUENCE") == 2
    text, html = texts(second)
    withdrawal = "The attached calendar entry (.ics) cancels the visit"
    assert withdrawal in text and withdrawal in text_of(html)
    assert "Expected arrival" not in text


@pytest.mark.parametrize(("previous", "eta"), [("to_be_scheduled", None), ("to_be_scheduled", ETA),
                                           ("dispatched", None)],
                         ids=["before_dispatch", "before_dispatch_with_a_stray_eta", "dispatched_without_an_eta"])
async def test_a_cancellation_with_no_visit_in_the_calendar_carries_no_calendar_entry(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, previous: TicketStatus,
        eta: datetime | None) -> None:
    event = status_changed(random_email(), "cancelled", by="customer", reason="Gerät wurde ersetzt.",
                           previous_status=previous, eta=eta, sequence=2)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = texts(message)
    assert message.get_content_type() == "multipart/alternative"
    assert attachments(message) == []
    assert ".ics" not in text


@pytest.mark.parametrize(("status", "subject", "phrase"), [
    ("en_route", "Service request {}: the technician is on the way", "the technician is on the way to you"),
    ("on_site", "Service request {}: the technician is on site", "the technician has arrived on site"),
    ("resolved", "Service request {} resolved", "has been resolved"),
])
async def test_each_later_status_is_mailed_to_the_contact_with_its_own_subject(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, status: TicketStatus, subject: str,
        phrase: str) -> None:
    event = status_changed(random_email(), status, note="Fixiereinheit getauscht." if status == "resolved" else None)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = texts(message)
    assert message["Subject"] == subject.format(event.ticket_number)
    assert message["Auto-Submitted"] == "auto-generated"
    assert phrase in text and phrase in text_of(html)
    assert link_of(event.ticket_number) in text
    assert attachments(message) == []
    if status == "resolved":
        assert "Note:\n  Fixiereinheit getauscht." in text


@pytest.mark.parametrize(("language", "technician", "arrival"), [
    ("de", "Techniker: Kari Nordmann", "Voraussichtliche Ankunft"),
    ("en", "Technician: Kari Nordmann", "Expected arrival"),
    ("nb", "Tekniker: Kari Nordmann", "Forventet ankomst"),
])
async def test_the_on_site_mail_names_the_technician_but_no_expected_arrival(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language, technician: str,
        arrival: str) -> None:
    # ticketing copies the dispatch's ETA into every later change (`eta or ticket.get("eta")`).
    event = status_changed(random_email(), "on_site", language, technician="Kari Nordmann", eta=ETA)
    await publish(amqp_url, event)

    text, html = texts(await only_mail_to(smtp, event.contact.email))
    assert technician in text and technician in text_of(html)
    assert arrival not in text and arrival not in html
    assert "09:30" not in text


@pytest.mark.parametrize(("by", "reason", "note", "said"), [
    ("customer", "Gerät wurde ersetzt.", None, "has been cancelled at your request."),
    ("operator", None, "Doppelte Meldung, siehe 1484049/2.", "has been cancelled by our service team."),
], ids=["by_the_customer", "by_the_operator"])
async def test_a_cancellation_says_who_cancelled_and_why(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, by: Actor, reason: str | None,
        note: str | None, said: str) -> None:
    event = status_changed(random_email(), "cancelled", by=by, reason=reason, note=note)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = texts(message)
    assert message["Subject"] == f"Service request {event.ticket_number} cancelled"
    assert said in text and said in text_of(html)
    assert f"Reason:\n  {reason or note}" in text
    assert f"Reason: {reason or note}" in text_of(html)
    assert "Note:" not in text


async def test_a_cancellation_without_a_reason_says_none(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = status_changed(random_email(), "cancelled", language="de", by="customer")
    await publish(amqp_url, event)

    text, _ = texts(await only_mail_to(smtp, event.contact.email))
    assert "wurde auf Ihren Wunsch storniert." in text
    assert "Grund:" not in text


async def test_a_closed_ticket_mails_nothing(notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    closed, marker = status_changed(random_email(), "closed"), status_changed(random_email(), "resolved")
    closed_id = await publish(amqp_url, closed)
    await publish(amqp_url, marker)

    # One queue per event delivers in order: once its marker is mailed, the closed ticket has been handled.
    await wait_for_mails(smtp, marker.contact.email)
    await asyncio.sleep(0.3)
    assert smtp.mailbox.to(closed.contact.email) == []
    assert await notifier.db.deliveries.count_documents({"event_message_id": closed_id}) == 0


async def test_the_same_ticket_event_delivered_twice_is_mailed_once(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    receipt, receipt_marker = opened(random_email()), opened(random_email())
    dispatch = dispatched(receipt.contact.email, number=receipt.ticket_number)
    dispatch_marker = dispatched(random_email())
    receipt_id = await publish(amqp_url, receipt)
    await publish(amqp_url, receipt, message_id=receipt_id)
    await publish(amqp_url, receipt_marker)
    dispatch_id = await publish(amqp_url, dispatch)
    await publish(amqp_url, dispatch, message_id=dispatch_id)
    await publish(amqp_url, dispatch_marker)

    await wait_for_mails(smtp, receipt_marker.contact.email)
    await wait_for_mails(smtp, dispatch_marker.contact.email)
    await wait_for_mails(smtp, receipt.contact.email, count=2)
    subjects = sorted(message["Subject"] for message in smtp.mailbox.to(receipt.contact.email))
    assert subjects == [f"Service request {receipt.ticket_number} received",
                        f"Service request {receipt.ticket_number}: a technician has been assigned"]
    for sent in (receipt_id, dispatch_id):
        assert await notifier.db.deliveries.count_documents({"event_message_id": sent}) == 1


async def test_a_dispatch_published_five_times_to_two_notifiers_is_mailed_once(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    async with running(service, notifier_settings) as one, running(service, notifier_settings):
        event = dispatched(random_email())
        message_id = await publish(amqp_url, event)
        await asyncio.gather(*(publish(amqp_url, event, message_id=message_id) for _ in range(4)))
        await only_mail_to(smtp, event.contact.email)
        await asyncio.sleep(1.0)
        assert len(smtp.mailbox.to(event.contact.email)) == 1
        assert await one.db.deliveries.count_documents({"event_message_id": message_id}) == 1


async def test_a_contact_address_with_a_comma_is_never_mailed(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    # In `To` it would read as two addresses. The ticket contact's pattern refuses it, so the event is no
    # `ticketing.ticket.opened` the notifier accepts: it is dead-lettered, and nothing is mailed or listed.
    unmailable, marker = opened(f"{random_id('a')},x@example.com"), opened(random_email())
    message_id = await publish(amqp_url, unmailable)
    await publish(amqp_url, marker)
    await wait_for_mails(smtp, marker.contact.email)

    dead: list[str | None] = []

    async def dead_lettered() -> bool:
        queue = dead_letter_queue(event_queue("notifier", TicketOpened.routing_key))
        dead.extend(message.message_id for message in await drain_queue(amqp_url, queue))
        return message_id in dead
    await eventually(dead_lettered)
    assert len(smtp.mailbox.messages) == 1
    page = await list_deliveries(portal, operator, recipient=unmailable.contact.email)
    assert page.items == []


@pytest.mark.parametrize("build", [opened, dispatched], ids=["receipt", "status"])
async def test_a_contact_address_the_contract_lets_through_but_no_mail_server_takes_is_listed_as_failed(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient, operator: str,
        build: Any) -> None:
    unmailable, marker = build(f"{random_id('a')}..x@example.com"), build(random_email())  # two dots in a row
    await publish(amqp_url, unmailable)
    await publish(amqp_url, marker)
    await wait_for_mails(smtp, marker.contact.email)

    assert len(smtp.mailbox.messages) == 1
    page = await list_deliveries(portal, operator, recipient=unmailable.contact.email)
    [delivery] = page.items
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 0, INVALID_ADDRESS)
    assert unmailable.ticket_number in delivery.subject


async def test_line_breaks_in_the_ticket_number_or_the_technicians_name_stay_on_one_line(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    injected = "Bcc: all@example.com"
    event = dispatched(random_email(), number=f"1484049/1\r\n{injected}", friendly_name=f"Empfang\n{injected}")
    event.change.technician = f"Kari Nordmann\r\n{injected}"
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = texts(message)
    assert message["Subject"] == f"Service request 1484049/1 {injected}: a technician has been assigned"
    assert message["Bcc"] is None
    assert [raw.count(b"\nBcc:") for raw in smtp.mailbox.raw] == [0]
    assert f"Technician: Kari Nordmann {injected}" in text.splitlines()
    assert f"Device name: Empfang {injected}" in text.splitlines()
    _, calendar = calendar_of(message)
    [visit] = calendar.walk("VEVENT")
    assert str(visit["SUMMARY"]) == f"Service visit 1484049/1 {injected}: ES5462 MFP"
    assert str(visit["DESCRIPTION"]).splitlines()[0] == f"Technician: Kari Nordmann {injected}"


async def test_semicolons_commas_backslashes_and_unicode_line_breaks_stay_inside_their_calendar_property(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = dispatched(random_email(), model="A;B,C\\D\u2028DTSTART:19990101T000000Z")
    event.change.technician = "Kari;Nord,mann\u2029END:VEVENT"
    await publish(amqp_url, event)

    _, calendar = calendar_of(await only_mail_to(smtp, event.contact.email))
    [visit] = calendar.walk("VEVENT")
    assert str(visit["SUMMARY"]).endswith("A;B,C\\D DTSTART:19990101T000000Z")
    assert visit.decoded("DTSTART").year == 2027
    assert str(visit["DESCRIPTION"]).splitlines()[0] == "Technician: Kari;Nord,mann END:VEVENT"


async def test_an_encoded_word_in_the_ticket_number_cannot_add_a_header(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    # No line break for one_line() to remove: the email package decodes `=?utf-8?q?=0D=0A...?=` in the subject and
    # would write the CR LF it holds raw.
    event = opened(random_email(), number="1484049/1 =?utf-8?q?=0D=0AReply-To:_evil@example.com?=")
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    assert message["Reply-To"] is None
    assert [raw.count(b"\nReply-To:") for raw in smtp.mailbox.raw] == [0]
    assert message["Subject"] == "Service request 1484049/1 = ?utf-8?q?=0D=0AReply-To:_evil@example.com?= received"


async def test_a_non_ascii_contact_name_with_commas_stays_the_display_name_of_the_one_recipient(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    # SingleLine accepts this name (ticketing.open_ticket lets a customer type it).
    name = "Jörg Müller, evil@example.com, Bob"
    event = opened(random_email(), name=name)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    addresses = message["To"].addresses
    assert [(address.display_name, address.addr_spec) for address in addresses] == [(name, event.contact.email)]


async def test_a_contact_name_holding_an_encoded_line_break_is_mailed_rather_than_dead_lettered(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    # No control character, so the contract's SingleLine accepts it. Decoded in `To`, it made compose() raise
    # ValueError: the event was retried and dead-lettered, the receipt never went and no delivery was listed.
    event = opened(random_email(), name="Kari =?utf-8?q?=0D=0A?= Nordmann")
    message_id = await publish(amqp_url, event)

    dead: list[str | None] = []

    async def mailed_or_dead() -> bool:
        queue = dead_letter_queue(event_queue("notifier", TicketOpened.routing_key))
        dead.extend(message.message_id for message in await drain_queue(amqp_url, queue))
        return bool(smtp.mailbox.to(event.contact.email)) or message_id in dead
    await eventually(mailed_or_dead, timeout=30)
    assert message_id not in dead
    assert len(smtp.mailbox.to(event.contact.email)) == 1


async def test_markup_in_the_description_and_names_arrives_escaped_in_the_html(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    script = "<script>alert(1)</script>"
    event = opened(random_email(), name=f"Eve {script}", description=f"Toner {script}\n\"><img src=x onerror=1>",
                   friendly_name=f"Drucker {script}")
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = texts(message)
    assert "<script>" not in html and "<img" not in html
    assert "Hello Eve &lt;script&gt;alert(1)&lt;/script&gt;," in html
    assert "Toner &lt;script&gt;alert(1)&lt;/script&gt;<br>" in html
    assert "&#34;&gt;&lt;img src=x onerror=1&gt;" in html
    assert "Drucker &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"  Toner {script}" in text.splitlines()  # plain text shows what was typed


@pytest.fixture
async def notifier_with_service_desk(notifier_settings: NotifierSettings) -> AsyncIterator[tuple[ServiceInstance, str]]:
    desk = random_email()
    settings = notifier_settings.model_copy(update={"notifier_service_desk_email": desk,
                                                    "notifier_service_desk_language": "de"})
    async with running(service, settings) as instance:
        yield instance, desk


async def test_a_note_added_to_a_ticket_is_mailed_to_the_service_desk_in_its_language(
        notifier_with_service_desk: tuple[ServiceInstance, str], smtp: SmtpServer, amqp_url: str) -> None:
    _, desk = notifier_with_service_desk
    event = updated()
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, desk)
    text, html = texts(message)
    assert message["Subject"] == f"Ergänzung zur Serviceanfrage {event.ticket_number} (Kunde 17102995)"
    assert message["Content-Language"] == "de"
    assert message["Auto-Submitted"] == "auto-generated"
    for fact in ("Gerät: ES5462 MFP, Seriennummer AK6C004746", "Kundennummer: 17102995",
                 f"Kontakt: Christine Zimmermann, {event.contact.email}, Tel. 0211/5266-252",
                 "Ergänzung vom 05.03.2027, 10:15 UTC:\n  Fehler tritt nur bei Duplex auf.\n  Bitte vormittags kommen.",
                 link_of(event.ticket_number)):
        assert fact in text
    assert "Fehler tritt nur bei Duplex auf.<br>" in html
    assert smtp.mailbox.to(event.contact.email) == []  # the customer is not mailed about their own note


async def test_a_note_is_mailed_to_the_service_desk_alone(
        notifier_with_service_desk: tuple[ServiceInstance, str], smtp: SmtpServer, amqp_url: str) -> None:
    _, desk = notifier_with_service_desk
    event = updated()
    await publish(amqp_url, event)

    await only_mail_to(smtp, desk)
    await asyncio.sleep(0.5)
    assert smtp.mailbox.to(event.contact.email) == []

    async def one() -> bool:
        return len(smtp.mailbox.messages) == 1
    await eventually(one)


async def test_a_note_mails_nobody_when_no_service_desk_is_set(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = updated()
    message_id = await publish(amqp_url, event)

    async def handled() -> bool:
        key = f"{event_queue('notifier', TicketUpdated.routing_key)}:{message_id}"
        return await notifier.db.message_claims.count_documents({"_id": key, "done": True}) == 1
    await eventually(handled)
    assert smtp.mailbox.messages == []
    assert await notifier.db.deliveries.count_documents({"event_message_id": message_id}) == 0


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_calendar_entry_is_explained_in_every_language_in_words_of_its_own(language: str) -> None:
    values = {"ticket_number": "1484049/1", "ticket_url": link_of("1484049/1"), "customer_number": None,
              "device": {"model": "ES5462 MFP", "serial_number": "AK6C004746", "friendly_name": None},
              "address": list(ADDRESS_LINES), "name": None, "by": "operator", "technician": None, "eta": None,
              "eta_zone": None, "reason": [], "note": []}
    explained = {}
    for status, calendar in (("dispatched", "publish"), ("en_route", "update"), ("cancelled", "cancel")):
        mail = render("ticket_status", language, public_url=PORTAL, **values, status=status, calendar=calendar)
        [line] = [line for line in mail.text.splitlines() if ".ics" in line]
        assert line in text_of(mail.html)
        explained[calendar] = line
        without = render("ticket_status", language, public_url=PORTAL, **values, status=status, calendar=None)
        assert ".ics" not in without.text and ".ics" not in without.html
    assert len(set(explained.values())) == 3


@pytest.mark.parametrize("language", [*LANGUAGES, "fr"])
def test_every_ticket_mail_renders_in_every_language_with_a_subject_of_one_line(language: str) -> None:
    common = {"ticket_number": "1484049/1", "ticket_url": link_of("1484049/1"), "customer_number": None,
              "device": {"model": "ES5462 MFP", "serial_number": "AK6C004746", "friendly_name": None},
              "address": list(ADDRESS_LINES), "name": None}
    mails = [render("ticket_receipt", language, public_url=PORTAL, **common, status="to_be_scheduled",
                    category="other", description=["x"], phone=None),
             render("ticket_note", language, public_url=PORTAL, **common, note=["x"], noted_at=ETA,
                    contact={"name": "C", "email": "c@example.com", "phone": None})]
    subjects = set()
    for status in MAILED_STATUSES:
        mail = render("ticket_status", language, public_url=PORTAL, **common, status=status, by="customer",
                      technician=None, eta=None, eta_zone=None, reason=[], note=[], calendar=None)
        subjects.add(mail.subject)
        mails.append(mail)
    assert len(subjects) == len(MAILED_STATUSES)
    for rendered in mails:
        assert rendered.language == (language if language in LANGUAGES else "en")
        assert "1484049/1" in rendered.subject and "\n" not in rendered.subject
        assert link_of("1484049/1") in rendered.text
        assert f'href="{link_of("1484049/1")}"' in rendered.html
        assert f"{PORTAL}/" in rendered.text

