"""Meter-reading reminders as received, with the readings sheet attached, and their one-click unsubscribe."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts.accounts import Language
from contracts.client import PortalClient
from contracts.metering import READING_SHEET_COLUMNS, READING_SHEET_NAME, ReminderCounter, ReminderDevice, ReminderDue
from contracts.notifier import RemindersUnsubscribed, Unsubscribe
from contracts.registration import Location, ReminderRecipient
from services.notifier.mails import XLSX, render
from services.notifier.store import who_customer, who_user
from services.runtime.service import ServiceInstance
from tests.builders import random_email, random_id
from tests.notifier.support import SmtpServer, profile_updated, publish
from tests.notifier.test_mails import only_mail_to, parts
from tests.notifier.test_registration_mails import known_user
from tests.support import EventTap, eventually, outcome

LANGUAGES: tuple[Language, ...] = ("de", "en", "nb")
PUBLIC_URL = "https://service.example.test"  # the notifier fixture's PORTAL_PUBLIC_URL
UNSUBSCRIBE_LINK = re.compile(re.escape(PUBLIC_URL) + r"/unsubscribe\?token=([A-Za-z0-9_-]+)")


def devices() -> list[ReminderDevice]:
    return [
        ReminderDevice(device_id=random_id("d"), serial_number="AK6C004746", model="C332dn",
                       friendly_name="Empfang 2. OG",
                       location=Location(name="Zimmermann GmbH", street="Hauptstraße 5", postal_code="10115",
                                         city="Berlin", building_location="Raum 204"),
                       counters=[ReminderCounter(counter="mono", last_value=8500, last_date=date(2026, 12, 31)),
                                 ReminderCounter(counter="color", last_value=1207, last_date=date(2026, 12, 31))]),
        ReminderDevice(device_id=random_id("d"), serial_number="AK6C009911", model="ES5431dn",
                       location=Location(city="Hamburg"),
                       counters=[ReminderCounter(counter="mono", last_value=310, last_date=date(2026, 9, 30))]),
    ]


def reminder_due(*, email: str | None = None, user_id: str | None = None, customer_number: str | None = None,
                 kind: str = "opening", language: str | None = None,
                 listed: list[ReminderDevice] | None = None) -> ReminderDue:
    return ReminderDue(
        reminder_id=random_id("r"),
        recipient=ReminderRecipient(email=email, user_id=user_id, customer_number=customer_number),
        language=language, kind=kind, period_end=date(2027, 3, 31), window_closes=date(2027, 4, 10),
        devices=listed if listed is not None else devices(),
        reading_url=f"{PUBLIC_URL}/readings?token={random_id()}")


def customer() -> str:
    return random_id("C-")


# --- the mail ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Words:
    opening: str
    second: str
    missing: str
    closes: str
    readings: tuple[str, ...]
    greeting: str


MAIL = {
    "de": Words(opening="Bitte melden Sie Ihre Zählerstände (Abrechnungszeitraum bis 31.03.2027)",
                second="Erinnerung: Ihre Zählerstände fehlen noch (Abrechnungszeitraum bis 31.03.2027)",
                missing="liegen uns die Zählerstände zum Ende des Abrechnungszeitraums am 31.03.2027 noch nicht vor",
                closes="Zählerstände, die bis zum 10.04.2027 eingehen, gelten für diesen Zeitraum.",
                readings=("8500 am 31.12.2026", "1207 am 31.12.2026", "310 am 30.09.2026"),
                greeting="Guten Tag Christine Zimmermann,"),
    "en": Words(opening="Please submit your meter readings (billing period ending 2027-03-31)",
                second="Reminder: your meter readings are still missing (billing period ending 2027-03-31)",
                missing="we have not yet received the meter readings for the billing period ending 2027-03-31",
                closes="Readings count for this period until 2027-04-10.",
                readings=("8500 on 2026-12-31", "1207 on 2026-12-31", "310 on 2026-09-30"),
                greeting="Hello Christine Zimmermann,"),
    "nb": Words(opening="Send inn måleravlesningene dine (faktureringsperiode til 31.03.2027)",
                second="Påminnelse: måleravlesningene dine mangler fortsatt (faktureringsperiode til 31.03.2027)",
                missing="vi har ennå ikke mottatt måleravlesningene for faktureringsperioden som slutter 31.03.2027",
                closes="Avlesninger som kommer inn innen 10.04.2027, gjelder for denne perioden.",
                readings=("8500 den 31.12.2026", "1207 den 31.12.2026", "310 den 30.09.2026"),
                greeting="Hei Christine Zimmermann,"),
}


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def header_token(message: EmailMessage) -> str:
    """The token of the `List-Unsubscribe` header, which must be one such link in angle brackets."""
    value = message["List-Unsubscribe"]
    found = UNSUBSCRIBE_LINK.fullmatch(value[1:-1]) if value.startswith("<") and value.endswith(">") else None
    assert found is not None, value
    return found.group(1)


def raw_mail_to(smtp: SmtpServer, address: str) -> bytes:
    [raw] = [raw for raw in smtp.mailbox.raw if f"<{address}>".encode() in raw or f"To: {address}".encode() in raw]
    return raw


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_reminder_lists_each_device_with_its_last_readings_the_deadline_and_the_personal_link(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    words = MAIL[language]
    _, address = await known_user(notifier, language)
    event = reminder_due(email=address, language="en")  # the address's saved language wins over the event's
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, address)
    text, html = parts(message)
    assert message["Subject"].lstrip() == words.opening
    assert message["Content-Language"] == language
    assert message["Auto-Submitted"] == "auto-generated"
    assert text.startswith(words.greeting)
    assert words.missing not in text
    for fact in ("AK6C004746", "Empfang 2. OG", "C332dn", "Zimmermann GmbH, Hauptstraße 5, 10115 Berlin, Raum 204",
                 "AK6C009911", "ES5431dn", "Hamburg", "mono", "color", words.closes, event.reading_url,
                 *words.readings):
        assert fact in text
        assert fact in text_of(html)
    assert f'href="{event.reading_url}"' in html
    assert text.index("AK6C004746") < text.index("8500") < text.index("AK6C009911") < text.index("310")


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_second_reminder_says_the_readings_are_still_missing(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    _, address = await known_user(notifier, language)
    await publish(amqp_url, reminder_due(email=address, kind="second"))
    message = await only_mail_to(smtp, address)
    text, html = parts(message)
    assert message["Subject"].lstrip() == MAIL[language].second
    assert MAIL[language].missing in text
    assert MAIL[language].missing in text_of(html)


async def test_a_reminder_carries_one_click_unsubscribe_headers_on_one_line(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "de")
    await publish(amqp_url, reminder_due(email=address))
    message = await only_mail_to(smtp, address)

    header_token(message)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # As sent: a plain URL in angle brackets, not RFC 2047 encoded words that mail clients would not follow.
    raw = raw_mail_to(smtp, address)
    assert f"\r\nList-Unsubscribe: {message['List-Unsubscribe']}\r\n".encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw


async def test_each_device_in_the_mail_has_its_own_unsubscribe_link(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "en")
    await publish(amqp_url, reminder_due(email=address))
    message = await only_mail_to(smtp, address)
    text, html = parts(message)

    first, second = UNSUBSCRIBE_LINK.findall(text)
    assert first != second
    assert text.index("AK6C004746") < text.index(first) < text.index("AK6C009911") < text.index(second)
    assert f'href="{PUBLIC_URL}/unsubscribe?token={first}"' in html
    assert f'href="{PUBLIC_URL}/unsubscribe?token={second}"' in html
    assert header_token(message) not in (first, second)


def test_the_reminder_renders_in_every_language_and_french_falls_back_to_english() -> None:
    values: dict[str, Any] = {
        "name": None, "second": False, "period_end": date(2027, 3, 31), "window_closes": date(2027, 4, 10),
        "reading_url": "https://r.example/1", "whole_customer": True,
        "devices": [{"serial_number": "S1", "friendly_name": None, "model": "M", "location": None,
                     "unsubscribe_url": "https://u.example/1",
                     "counters": [{"counter": "mono", "last_value": None, "last_date": None}]}]}
    for language in (*LANGUAGES, "fr"):
        rendered = render("meter_reading_reminder", language, public_url=PUBLIC_URL, **values)
        assert rendered.language == (language if language in LANGUAGES else "en")
        assert rendered.subject and "\n" not in rendered.subject
        assert f"{PUBLIC_URL}/" in rendered.text and f'href="{PUBLIC_URL}/"' in rendered.html
        assert "https://u.example/1" in rendered.text and 'href="https://u.example/1"' in rendered.html
    english = render("meter_reading_reminder", "en", public_url=PUBLIC_URL, **values)
    assert "mono: no reading yet" in english.text
    assert "every device of your customer number" in english.text


# --- the readings sheet -----------------------------------------------------------------------

def sheet_rows(message: EmailMessage) -> list[tuple[object, ...]]:
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == XLSX
    workbook = openpyxl.load_workbook(io.BytesIO(attachment.get_content()), read_only=True)
    assert workbook.sheetnames == [READING_SHEET_NAME]
    return list(workbook[READING_SHEET_NAME].iter_rows(values_only=True))


async def test_the_attached_sheet_lists_every_device_and_counter_with_its_last_reading_ready_to_fill_in(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "de")
    listed = devices()
    listed[1].counters.append(ReminderCounter(counter="color"))  # never read: nothing to pre-fill
    await publish(amqp_url, reminder_due(email=address, listed=listed))
    message = await only_mail_to(smtp, address)

    assert message.get_content_type() == "multipart/mixed"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "zaehlerstaende-2027-03-31.xlsx"
    assert sheet_rows(message) == [
        READING_SHEET_COLUMNS,
        ("AK6C004746", "mono", 8500, "2026-12-31", None, None),
        ("AK6C004746", "color", 1207, "2026-12-31", None, None),
        ("AK6C009911", "mono", 310, "2026-09-30", None, None),
        ("AK6C009911", "color", None, None, None, None),
    ]


# --- who gets it, in which language -----------------------------------------------------------

async def test_an_address_is_recognised_whatever_its_case_and_mailed_in_its_saved_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "nb")
    shouted = address.upper()
    await publish(amqp_url, reminder_due(email=shouted, language="de"))
    message = await only_mail_to(smtp, shouted)
    assert message["Content-Language"] == "nb"
    assert message["Subject"].lstrip() == MAIL["nb"].opening
    assert parts(message)[0].startswith("Hei Christine Zimmermann,")


async def test_an_unknown_address_gets_the_language_most_of_the_customers_users_have(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    number = customer()
    for language in ("nb", "de", "nb", "en"):
        await known_user(notifier, language, customer_number=number)
    await known_user(notifier, "de", customer_number=customer())  # another customer's user does not count
    await known_user(notifier, "de", customer_number=customer())
    address = random_email()
    await publish(amqp_url, reminder_due(email=address, customer_number=number, language="de"))
    message = await only_mail_to(smtp, address)
    assert message["Content-Language"] == "nb"
    assert parts(message)[0].startswith("Hei,")


@pytest.mark.parametrize(("language", "expected"), [("de", "de"), (None, "en"), ("fr", "en")])
async def test_an_address_of_no_known_user_or_customer_gets_the_events_language_else_english(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: str | None, expected: str) -> None:
    address = random_email()
    await publish(amqp_url, reminder_due(email=address, customer_number=customer(), language=language))
    message = await only_mail_to(smtp, address)
    assert message["Content-Language"] == expected
    assert message["Subject"].lstrip() == MAIL[expected].opening


async def test_a_customer_reminder_goes_to_every_known_user_of_the_customer_in_their_own_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    number = customer()
    users = {language: (await known_user(notifier, language, customer_number=number))[1] for language in LANGUAGES}
    _, outsider = await known_user(notifier, "de", customer_number=customer())
    await publish(amqp_url, reminder_due(customer_number=number, language="en"))

    for language, address in users.items():
        message = await only_mail_to(smtp, address)
        text, _ = parts(message)
        assert message["Content-Language"] == language
        assert message["Subject"].lstrip() == MAIL[language].opening
        assert "AK6C004746" in text and MAIL[language].readings[0] in text
        assert len(message["To"].addresses) == 1
    assert smtp.mailbox.to(outsider) == []
    assert len({header_token(smtp.mailbox.to(address)[0]) for address in users.values()}) == 3  # each their own


async def test_a_user_reminder_goes_to_the_address_the_user_saved(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = await known_user(notifier, "de")
    await publish(amqp_url, reminder_due(user_id=user_id, language="en"))
    message = await only_mail_to(smtp, address)
    assert message["Content-Language"] == "de"
    assert message["To"] == f"Christine Zimmermann <{address}>"


async def test_a_reminder_for_a_customer_not_known_yet_arrives_once_one_of_its_users_is(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    number, user_id, address = customer(), random_id("u"), random_email()
    await publish(amqp_url, reminder_due(customer_number=number))
    await until_waiting(notifier, who_customer(number))
    assert smtp.mailbox.to(address) == []

    user = profile_updated(user_id, address, version=1, language="nb").model_copy(update={"customer_number": number})
    await publish(amqp_url, user)
    message = await only_mail_to(smtp, address)
    assert message["Subject"].lstrip() == MAIL["nb"].opening
    await asyncio.sleep(1.0)
    assert len(smtp.mailbox.to(address)) == 1


async def test_a_reminder_for_a_user_not_known_yet_arrives_once_the_accounts_event_does(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = random_id("u"), random_email()
    await publish(amqp_url, reminder_due(user_id=user_id))
    await until_waiting(notifier, who_user(user_id))
    assert smtp.mailbox.to(address) == []

    await publish(amqp_url, profile_updated(user_id, address, version=1, language="de"))
    message = await only_mail_to(smtp, address)
    assert message["Subject"].lstrip() == MAIL["de"].opening


async def until_waiting(notifier: ServiceInstance, who: str) -> None:
    """Until a mail for `who` waits in `waiting_mails` (the notifier does not know them yet)."""
    async def kept() -> bool:
        return await notifier.db.waiting_mails.count_documents({"who": who}) == 1
    await eventually(kept)


async def test_the_same_reminder_twice_gives_one_mail_and_one_set_of_links(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "en")
    _, marker = await known_user(notifier, "en")
    event = reminder_due(email=address)
    message_id = await publish(amqp_url, event)
    await only_mail_to(smtp, address)
    await notifier.db.message_claims.delete_many({})  # as after PORTAL_IDEMPOTENCY_DAYS: only the delivery remembers
    await publish(amqp_url, event, message_id=message_id)
    await publish(amqp_url, reminder_due(email=marker))

    # One queue delivers in order: once the marker is mailed, the copy has been handled.
    await only_mail_to(smtp, marker)
    assert len(smtp.mailbox.to(address)) == 1
    assert await notifier.db.unsubscribe_tokens.count_documents({"reminder_id": event.reminder_id}) == 3


# --- unsubscribe ------------------------------------------------------------------------------

async def unsubscribe(portal: PortalClient, token: str) -> dict[str, Any]:
    return await portal.call(Unsubscribe.routing_key, {"token": token})


async def test_a_device_link_from_the_mail_unsubscribes_that_device_once(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient) -> None:
    number = customer()
    _, address = await known_user(notifier, "en", customer_number=number)
    event = reminder_due(email=address, customer_number=number)
    first, second = event.devices
    async with EventTap(amqp_url, RemindersUnsubscribed.routing_key) as tap:
        await publish(amqp_url, event)
        text, _ = parts(await only_mail_to(smtp, address))
        link, _ = UNSUBSCRIBE_LINK.findall(text)

        assert await unsubscribe(portal, link) == {}
        unsubscribed = await tap.next(RemindersUnsubscribed.routing_key)
        assert unsubscribed["device_id"] == first.device_id
        assert unsubscribed["email"] == address
        assert unsubscribed["recipient"] == {"customer_number": number, "user_id": None, "email": address}
        assert datetime.fromisoformat(unsubscribed["unsubscribed_at"]) > datetime.now(UTC) - timedelta(minutes=1)

        assert await unsubscribe(portal, link) == {}  # a second click: ok, and nothing more
        await asyncio.sleep(1.5)  # three outbox polls
        assert tap.named(RemindersUnsubscribed.routing_key) == [unsubscribed]
        assert second.device_id not in json.dumps(tap.events)


async def test_the_list_unsubscribe_header_unsubscribes_every_device_of_the_mail(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient) -> None:
    user_id, address = await known_user(notifier, "de")
    event = reminder_due(user_id=user_id)
    async with EventTap(amqp_url, RemindersUnsubscribed.routing_key) as tap:
        await publish(amqp_url, event)
        message = await only_mail_to(smtp, address)

        assert await unsubscribe(portal, header_token(message)) == {}

        async def both() -> bool:
            return len(tap.named(RemindersUnsubscribed.routing_key)) >= 2
        await eventually(both)
        await asyncio.sleep(1.0)
        events = tap.named(RemindersUnsubscribed.routing_key)
        assert sorted(body["device_id"] for body in events) == sorted(device.device_id for device in event.devices)
        assert {body["email"] for body in events} == {address}
        assert {json.dumps(body["recipient"], sort_keys=True) for body in events} == {
            json.dumps({"customer_number": None, "email": None, "user_id": user_id}, sort_keys=True)}


async def test_a_forged_token_is_refused_as_token_invalid(
        notifier: ServiceInstance, portal: PortalClient) -> None:
    assert await outcome(portal, Unsubscribe.routing_key, {"token": "forged-" + random_id()}) == "token_invalid"


async def test_an_expired_link_is_refused_as_token_invalid(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient) -> None:
    _, address = await known_user(notifier, "en")
    await publish(amqp_url, reminder_due(email=address))
    token, _ = UNSUBSCRIBE_LINK.findall(parts(await only_mail_to(smtp, address))[0])
    await notifier.db.unsubscribe_tokens.update_one(
        {"_id": hashlib.sha256(token.encode()).hexdigest()},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(minutes=1)}})
    assert await outcome(portal, Unsubscribe.routing_key, {"token": token}) == "token_invalid"


async def test_unsubscribe_tokens_are_stored_only_as_hashes(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    _, address = await known_user(notifier, "en")
    event = reminder_due(email=address)
    await publish(amqp_url, event)
    message = await only_mail_to(smtp, address)
    tokens = [*UNSUBSCRIBE_LINK.findall(parts(message)[0]), header_token(message)]

    stored = [document async for document in notifier.db.unsubscribe_tokens.find(
        {"reminder_id": event.reminder_id})]
    assert sorted(document["_id"] for document in stored) == sorted(
        hashlib.sha256(token.encode()).hexdigest() for token in tokens)
    everything = json.dumps(stored, default=str)
    assert not any(token in everything for token in tokens)
    assert {tuple(document["device_ids"]) for document in stored} == {
        (event.devices[0].device_id,), (event.devices[1].device_id,),
        (event.devices[0].device_id, event.devices[1].device_id)}


async def test_each_device_of_a_mail_shared_by_two_customers_unsubscribes_its_own_customers_setting(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient) -> None:
    first, second = customer(), customer()
    address = f"{random_id('facility')}@example.com"
    one, two = devices()
    one = one.model_copy(update={"recipient": ReminderRecipient(customer_number=first, email=address)})
    two = two.model_copy(update={"recipient": ReminderRecipient(customer_number=second, email=address)})
    event = reminder_due(email=address, customer_number=first, listed=[one, two])
    async with EventTap(amqp_url, RemindersUnsubscribed.routing_key) as tap:
        await publish(amqp_url, event)
        message = await only_mail_to(smtp, address)
        assert await unsubscribe(portal, header_token(message)) == {}

        async def both() -> bool:
            return len(tap.named(RemindersUnsubscribed.routing_key)) >= 2
        await eventually(both)
    owners = {body["device_id"]: body["recipient"]["customer_number"]
              for body in tap.named(RemindersUnsubscribed.routing_key)}
    assert owners == {one.device_id: first, two.device_id: second}
