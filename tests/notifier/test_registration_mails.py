"""The registration mails: device registration, bulk upload result (with the result file), request decisions."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import date
from email.message import EmailMessage
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts.accounts import Language
from contracts.base import FileObject
from contracts.registration import BulkStatus, BulkUploadCompleted, DeviceRegisteredEvent, RequestDecided, Warranty
from services.notifier.mails import LANGUAGES as MAIL_LANGUAGES
from services.notifier.mails import XLSX, render
from services.notifier.store import RecipientStore, who_user
from services.registration.excel import result_workbook
from services.runtime.service import ServiceInstance
from tests.builders import random_email, random_id
from tests.notifier.support import SmtpServer, profile_updated, publish
from tests.notifier.test_mails import only_mail_to, parts
from tests.support import eventually

LANGUAGES: tuple[Language, ...] = ("de", "en", "nb")


async def known_user(instance: ServiceInstance, language: str | None = "en", **fields: Any) -> tuple[str, str]:
    """A recipient as the accounts events leave it: (user_id, address)."""
    user_id, address = random_id("u"), random_email()
    values = {"email": address, "first_name": "Christine", "last_name": "Zimmermann", **fields}
    if language is not None:
        values["language"] = language
    await RecipientStore(instance.db).remember(user_id, values, version=0)
    return user_id, address


def device_registered(user_id: str, language: str = "en", *, extended: bool = True,
                      friendly_name: str | None = "Empfang 2. OG") -> DeviceRegisteredEvent:
    warranty = Warranty(start_date=date(2026, 3, 2), end_date=date(2029, 3, 2) if extended else date(2027, 3, 2),
                        months=36 if extended else 12, extended=extended)
    return DeviceRegisteredEvent(device_id=random_id("d"), serial_number="AK6C004746", model="ES5431dn",
                                 friendly_name=friendly_name, registered_by=user_id, language=language,
                                 warranty=warranty)


HEADER = ("serial_number", "purchase_date", "friendly_name")
ROWS: list[tuple[list[object], str, str]] = [
    (["AK6C004746", "2026-03-02", "Empfang"], "registered", "36 months of warranty"),
    (["XX1", "2026-03-02", None], "rejected", "unknown serial number"),
]


def result_file() -> FileObject:
    return FileObject.from_bytes("bulk-result.xlsx", XLSX, result_workbook(HEADER, ROWS))


def bulk_completed(user_id: str, language: str = "en", *, status: BulkStatus = "processed", reason: str | None = None,
                   file: FileObject | None = None, limit: int | None = None) -> BulkUploadCompleted:
    failed = status == "failed"
    return BulkUploadCompleted(upload_id=random_id("b"), user_id=user_id, filename="geraete-maerz.xlsx",
                               status=status, total=0 if failed else 2, processed=0 if failed else 1,
                               unprocessed=0 if failed else 1, reason=reason, limit=limit, language=language,
                               result_file=file)


def request_decided(user_id: str, *, approved: bool, kind: str = "same_location_claim", reason: str | None = None,
                    devices: int = 3, language: str = "en") -> RequestDecided:
    return RequestDecided(request_id=random_id("r"), kind=kind, approved=approved, reason=reason, user_id=user_id,
                          device_ids=[random_id("d") for _ in range(devices)], language=language)


@pytest.mark.parametrize("language", [*MAIL_LANGUAGES, "fr"])
def test_every_registration_mail_renders_in_every_language_with_the_footer_and_french_falls_back_to_english(
        language: str) -> None:
    values = {"name": None, "model": "m", "serial_number": "s", "friendly_name": None, "warranty": None,
              "filename": "f.xlsx", "failed": True, "total": 0, "processed": 0, "unprocessed": 0, "reason": None,
              "attached": False, "kind": "other", "approved": False, "devices": 1, "limit": None}
    for mail in ("device_registration", "bulk_result", "request_decision"):
        rendered = render(mail, language, public_url="https://service.example.test", **values)
        assert rendered.language == (language if language in MAIL_LANGUAGES else "en")
        assert rendered.subject and "\n" not in rendered.subject
        assert "https://service.example.test/" in rendered.text
        assert 'href="https://service.example.test/"' in rendered.html
    assert render("bulk_result", "fr", public_url="https://x", **values).text.count(
        "an error occurred while processing it.") == 1


# --- device registration ----------------------------------------------------------------------

REGISTRATION = {
    "de": ("Ihr Gerät ES5431dn (AK6C004746) wurde registriert", "Garantie: 36 Monate, bis 02.03.2029",
           "innerhalb von 30 Tagen nach dem Kauf registriert", "Garantie: 12 Monate, bis 02.03.2027",
           "Die Garantie wurde nicht verlängert"),
    "en": ("Your device ES5431dn (AK6C004746) has been registered", "Warranty: 36 months, until 2029-03-02",
           "the warranty has been extended to 36 months", "Warranty: 12 months, until 2027-03-02",
           "The warranty has not been extended"),
    "nb": ("Enheten din ES5431dn (AK6C004746) er registrert", "Garanti: 36 måneder, til 02.03.2029",
           "er garantien forlenget til 36 måneder", "Garanti: 12 måneder, til 02.03.2027",
           "Garantien er ikke forlenget"),
}


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_registered_device_is_confirmed_with_its_warranty_in_the_users_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    subject, warranty, extended, standard_warranty, standard = REGISTRATION[language]
    user_id, address = await known_user(notifier, language)
    other_id, other_address = await known_user(notifier, language)
    await publish(amqp_url, device_registered(user_id, "en"))  # the saved language wins over the event's
    await publish(amqp_url, device_registered(other_id, "en", extended=False, friendly_name=None))

    message = await only_mail_to(smtp, address)
    text, html = parts(message)
    assert message["Subject"] == subject
    assert message["Content-Language"] == language
    assert message["To"] == f"Christine Zimmermann <{address}>"
    for fact in ("ES5431dn", "AK6C004746", "Empfang 2. OG", warranty, extended):
        assert fact in text
        assert fact in html
    assert standard not in text

    text, html = parts(await only_mail_to(smtp, other_address))
    assert standard_warranty in text and standard in text and standard in html
    assert extended not in text
    assert "Empfang" not in text


async def test_a_recipient_without_a_saved_language_gets_the_events_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = await known_user(notifier, None)
    await publish(amqp_url, device_registered(user_id, "nb"))
    message = await only_mail_to(smtp, address)
    assert message["Content-Language"] == "nb"
    assert message["Subject"] == REGISTRATION["nb"][0]


async def test_a_device_registered_by_a_bulk_upload_gets_no_mail_of_its_own(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = await known_user(notifier, "en")
    bulk_row = device_registered(user_id).model_copy(update={"upload_id": "upload-1"})
    await publish(amqp_url, bulk_row)
    await publish(amqp_url, device_registered(user_id))  # a single registration after it: mailed
    message = await only_mail_to(smtp, address)
    assert message["Subject"] == REGISTRATION["en"][0]
    await asyncio.sleep(0.5)
    assert len(smtp.mailbox.to(address)) == 1


# --- bulk results -----------------------------------------------------------------------------

BULK = {
    "de": ("Sammelregistrierung geraete-maerz.xlsx: 1 von 2 Geräten registriert",
           ["Geräte in der Datei: 2", "Registriert: 1", "Nicht registriert: 1", "angehängte Ergebnisdatei"]),
    "en": ("Bulk registration geraete-maerz.xlsx: 1 of 2 devices registered",
           ["Devices in the file: 2", "Registered: 1", "Not registered: 1", "attached result file"]),
    "nb": ("Masseregistrering geraete-maerz.xlsx: 1 av 2 enheter registrert",
           ["Enheter i filen: 2", "Registrert: 1", "Ikke registrert: 1", "vedlagte resultatfilen"]),
}


def attachments(message: EmailMessage) -> list[EmailMessage]:
    return list(message.iter_attachments())


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_processed_upload_is_summed_up_with_the_result_file_attached_intact(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    subject, facts = BULK[language]
    user_id, address = await known_user(notifier, language)
    file = result_file()
    await publish(amqp_url, bulk_completed(user_id, file=file))

    message = await only_mail_to(smtp, address)
    assert message["Subject"] == subject
    assert message["Content-Language"] == language
    assert message.get_content_type() == "multipart/mixed"
    body, *rest = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in body.iter_parts()] == ["text/plain", "text/html"]
    text, html = parts(message)
    for fact in facts:
        assert fact in text
        assert fact in re.sub(r"<[^>]+>", "", html)

    [attachment] = attachments(message)
    assert attachment is rest[0]
    assert attachment.get_filename() == "bulk-result.xlsx"
    assert attachment.get_content_type() == XLSX
    content = attachment.get_content()
    assert content == file.content()
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    rows = list(workbook["Results"].iter_rows(values_only=True))
    assert rows == [(*HEADER, "result", "message"),
                    *[(*cells, result, text) for cells, result, text in ROWS]]


async def test_a_processed_upload_without_a_result_file_points_to_the_portal(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = await known_user(notifier, "en")
    await publish(amqp_url, bulk_completed(user_id, file=None))
    message = await only_mail_to(smtp, address)
    assert message.get_content_type() == "multipart/alternative"
    assert "download it in the service portal" in parts(message)[0]


FAILURES = {
    "too_many_rows": "it has more device rows than one upload may hold.",
    "not_a_spreadsheet": "it is not an Excel workbook (xlsx).",
    "spreadsheet_too_large": "the workbook is too large once unpacked.",
    "missing_columns": "required columns are missing from the header row.",
    "file_too_large": "the file is too large.",
    "internal": "an error occurred while processing it (internal).",
}


@pytest.mark.parametrize("reason", FAILURES)
async def test_a_failed_upload_names_the_reason_in_words_and_attaches_nothing(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, reason: str) -> None:
    user_id, address = await known_user(notifier, "en")
    # A stray file on a failed upload is not attached either.
    await publish(amqp_url, bulk_completed(user_id, status="failed", reason=reason, file=result_file()))

    message = await only_mail_to(smtp, address)
    assert message["Subject"] == "Bulk registration geraete-maerz.xlsx could not be processed"
    assert message.get_content_type() == "multipart/alternative"
    assert attachments(message) == []
    text, html = parts(message)
    expected = f"your file geraete-maerz.xlsx could not be processed: {FAILURES[reason]}"
    assert expected in text
    assert expected in html
    assert "Registered:" not in text


@pytest.mark.parametrize(("language", "subject", "sentence"), [
    ("de", "Sammelregistrierung geraete-maerz.xlsx konnte nicht verarbeitet werden",
     "Sie enthält mehr Gerätezeilen, als ein Upload enthalten darf."),
    ("nb", "Masseregistrering geraete-maerz.xlsx kunne ikke behandles",
     "den har flere enhetsrader enn én opplasting kan ha."),
])
async def test_a_failed_upload_is_explained_in_the_users_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language, subject: str,
        sentence: str) -> None:
    user_id, address = await known_user(notifier, language)
    await publish(amqp_url, bulk_completed(user_id, status="failed", reason="too_many_rows"))
    message = await only_mail_to(smtp, address)
    # A subject too long for the first header line is folded right after "Subject:"; the parser keeps the blank.
    assert message["Subject"].lstrip() == subject
    text, html = parts(message)
    assert sentence in text and sentence in html


@pytest.mark.parametrize(("language", "sentence"), [
    ("de", "Sie enthält mehr Gerätezeilen, als ein Upload enthalten darf: höchstens 10000."),
    ("en", "it has more device rows than one upload may hold: at most 10000."),
    ("nb", "den har flere enhetsrader enn én opplasting kan ha: maksimalt 10000."),
])
async def test_too_many_rows_names_the_limit_in_force_in_the_users_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language, sentence: str) -> None:
    user_id, address = await known_user(notifier, language)
    await publish(amqp_url, bulk_completed(user_id, status="failed", reason="too_many_rows", limit=10_000))
    text, html = parts(await only_mail_to(smtp, address))
    assert sentence in text and sentence in html


# --- request decisions ------------------------------------------------------------------------

DECISIONS = {
    "de": ("Ihre Anfrage wurde genehmigt", "Ihre Anfrage wurde abgelehnt",
           "Ihre Anfrage (Übernahme weiterer Geräte am selben Standort) für 3 Geräte wurde genehmigt.",
           "Ihre Anfrage (Adressänderung) für 1 Gerät wurde abgelehnt.", "Begründung: Adresse unvollständig"),
    "en": ("Your request has been approved", "Your request has been rejected",
           "your same-location claim for 3 devices has been approved.",
           "your address change for 1 device has been rejected.", "Reason: Adresse unvollständig"),
    "nb": ("Forespørselen din er godkjent", "Forespørselen din er avslått",
           "forespørselen din (overtakelse av flere enheter på samme adresse) for 3 enheter er godkjent.",
           "forespørselen din (adresseendring) for 1 enhet er avslått.", "Begrunnelse: Adresse unvollständig"),
}


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_request_decision_says_approved_or_rejected_what_kind_and_how_many_devices(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    approved_subject, rejected_subject, approved, rejected, reason = DECISIONS[language]
    approved_id, approved_address = await known_user(notifier, language)
    rejected_id, rejected_address = await known_user(notifier, language)
    await publish(amqp_url, request_decided(approved_id, approved=True, devices=3))
    await publish(amqp_url, request_decided(rejected_id, approved=False, kind="address_change", devices=1,
                                            reason="Adresse unvollständig"))

    message = await only_mail_to(smtp, approved_address)
    text, html = parts(message)
    assert message["Subject"] == approved_subject
    assert approved in text and approved in html
    assert reason.split(":")[0] not in text

    message = await only_mail_to(smtp, rejected_address)
    text, html = parts(message)
    assert message["Subject"] == rejected_subject
    assert rejected in text and rejected in html
    assert reason in text and reason in html


# --- unknown recipients and copies ------------------------------------------------------------

async def test_a_mail_for_a_user_the_notifier_does_not_know_yet_arrives_once_the_accounts_event_does(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = random_id("u"), random_email()
    await publish(amqp_url, device_registered(user_id, "en"))

    async def kept() -> bool:
        return await notifier.db.waiting_mails.count_documents({"who": who_user(user_id)}) == 1
    await eventually(kept)
    assert smtp.mailbox.to(address) == []

    await publish(amqp_url, profile_updated(user_id, address, version=1, language="de"))
    message = await only_mail_to(smtp, address)
    assert message["Subject"] == REGISTRATION["de"][0]
    await asyncio.sleep(1.0)
    assert len(smtp.mailbox.to(address)) == 1


async def test_the_same_event_twice_gives_one_mail(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = await known_user(notifier, "en")
    event = bulk_completed(user_id, file=result_file())
    message_id = await publish(amqp_url, event)
    await publish(amqp_url, event, message_id=message_id)

    await only_mail_to(smtp, address)
    await asyncio.sleep(1.0)
    assert len(smtp.mailbox.to(address)) == 1
    assert await notifier.db.deliveries.count_documents({"event_message_id": message_id}) == 1
