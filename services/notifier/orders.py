"""Ordering mails to the order's contact: the order confirmation (`ordering.order.placed`) and the shipping
notice (`ordering.order.shipped`); `ordering.order.delivered` mails nothing.

The contact is the name and address chosen in the order (OKI: the confirmation goes to the e-mail
chosen there), not necessarily the user who placed it. Language: the one `recipients` knows for
that address (any case), else the event's (the placing user's), else English.

The names, descriptions and address lines come from users: the HTML is autoescaped, every value is
put on one line, a tracking link is shown only as an http(s) URL, and an address that a `To`
header cannot carry as one plain address is never mailed (`handlers.deliver_to_contact`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from contracts.ordering import DeliveryAddress, OrderedLine, OrderEvent, OrderPlaced, OrderShipped
from services.notifier.handlers import deliver_to_contact
from services.notifier.mails import address_lines, one_line, single_line, utc_date
from services.runtime.events import EventContext

log = logging.getLogger(__name__)

CONFIRMATION = "order_confirmation"
SHIPPING_NOTICE = "shipping_notice"
_WEB_LINK = re.compile(r"https?://\S+")


async def send_order_confirmation(event: OrderPlaced, ctx: EventContext) -> None:
    await _mail_contact(ctx, event, CONFIRMATION, placed_on=utc_date(event.placed_at),
                        reference=single_line(event.reference))


async def send_shipping_notice(event: OrderShipped, ctx: EventContext) -> None:
    tracking = event.tracking
    link = tracking.tracking_url if tracking.tracking_url and _WEB_LINK.fullmatch(tracking.tracking_url) else None
    if tracking.tracking_url and link is None:
        log.warning("%s: message_id=%s order_number=%s tracking_url is no http(s) link, left out", ctx.event,
                    ctx.message_id, event.order_number)
    await _mail_contact(ctx, event, SHIPPING_NOTICE, carrier=single_line(tracking.carrier),
                        tracking_number=single_line(tracking.tracking_number), tracking_url=link,
                        shipped_on=utc_date(tracking.shipped_at))


async def _mail_contact(ctx: EventContext, event: OrderEvent, mail: str, **values: Any) -> None:
    log.info("%s: message_id=%s order_number=%s lines=%d", ctx.event, ctx.message_id, event.order_number,
             len(event.lines))
    values = {**values, "order_number": one_line(event.order_number), "devices": devices_of(event.lines),
              "address": address_of(event.delivery_address)}
    await deliver_to_contact(ctx, mail, address=event.contact.email, name=event.contact.name,
                             language=event.language, values=values)


def devices_of(lines: list[OrderedLine]) -> list[dict[str, Any]]:
    """The order's lines under their device (serial number and model), in the order's sequence."""
    devices: dict[str, dict[str, Any]] = {}
    for line in lines:
        device = devices.setdefault(line.device_id, {"serial_number": single_line(line.serial_number),
                                                     "model": single_line(line.model), "lines": []})
        device["lines"].append({"article_number": single_line(line.article_number),
                                "description": single_line(line.description), "quantity": line.quantity,
                                "included_in_contract": line.included_in_contract})
    return list(devices.values())


def address_of(delivery: DeliveryAddress) -> dict[str, Any]:
    """The delivery address as lines, with "z. Hd." (`attention`) and "Zusätzl. Info" (`additional_info`) apart."""
    return {"lines": address_lines(delivery), "attention": single_line(delivery.attention),
            "additional_info": single_line(delivery.additional_info)}
