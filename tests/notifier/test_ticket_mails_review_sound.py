"""Review probes that passed (kept as evidence of what was checked and found sound)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

from icalendar import Calendar

from contracts.registration import Location
from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from services.runtime.service import ServiceInstance
from tests.builders import random_email
from tests.notifier.support import SmtpServer, publish
from tests.notifier.test_mails import only_mail_to
from tests.notifier.test_registration_mails import known_user
from tests.notifier.test_ticket_mails import (
    attachments,
    calendar_of,
    dispatched,
    opened,
    status_changed,
    texts,
    updated,
)
from tests.support import eventually, running


async def test_two_instances_and_five_copies_mail_once(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    async with running(service, notifier_settings) as one, running(service, notifier_settings):
        event = dispatched(random_email())
        message_id = await publish(amqp_url, event)
        await asyncio.gather(*(publish(amqp_url, event, message_id=message_id) for _ in range(4)))
        await only_mail_to(smtp, event.contact.email)
        await asyncio.sleep(1.0)
        assert len(smtp.mailbox.to(event.contact.email)) == 1
        assert await one.db.deliveries.count_documents({"event_message_id": message_id}) == 1


async def test_saved_language_wins_and_the_calendar_follows_it(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "de")
    event = dispatched(address.upper().replace("@EXAMPLE.COM", "@example.com"), "nb")
    await publish(amqp_url, event)
    message = await only_mail_to(smtp, event.contact.email)
    assert message["Content-Language"] == "de"
    _, calendar = calendar_of(message)
    [visit] = calendar.walk("VEVENT")
    assert str(visit["SUMMARY"]).startswith("Servicetermin")


async def test_unknown_event_language_falls_back_to_english(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = opened(random_email(), "fr")
    await publish(amqp_url, event)
    message = await only_mail_to(smtp, event.contact.email)
    assert message["Content-Language"] == "en"


async def test_missing_optional_fields_still_mail(
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
    [entry] = attachments(message)
    [visit] = Calendar.from_ical(entry.get_content()).walk("VEVENT")
    assert visit.decoded("DTSTART") == datetime(2027, 3, 9, 13, 0, tzinfo=UTC)
    assert str(visit["LOCATION"]) == "Hansaallee 187"


async def test_semicolons_commas_and_backslashes_survive_the_calendar(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = dispatched(random_email(), model="A;B,C\\D\u2028DTSTART:19990101T000000Z")
    event.change.technician = "Kari;Nord,mann\u2029END:VEVENT"
    await publish(amqp_url, event)
    _, calendar = calendar_of(await only_mail_to(smtp, event.contact.email))
    [visit] = calendar.walk("VEVENT")
    assert str(visit["SUMMARY"]).endswith("A;B,C\\D DTSTART:19990101T000000Z")
    assert visit.decoded("DTSTART").year == 2027
    assert str(visit["DESCRIPTION"]).splitlines()[0] == "Technician: Kari;Nord,mann END:VEVENT"


async def test_a_note_never_reaches_the_customer_even_with_a_desk(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    desk = random_email()
    settings = notifier_settings.model_copy(update={"notifier_service_desk_email": desk})
    async with running(service, settings):
        event = updated()
        await publish(amqp_url, event)
        await only_mail_to(smtp, desk)
        await asyncio.sleep(0.5)
        assert smtp.mailbox.to(event.contact.email) == []

        async def one() -> bool:
            return len(smtp.mailbox.messages) == 1
        await eventually(one)
