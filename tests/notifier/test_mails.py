"""The account mails: in the recipient's language, multipart, marked as automatic, escaped."""

from __future__ import annotations

import email
import email.policy
import email.utils
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

from contracts.accounts import Language
from contracts.base import Event
from services.notifier.mails import LANGUAGES, RenderedMail, compose, render
from services.notifier.settings import NotifierSettings
from services.runtime.service import ServiceInstance
from tests.builders import random_email
from tests.notifier.support import (
    SmtpServer,
    confirmation_requested,
    email_change_requested,
    password_changed,
    publish,
    registered,
    reminder_requested,
    reset_requested,
    verification_decided,
)
from tests.support import eventually


@dataclass(frozen=True)
class MailCase:
    build: Callable[[str, Language], Event]
    detail: Callable[[Event], str]  # what the body must carry: the link, the user name, the reason
    subjects: dict[str, str]
    phrases: dict[str, str]  # a sentence of the body, per language


CASES = {
    "account_confirmation": MailCase(
        registered, lambda event: str(event.confirmation_url),  # type: ignore[attr-defined]
        {"de": "Bitte bestätigen Sie Ihre E-Mail-Adresse", "en": "Please confirm your e-mail address",
         "nb": "Bekreft e-postadressen din"},
        {"de": "Guten Tag Christine Zimmermann,", "en": "Hello Christine Zimmermann,",
         "nb": "Hei Christine Zimmermann,"}),
    "account_confirmation_requested_again": MailCase(
        confirmation_requested, lambda event: str(event.confirmation_url),  # type: ignore[attr-defined]
        {"de": "Bitte bestätigen Sie Ihre E-Mail-Adresse", "en": "Please confirm your e-mail address",
         "nb": "Bekreft e-postadressen din"},
        {"de": "für den Benutzernamen czimmermann", "en": "for the user name czimmermann",
         "nb": "for brukernavnet czimmermann"}),
    "password_changed": MailCase(
        password_changed, lambda event: "Christine",
        {"de": "Ihr Passwort wurde geändert", "en": "Your password has been changed", "nb": "Passordet ditt er endret"},
        {"de": "das Passwort Ihres Kontos wurde soeben geändert", "en": "the password of your account has just been "
         "changed", "nb": "passordet til kontoen din ble nettopp endret"}),
    "email_change_notice": MailCase(
        email_change_requested, lambda event: "new.address@example.org",
        {"de": "Ihre E-Mail-Adresse wird geändert", "en": "Your e-mail address is about to change",
         "nb": "E-postadressen din er i ferd med å endres"},
        {"de": "Das hebt die Änderung auf", "en": "it cancels the change",
         "nb": "det opphever endringen"}),
    "password_reset": MailCase(
        reset_requested, lambda event: str(event.reset_url),  # type: ignore[attr-defined]
        {"de": "Passwort zurücksetzen", "en": "Reset your password", "nb": "Tilbakestill passordet ditt"},
        {"de": "der 1 Stunde gültig ist", "en": "which is valid for 1 hour", "nb": "som er gyldig i 1 time"}),
    "username_reminder": MailCase(
        lambda address, language: reminder_requested(address, language, username="c.zimmermann-77"),
        lambda event: "c.zimmermann-77",
        {"de": "Ihr Benutzername", "en": "Your user name", "nb": "Brukernavnet ditt"},
        {"de": "Ihr Benutzername lautet: c.zimmermann-77", "en": "your user name is: c.zimmermann-77",
         "nb": "brukernavnet ditt er: c.zimmermann-77"}),
    "verification_approved": MailCase(
        lambda address, language: verification_decided(address, language, approved=True),
        lambda event: "czimmermann",
        {"de": "Ihr Konto wurde freigeschaltet", "en": "Your account has been approved",
         "nb": "Kontoen din er godkjent"},
        {"de": "Sie können sich jetzt anmelden.", "en": "You can now sign in.", "nb": "Du kan nå logge inn."}),
    "verification_rejected": MailCase(
        lambda address, language: verification_decided(address, language, approved=False,
                                                        reason="Seriennummer unbekannt"),
        lambda event: "Seriennummer unbekannt",
        {"de": "Ihr Konto wurde nicht freigeschaltet", "en": "Your account has not been approved",
         "nb": "Kontoen din er ikke godkjent"},
        {"de": "Begründung: Seriennummer unbekannt", "en": "Reason: Seriennummer unbekannt",
         "nb": "Begrunnelse: Seriennummer unbekannt"}),
}


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def only_mail_to(smtp: SmtpServer, address: str) -> EmailMessage:
    async def arrived() -> bool:
        return bool(smtp.mailbox.to(address))
    await eventually(arrived)
    [message] = smtp.mailbox.to(address)
    return message


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_each_mail_arrives_in_the_recipients_language(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, case: MailCase) -> None:
    languages: tuple[Language, ...] = ("de", "en", "nb")
    sent = {language: case.build(random_email(), language) for language in languages}
    for event in sent.values():
        await publish(amqp_url, event)

    for language, event in sent.items():
        message = await only_mail_to(smtp, event.email)  # type: ignore[attr-defined]
        text, html = parts(message)
        assert message["Subject"] == case.subjects[language]
        assert case.phrases[language] in text
        assert case.detail(event) in text
        assert case.detail(event) in html
        assert message["Content-Language"] == language


def test_a_language_without_templates_falls_back_to_english() -> None:
    values = {"public_url": "https://service.example.test", "name": "Ola", "reset_url": "https://r.example/x"}
    french = render("password_reset", "fr", **values)
    assert french.language == "en"
    assert french == render("password_reset", "en", **values)
    assert french.subject == "Reset your password"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_mail_renders_in_every_language_with_the_footer(language: str) -> None:
    values = {"name": None, "username": "u", "confirmation_url": "https://c.example/1",
              "reset_url": "https://r.example/1", "approved": False, "reason": "r", "email_change": False,
              "expires_on": "2026-12-17", "new_email": "n@example.org"}
    for mail in ("account_confirmation", "password_reset", "username_reminder", "verification_decision",
                 "password_changed", "email_change_notice"):
        rendered = render(mail, language, public_url="https://service.example.test", **values)
        assert rendered.language == language
        assert rendered.subject and "\n" not in rendered.subject
        assert "https://service.example.test/" in rendered.text
        assert 'href="https://service.example.test/"' in rendered.html


async def test_a_mail_is_multipart_alternative_from_the_portal_and_marked_auto_generated(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, notifier_settings: NotifierSettings) -> None:
    event = reset_requested(random_email(), "de")
    await publish(amqp_url, event)
    message = await only_mail_to(smtp, event.email)

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["From"] == notifier_settings.mail_from
    assert message["To"] == f"Christine <{event.email}>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(r"<[^<>@\s]+@portal\.localhost>", message["Message-ID"])
    assert email.utils.parsedate_to_datetime(message["Date"]).utcoffset() is not None
    text, html = parts(message)
    assert notifier_settings.public_url in text
    assert f'href="{notifier_settings.public_url}/"' in html


async def test_a_username_with_markup_arrives_escaped_in_the_html_part(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = reminder_requested(random_email(), "en", username="<script>x</script>")
    await publish(amqp_url, event)
    text, html = parts(await only_mail_to(smtp, event.email))

    assert "<strong>&lt;script&gt;x&lt;/script&gt;</strong>" in html
    assert "<script>" not in html
    assert "your user name is: <script>x</script>" in text


async def test_a_name_stored_with_a_line_break_is_mailed_on_one_line_instead_of_failing(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = registered(random_email(), first_name="Eve\r\nBcc: everyone@example.com", last_name="Doe")
    await publish(amqp_url, event)
    message = await only_mail_to(smtp, event.email)
    assert [address.addr_spec for address in message["To"].addresses] == [event.email]
    assert message["To"].addresses[0].display_name == "Eve Bcc: everyone@example.com Doe"
    assert message["Bcc"] is None


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_sign_up_confirmation_says_how_to_take_the_account_over_and_when_it_expires(language: str) -> None:
    values = {"name": None, "username": "u", "confirmation_url": "https://c.example/1", "expires_on": "2026-12-17"}
    sign_up = render("account_confirmation", language, public_url="https://p.example", email_change=False, **values)
    change = render("account_confirmation", language, public_url="https://p.example", email_change=True, **values)
    takeover = {"de": "Zurücksetzen des Passworts", "en": "password reset", "nb": "tilbakestille passordet"}[language]
    for text in (sign_up.text, sign_up.html):
        assert takeover in text and "2026-12-17" in text
        assert text.count("https://c.example/1") == (1 if text is sign_up.text else 2)  # no second link
    assert takeover not in change.text and "2026-12-17" not in change.text


def composed(subject: str = "Your order 4711 has been shipped", **options: Any) -> tuple[bytes, EmailMessage]:
    """What `compose` writes, as bytes and as a mail client parses them."""
    rendered = RenderedMail(language="en", subject=subject, text="Hello,\n", html="<p>Hello,</p>\n")
    raw = compose(rendered, sender="Service Portal <no-reply@portal.localhost>", to="c.zimmermann@example.com",
                  **options).as_bytes()
    return raw, email.message_from_bytes(raw, policy=email.policy.default)


def test_an_encoded_word_in_the_subject_is_shown_as_typed_and_adds_no_header() -> None:
    # Python's email package decodes `=?...?=` in a header value and would write the CR LF it holds raw.
    raw, message = composed("Order 4711 =?utf-8?q?=0D=0AReply-To:_evil@example.com?= shipped")
    assert message["Reply-To"] is None
    assert b"\nReply-To:" not in raw
    assert message["Subject"] == "Order 4711 = ?utf-8?q?=0D=0AReply-To:_evil@example.com?= shipped"


def test_an_extra_header_is_written_exactly_as_given_even_holding_an_encoded_word() -> None:
    value = "<https://service.example.test/unsubscribe?token=a=?utf-8?q?=0D=0ABcc:_all@example.com?=>"
    raw, message = composed(headers={"List-Unsubscribe": value})
    assert f"\r\nList-Unsubscribe: {value}\r\n".encode() in raw
    assert message["Bcc"] is None


@pytest.mark.parametrize("name", ["Jörg Müller, evil@example.com, Bob", "Kari =?utf-8?q?=0D=0ABcc:_all@example.com?="],
                         ids=["non_ascii_with_commas", "encoded_word"])
def test_a_display_name_stays_one_name_of_the_one_recipient(name: str) -> None:
    raw, message = composed(to_name=name)
    shown = name.replace("=?", "= ?")
    assert [(found.display_name, found.addr_spec) for found in message["To"].addresses] == [
        (shown, "c.zimmermann@example.com")]
    assert message["Bcc"] is None and b"\nBcc:" not in raw


def test_a_display_name_the_to_header_cannot_carry_is_left_out_and_the_mail_still_composed(
        caplog: pytest.LogCaptureFixture) -> None:
    # A lone surrogate cannot be written in UTF-8: with the name, writing the message raised ValueError.
    with caplog.at_level(logging.WARNING, logger="services.notifier.mails"):
        _, message = composed(to_name="Kari \ud800 Nordmann")
    assert message["To"] == "c.zimmermann@example.com"
    assert "display name cannot be written in To" in caplog.text
