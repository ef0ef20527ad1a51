"""Ordering mails to the order's contact: the order confirmation (`ordering.order.placed`) and the shipping
notice (`ordering.order.shipped`); `ordering.order.delivered` mails nothing.

The contact is the name and address chosen in the order (OKI: the confirmation goes to the e-mail
chosen there), not necessarily the user who placed it. Language: the one `recipients` knows for
that address (any case), else the event's (the placing user's), else English.

The names, descriptions and address lines come from users: the HTML is autoescaped, every value is
put on one line, a tracking link is shown only as an http(s) URL, and an address that a `To`
header cannot carry as one plain address (ordering's pattern lets `a,b@example.com` through) is
never mailed: its delivery is recorded `failed` at once, for the operator's list.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from contracts.ordering import DeliveryAddress, OrderedLine, OrderEvent, OrderPlaced, OrderShipped
from services.notifier.handlers import deliver_once, message_id_of
from services.notifier.mails import LANGUAGES, one_line, render
from services.notifier.settings import notifier_settings
from services.notifier.store import DeliveryStore, RecipientStore, delivery_id
from services.runtime.events import EventContext

log = logging.getLogger(__name__)

CONFIRMATION = "order_confirmation"
SHIPPING_NOTICE = "shipping_notice"
INVALID_ADDRESS = "invalid address: not mailed"
_WEB_LINK = re.compile(r"https?://\S+")


async def send_order_confirmation(event: OrderPlaced, ctx: EventContext) -> None:
    await _mail_contact(ctx, event, CONFIRMATION, placed_on=_utc_date(event.placed_at),
                        reference=_text(event.reference))


async def send_shipping_notice(event: OrderShipped, ctx: EventContext) -> None:
    tracking = event.tracking
    link = tracking.tracking_url if tracking.tracking_url and _WEB_LINK.fullmatch(tracking.tracking_url) else None
    if tracking.tracking_url and link is None:
        log.warning("%s: message_id=%s order_number=%s tracking_url is no http(s) link, left out", ctx.event,
                    ctx.message_id, event.order_number)
    await _mail_contact(ctx, event, SHIPPING_NOTICE, carrier=_text(tracking.carrier),
                        tracking_number=_text(tracking.tracking_number), tracking_url=link,
                        shipped_on=_utc_date(tracking.shipped_at))


async def _mail_contact(ctx: EventContext, event: OrderEvent, mail: str, **values: Any) -> None:
    log.info("%s: message_id=%s order_number=%s lines=%d", ctx.event, ctx.message_id, event.order_number,
             len(event.lines))
    known = await RecipientStore(ctx.db).by_email(event.contact.email)
    saved = (known or {}).get("language")
    language = saved if saved in LANGUAGES else event.language
    user_id = (known or {}).get("_id")
    name = _text(event.contact.name)
    values = {**values, "order_number": one_line(event.order_number), "devices": devices_of(event.lines),
              "address": address_of(event.delivery_address)}
    address = mailable_address(event.contact.email)
    if address is None:
        await _record_unmailable(ctx, event, mail, user_id=user_id, language=language, name=name, values=values)
        return
    await deliver_once(ctx, mail, user_id=user_id, address=address, language=language, name=name, values=values)


def mailable_address(address: str) -> str | None:
    """`address` as one plain address that SMTP and a `To` header carry unchanged, or None if it is none.

    A domain in Unicode is given in its ASCII (IDNA) form, which a header can carry; special-use
    domains (`.local`, ...) pass: a company's own mail server may serve them.
    """
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False,
                                 globally_deliverable=False)
    except EmailNotValidError:
        return None
    return address if address.isascii() else checked.ascii_email


async def _record_unmailable(ctx: EventContext, event: OrderEvent, mail: str, *, user_id: str | None,
                             language: str, name: str | None, values: dict[str, Any]) -> None:
    log.warning("%s: message_id=%s order_number=%s contact address cannot be mailed, recorded failed", ctx.event,
                ctx.message_id, event.order_number)
    rendered = render(mail, language, public_url=notifier_settings(ctx.instance).public_url, name=name, **values)
    event_message_id = message_id_of(ctx)
    address = event.contact.email
    await DeliveryStore(ctx.db).create_failed(
        {"_id": delivery_id(event_message_id, address), "event": ctx.event, "event_message_id": event_message_id,
         "mail": mail, "user_id": user_id, "recipient": address.lower(), "address": address,
         "language": rendered.language, "subject": rendered.subject},
        now=datetime.now(UTC), error=INVALID_ADDRESS)


def devices_of(lines: list[OrderedLine]) -> list[dict[str, Any]]:
    """The order's lines under their device (serial number and model), in the order's sequence."""
    devices: dict[str, dict[str, Any]] = {}
    for line in lines:
        device = devices.setdefault(line.device_id, {"serial_number": _text(line.serial_number),
                                                     "model": _text(line.model), "lines": []})
        device["lines"].append({"article_number": _text(line.article_number),
                                "description": _text(line.description), "quantity": line.quantity,
                                "included_in_contract": line.included_in_contract})
    return list(devices.values())


def address_of(delivery: DeliveryAddress) -> dict[str, Any]:
    """The delivery address as lines, with "z. Hd." (`attention`) and "Zusätzl. Info" (`additional_info`) apart."""
    place = " ".join(part for part in (_text(delivery.postal_code), _text(delivery.city)) if part)
    lines = [_text(delivery.name), _text(delivery.building_location), _text(delivery.street), place,
             _text(delivery.country)]
    return {"lines": [line for line in lines if line], "attention": _text(delivery.attention),
            "additional_info": _text(delivery.additional_info)}


def _utc_date(moment: datetime) -> date:
    # A timestamp without a zone is UTC by the wire conventions (CATALOG §1), not the machine's local time.
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def _text(value: str | None) -> str | None:
    # One line each: the event's address fields are not checked for line breaks as the command's are.
    return (one_line(value) or None) if value is not None else None
