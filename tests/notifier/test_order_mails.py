"""The ordering mails as received: order confirmation and shipping notice to the order's contact, once, escaped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage

import pytest

from contracts.accounts import Language
from contracts.base import Contact
from contracts.client import PortalClient
from contracts.ordering import (
    DeliveryAddress,
    OrderDelivered,
    OrderedLine,
    OrderPlaced,
    OrderShipped,
    Tracking,
)
from services.notifier.handlers import INVALID_ADDRESS
from services.notifier.mails import LANGUAGES, render
from services.notifier.orders import address_of, devices_of
from services.runtime.service import ServiceInstance
from tests.builders import random_email, random_id
from tests.notifier.support import SmtpServer, list_deliveries, publish
from tests.notifier.test_deliveries import wait_for_mails
from tests.notifier.test_mails import only_mail_to, parts
from tests.notifier.test_registration_mails import known_user
from tests.notifier.test_reminders import text_of

DHL_LINK = "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode=00340434161234567890"


def order_number() -> str:
    return random_id("OR-2027-")


def lines() -> list[OrderedLine]:
    device, other = random_id("d"), random_id("d")
    return [
        OrderedLine(device_id=device, serial_number="AK6C004746", model="ES5462 MFP", article_number="44973512",
                    description="TONER-K-ES5431/3452/5462-7K", kind="toner", quantity=2, included_in_contract=True),
        OrderedLine(device_id=device, serial_number="AK6C004746", model="ES5462 MFP", article_number="44472202",
                    description="BELT-UNIT-C310-331/510-531/MC352-562", kind="belt", quantity=1,
                    included_in_contract=False),
        OrderedLine(device_id=other, serial_number="AK6C009911", model="ES5431dn", article_number="01282903",
                    description="EP-CART-ES5431/3452/5462", kind="drum", quantity=3, included_in_contract=True),
    ]


def delivery_address(**changes: str) -> DeliveryAddress:
    values = {"name": "Zimmermann GmbH", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf",
              "country": "DE", "building_location": "Kundenbüro", "attention": "Frau Zimmermann",
              "additional_info": "Anlieferung über Tor 3", **changes}
    return DeliveryAddress(**values)


def placed(email: str, language: str = "en", *, name: str = "Christine Zimmermann", reference: str | None = "KST 4711",
           address: DeliveryAddress | None = None, ordered: list[OrderedLine] | None = None) -> OrderPlaced:
    # Not validated: the notifier must hold out against addresses an older sender let through (see below).
    return OrderPlaced(order_number=order_number(), customer_number="17102995",
                       contact=Contact.model_construct(name=name, email=email),
                       language=language, delivery_address=address or delivery_address(),
                       lines=ordered or lines(), reference=reference,
                       placed_at=datetime(2027, 3, 5, 9, 30, tzinfo=UTC))


def shipped(email: str, language: str = "en", *, tracking_url: str | None = DHL_LINK) -> OrderShipped:
    return OrderShipped(order_number=order_number(), customer_number="17102995",
                        contact=Contact(name="Christine Zimmermann", email=email), language=language,
                        delivery_address=delivery_address(), lines=lines(),
                        tracking=Tracking(carrier="DHL", tracking_number="00340434161234567890",
                                          tracking_url=tracking_url,
                                          shipped_at=datetime(2027, 3, 6, 14, 0, tzinfo=UTC)))


@dataclass(frozen=True)
class Words:
    confirmation: str  # the subject, before the order number
    shipped: str  # the shipping notice's subject, {} = the order number
    greeting: str
    facts: tuple[str, ...]  # the date and reference of the confirmation
    shipping: tuple[str, ...]  # carrier, tracking number and date of the shipping notice
    lines: tuple[str, ...]  # every line of the order, in text
    address: tuple[str, ...]
    notes: tuple[str, ...]  # the confirmation's: no cancelling online, defective consumables via the hotline
    no_link: str


WORDS = {
    "de": Words(
        confirmation="Bestellbestätigung", shipped="Ihre Bestellung {} wurde versandt",
        greeting="Guten Tag Christine Zimmermann,", facts=("Datum: 05.03.2027", "Ihr Zeichen: KST 4711"),
        shipping=("Versanddienstleister: DHL", "Sendungsnummer: 00340434161234567890", "am 06.03.2027 versandt"),
        lines=("Gerät ES5462 MFP, Seriennummer AK6C004746",
               "Artikelnummer 44973512: TONER-K-ES5431/3452/5462-7K", "Menge: 2, im Vertrag enthalten",
               "Artikelnummer 44472202: BELT-UNIT-C310-331/510-531/MC352-562", "Menge: 1, nicht im Vertrag enthalten",
               "Gerät ES5431dn, Seriennummer AK6C009911", "Artikelnummer 01282903: EP-CART-ES5431/3452/5462",
               "Menge: 3, im Vertrag enthalten"),
        address=("Lieferadresse:", "z. Hd.: Frau Zimmermann", "Zusätzl. Info: Anlieferung über Tor 3"),
        notes=("kann online nicht storniert", "Technisch defektes Verbrauchsmaterial muss über die Service-Hotline "
               "reklamiert werden"),
        no_link="auf der Website des Versanddienstleisters verfolgen"),
    "en": Words(
        confirmation="Order confirmation", shipped="Your order {} has been shipped",
        greeting="Hello Christine Zimmermann,", facts=("Order date: 2027-03-05", "Your reference: KST 4711"),
        shipping=("Carrier: DHL", "Tracking number: 00340434161234567890", "was shipped on 2027-03-06"),
        lines=("Device ES5462 MFP, serial number AK6C004746",
               "Article number 44973512: TONER-K-ES5431/3452/5462-7K", "Quantity: 2, included in the contract",
               "Article number 44472202: BELT-UNIT-C310-331/510-531/MC352-562",
               "Quantity: 1, not included in the contract", "Device ES5431dn, serial number AK6C009911",
               "Article number 01282903: EP-CART-ES5431/3452/5462", "Quantity: 3, included in the contract"),
        address=("Delivery address:", "Attn.: Frau Zimmermann", "Additional info: Anlieferung über Tor 3"),
        notes=("cannot be cancelled or changed online", "Technically defective consumables must be reported to the "
               "service hotline"),
        no_link="with this number on the carrier's website"),
    "nb": Words(
        confirmation="Ordrebekreftelse", shipped="Bestillingen din {} er sendt",
        greeting="Hei Christine Zimmermann,", facts=("Dato: 05.03.2027", "Din referanse: KST 4711"),
        shipping=("Budfirma: DHL", "Sporingsnummer: 00340434161234567890", "ble sendt 06.03.2027"),
        lines=("Maskin ES5462 MFP, serienummer AK6C004746",
               "Artikkelnummer 44973512: TONER-K-ES5431/3452/5462-7K", "Antall: 2, inkludert i avtalen",
               "Artikkelnummer 44472202: BELT-UNIT-C310-331/510-531/MC352-562", "Antall: 1, ikke inkludert i avtalen",
               "Maskin ES5431dn, serienummer AK6C009911", "Artikkelnummer 01282903: EP-CART-ES5431/3452/5462",
               "Antall: 3, inkludert i avtalen"),
        address=("Leveringsadresse:", "Att.: Frau Zimmermann", "Tilleggsinformasjon: Anlieferung über Tor 3"),
        notes=("kan ikke kanselleres eller endres på nett", "Teknisk defekt forbruksmateriell må reklameres via "
               "servicetelefonen"),
        no_link="med dette nummeret på budfirmaets nettsted"),
}
ADDRESS_LINES = ("Zimmermann GmbH", "Kundenbüro", "Hansaallee 187", "40549 Düsseldorf")
# The HTML shows the lines as a table: each cell's text, in the order's sequence.
HTML_LINES = ("ES5462 MFP", "AK6C004746", "44973512", "TONER-K-ES5431/3452/5462-7K", "44472202",
              "BELT-UNIT-C310-331/510-531/MC352-562", "ES5431dn", "AK6C009911", "01282903", "EP-CART-ES5431/3452/5462")


def assert_in_order(text: str, facts: tuple[str, ...]) -> None:
    positions = [text.index(fact) for fact in facts]
    assert positions == sorted(positions), facts


def assert_order_details(message: EmailMessage, words: Words) -> None:
    text, html = parts(message)
    assert_in_order(text, words.lines)
    assert_in_order(text, (words.address[0], *ADDRESS_LINES, *words.address[1:]))
    assert_in_order(text_of(html), HTML_LINES)
    for fact in (*ADDRESS_LINES, *words.address[1:]):
        assert fact in text_of(html)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_order_confirmation_reaches_the_orders_contact_with_its_lines_and_delivery_address(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    words = WORDS[language]
    event = placed(random_email(), language)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = parts(message)
    assert message["Subject"] == f"{words.confirmation} {event.order_number}"
    assert message["To"].addresses[0].display_name == "Christine Zimmermann"
    assert message["Content-Language"] == language
    assert message["Auto-Submitted"] == "auto-generated"
    assert text.startswith(words.greeting)
    for fact in (event.order_number, *words.facts, *words.notes):
        assert fact in text
        assert fact in text_of(html)
    assert_order_details(message, words)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_shipping_notice_carries_the_carrier_the_tracking_number_and_the_tracking_link(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, language: Language) -> None:
    words = WORDS[language]
    event = shipped(random_email(), language)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = parts(message)
    assert message["Subject"] == words.shipped.format(event.order_number)
    assert message["Content-Language"] == language
    assert message["Auto-Submitted"] == "auto-generated"
    assert text.startswith(words.greeting)
    for fact in (event.order_number, *words.shipping, DHL_LINK):
        assert fact in text
        assert fact in text_of(html)
    assert f'href="{DHL_LINK}"' in html
    assert words.no_link not in text
    assert_order_details(message, words)


@pytest.mark.parametrize("tracking_url", [None, "javascript:alert(1)"], ids=["none", "not_a_web_link"])
async def test_a_shipping_notice_without_a_web_tracking_link_points_to_the_carriers_site_instead(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, tracking_url: str | None) -> None:
    event = shipped(random_email(), "en", tracking_url=tracking_url)
    await publish(amqp_url, event)

    text, html = parts(await only_mail_to(smtp, event.contact.email))
    assert "Tracking number: 00340434161234567890" in text
    assert WORDS["en"].no_link in text
    assert "javascript" not in text + html
    assert "Track the shipment" not in html


async def test_a_copy_of_an_order_event_is_mailed_once(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event, marker = placed(random_email()), placed(random_email())
    notice, notice_marker = shipped(event.contact.email), shipped(random_email())
    message_id = await publish(amqp_url, event)
    await publish(amqp_url, event, message_id=message_id)
    await publish(amqp_url, marker)
    notice_id = await publish(amqp_url, notice)
    await publish(amqp_url, notice, message_id=notice_id)
    await publish(amqp_url, notice_marker)

    # One queue per event delivers in order: once its marker is mailed, both copies have been handled.
    await wait_for_mails(smtp, marker.contact.email)
    await wait_for_mails(smtp, notice_marker.contact.email)
    await wait_for_mails(smtp, event.contact.email, count=2)
    subjects = sorted(message["Subject"] for message in smtp.mailbox.to(event.contact.email))
    assert subjects == [f"Order confirmation {event.order_number}",
                        f"Your order {notice.order_number} has been shipped"]
    for sent in (message_id, notice_id):
        assert await notifier.db.deliveries.count_documents({"event_message_id": sent}) == 1


async def test_markup_in_a_name_description_or_address_arrives_escaped_in_the_html(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    script = "<script>alert(1)</script>"
    ordered = lines()
    ordered[0] = ordered[0].model_copy(update={"description": f"Toner {script}"})
    event = placed(random_email(), name=f"Eve {script}", reference=f"R {script}",
                   address=delivery_address(attention=f"Eve {script}", additional_info='"><img src=x onerror=1>'),
                   ordered=ordered)
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, html = parts(message)
    assert "<script>" not in html and "<img" not in html
    assert "Hello Eve &lt;script&gt;alert(1)&lt;/script&gt;," in html
    assert "Toner &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Attn.: Eve &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=1&gt;" in html
    assert f"Toner {script}" in text  # plain text shows what was typed
    assert message["To"].addresses[0].display_name == f"Eve {script}"


async def test_line_breaks_in_the_delivery_address_stay_on_their_line(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = placed(random_email(), address=delivery_address(attention="Frau Zimmermann\r\nBcc: all@example.com",
                                                            additional_info="Tor 3\n\nOrder cancelled"))
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    text, _ = parts(message)
    assert "  Attn.: Frau Zimmermann Bcc: all@example.com" in text.splitlines()
    assert "  Additional info: Tor 3 Order cancelled" in text.splitlines()
    assert message["Bcc"] is None


async def test_an_unknown_language_falls_back_to_english(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = placed(random_email(), "fr")
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    assert message["Subject"] == f"Order confirmation {event.order_number}"
    assert message["Content-Language"] == "en"
    assert parts(message)[0].startswith("Hello Christine Zimmermann,")


@pytest.mark.parametrize("build", [placed, shipped], ids=["confirmation", "shipping_notice"])
async def test_the_language_saved_for_the_contacts_address_wins_over_the_events(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str,
        build: Callable[[str, str], OrderPlaced | OrderShipped]) -> None:
    _, address = await known_user(notifier, "nb")
    event = build(address.upper().replace("@EXAMPLE.COM", "@example.com"), "de")  # any case of the address
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    assert message["Content-Language"] == "nb"
    assert parts(message)[0].startswith("Hei Christine Zimmermann,")


async def test_a_contact_address_no_to_header_can_carry_is_never_mailed(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    # In `To` it would read as two addresses; ordering's contract refuses it, so an event carrying it is no
    # `ordering.order.placed` the notifier accepts (it is dead-lettered), and nothing is mailed.
    unmailable, marker = placed(f"{random_id('a')},x@example.com"), placed(random_email())
    await publish(amqp_url, unmailable)
    await publish(amqp_url, marker)
    await wait_for_mails(smtp, marker.contact.email)
    await asyncio.sleep(0.5)

    assert len(smtp.mailbox.messages) == 1
    page = await list_deliveries(portal, operator, recipient=unmailable.contact.email)
    assert page.items == []


async def test_a_contact_address_the_contract_lets_through_but_no_mail_server_takes_is_listed_as_failed(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    unmailable, marker = placed(f"{random_id('a')}..x@example.com"), placed(random_email())  # two dots in a row
    await publish(amqp_url, unmailable)
    await publish(amqp_url, marker)
    await wait_for_mails(smtp, marker.contact.email)

    assert len(smtp.mailbox.messages) == 1
    page = await list_deliveries(portal, operator, recipient=unmailable.contact.email)
    [delivery] = page.items
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 0, INVALID_ADDRESS)
    assert delivery.subject == f"Order confirmation {unmailable.order_number}"


async def test_a_contact_name_with_commas_and_quotes_is_one_display_name(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = placed(random_email(), name='Zimmermann, Christine "CZ" <boss@example.com>')
    await publish(amqp_url, event)

    message = await only_mail_to(smtp, event.contact.email)
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ('Zimmermann, Christine "CZ" <boss@example.com>', event.contact.email)


async def test_an_order_delivered_mails_nothing(notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    address = random_email()
    base = placed(address)
    delivered = OrderDelivered(**base.model_dump(exclude={"reference", "placed_at"}),
                               delivered_at=datetime.now(UTC))
    marker = placed(random_email())
    await publish(amqp_url, delivered)
    await publish(amqp_url, marker)

    await wait_for_mails(smtp, marker.contact.email)
    await asyncio.sleep(0.3)
    assert smtp.mailbox.to(address) == []


@pytest.mark.parametrize("language", [*LANGUAGES, "fr"])
def test_both_order_mails_render_in_every_language_with_the_footer(language: str) -> None:
    event = shipped("c.zimmermann@example.com", language)
    values = {"order_number": "OR-2027-000042", "devices": devices_of(event.lines),
              "address": address_of(event.delivery_address), "name": None}
    confirmation = render("order_confirmation", language, public_url="https://service.example.test", **values,
                          placed_on=date(2027, 3, 5), reference=None)
    notice = render("shipping_notice", language, public_url="https://service.example.test", **values,
                    shipped_on=date(2027, 3, 6), carrier="DHL", tracking_number="1", tracking_url=None)
    for rendered in (confirmation, notice):
        assert rendered.language == (language if language in LANGUAGES else "en")
        assert "OR-2027-000042" in rendered.subject and "\n" not in rendered.subject
        assert "https://service.example.test/" in rendered.text
        assert 'href="https://service.example.test/"' in rendered.html
