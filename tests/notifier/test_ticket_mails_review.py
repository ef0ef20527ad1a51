"""Adversarial review of the ticket mails: each test here failed against 833f87b."""

from __future__ import annotations

from datetime import datetime

from icalendar import Calendar

from services.notifier.settings import NotifierSettings
from services.notifier.tickets import visit_calendar
from services.runtime.service import ServiceInstance
from tests.builders import random_email
from tests.notifier.support import SmtpServer, publish
from tests.notifier.test_mails import only_mail_to
from tests.notifier.test_ticket_mails import CET, ETA, attachments, dispatched, status_changed, texts
from tests.support import eventually

# --- D3: the visit stays in the customer's calendar after it is cancelled ----------------------------------------

async def test_cancelling_a_dispatched_visit_withdraws_its_calendar_entry(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    email = random_email()
    dispatch = dispatched(email, number="7000001/1", sequence=1)
    await publish(amqp_url, dispatch)
    first = await only_mail_to(smtp, email)
    [entry] = attachments(first)
    [visit] = Calendar.from_ical(entry.get_content()).walk("VEVENT")

    cancel = status_changed(email, "cancelled", number="7000001/1", note="Kunde hat abgesagt.", sequence=2)
    cancel.previous_status = "dispatched"
    await publish(amqp_url, cancel)

    async def both() -> bool:
        return len(smtp.mailbox.to(email)) == 2
    await eventually(both)
    [second] = [mail for mail in smtp.mailbox.to(email) if "cancelled" in str(mail["Subject"])]
    calendars = [part for part in attachments(second) if part.get_content_type() == "text/calendar"]
    assert calendars, "the cancellation carries no calendar update: the visit stays in the customer's calendar"
    calendar = Calendar.from_ical(calendars[0].get_content())
    [withdrawn] = calendar.walk("VEVENT")
    assert calendar["METHOD"] == "CANCEL" and withdrawn["STATUS"] == "CANCELLED"
    assert withdrawn["UID"] == visit["UID"] and withdrawn.decoded("SEQUENCE") == 2


async def test_a_new_eta_on_the_way_updates_the_calendar_entry(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    # The README promises a later entry with the same UID and a higher SEQUENCE replaces the first; none is sent.
    email, later = random_email(), datetime(2027, 3, 9, 11, 0, tzinfo=CET)
    event = status_changed(email, "en_route", technician="Kari Nordmann", eta=later, number="7000002/1", sequence=2)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, email)
    text, _ = texts(message)
    assert "Expected arrival: 2027-03-09 11:00 (UTC+01:00)" in text
    calendars = [part for part in attachments(message) if part.get_content_type() == "text/calendar"]
    assert calendars, "the changed ETA is only in the text; the calendar keeps the old time"


# --- D5 (low): METHOD:PUBLISH without ORGANIZER ----------------------------------------------------------------

def test_a_published_visit_names_its_organizer() -> None:
    # RFC 5546 §3.2.1: a VEVENT published with METHOD:PUBLISH has exactly one ORGANIZER.
    settings = NotifierSettings(public_url="https://portal.vendor.example/")
    calendar = Calendar.from_ical(visit_calendar(dispatched("c@example.com", number="1484049/1"), eta=ETA,
                                                 language="en", settings=settings))
    [visit] = calendar.walk("VEVENT")
    assert "ORGANIZER" in visit
