"""Ticketing mails: the receipt and the status changes to the ticket's contact, a customer's note to the service desk.

`ticketing.ticket.opened` mails the ticket receipt (OKI: "Projekt: 1484049/1 erfasst"), and
`ticketing.ticket.status_changed` one mail per status a customer waits for (OneRicoh's «Utsendt»,
«På vei», «På stedet»): `dispatched` (the technician, the ETA and, with an ETA, the visit as a calendar
entry), `en_route` (technician and ETA; the calendar entry again, at its new time, when that step set a
new ETA), `on_site` (the technician, no ETA), `resolved` and `cancelled` (after dispatch, with the
calendar entry withdrawn); `closed` mails nothing.
They go to the ticket's contact as the order mails go to the order's (`handlers.deliver_to_contact`).

`ticketing.ticket.updated` (a note added before dispatch; OneRicoh: "Et varsel vil bli sendt til
Ricoh") mails the vendor's service desk, when `PORTAL_NOTIFIER_SERVICE_DESK_EMAIL` names one.

Every value from the event is put on one line, or, for free text (description, note, reason),
split into lines; the HTML is autoescaped.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from icalendar import Calendar, vCalAddress
from icalendar import Event as CalendarEvent

from contracts.ticketing import TicketEvent, TicketOpened, TicketStatusChanged, TicketUpdated
from services.notifier.handlers import deliver_once, deliver_to_contact
from services.notifier.mails import Attachment, address_lines, aware, one_line, single_line
from services.notifier.settings import NotifierSettings, notifier_settings
from services.runtime.events import EventContext

log = logging.getLogger(__name__)

RECEIPT = "ticket_receipt"
STATUS = "ticket_status"
NOTE = "ticket_note"
# The statuses a customer is told of; `closed` follows `resolved` in the back office and says nothing new.
MAILED_STATUSES = ("dispatched", "en_route", "on_site", "resolved", "cancelled")
# The statuses whose mail names the technician.
VISIT_STATUSES = ("dispatched", "en_route", "on_site")
# The statuses whose mail says when the technician is expected: once on site, they have arrived.
ARRIVAL_STATUSES = ("dispatched", "en_route")
CalendarMethod = Literal["PUBLISH", "CANCEL"]
# The attachment's content type per iTIP method (RFC 5546): the entry itself, or its withdrawal.
CALENDAR: dict[CalendarMethod, str] = {"PUBLISH": "text/calendar; method=PUBLISH; charset=UTF-8",
                                       "CANCEL": "text/calendar; method=CANCEL; charset=UTF-8"}
PRODID = "-//Service Portal//notifier//EN"
# The calendar entry's words, in the mail's language.
VISIT_WORDS = {
    "de": {"visit": "Servicetermin", "technician": "Techniker", "serial_number": "Seriennummer"},
    "en": {"visit": "Service visit", "technician": "Technician", "serial_number": "Serial number"},
    "nb": {"visit": "Servicebesøk", "technician": "Tekniker", "serial_number": "Serienummer"},
}


async def send_ticket_receipt(event: TicketOpened, ctx: EventContext) -> None:
    log.info("%s: message_id=%s ticket_number=%s device_id=%s", ctx.event, ctx.message_id, event.ticket_number,
             event.device.device_id)
    settings = notifier_settings(ctx.instance)
    await deliver_to_contact(ctx, RECEIPT, address=event.contact.email, name=event.contact.name,
                             language=event.language,
                             values={**ticket_values(event, settings.public_url), "status": "to_be_scheduled",
                                     "category": event.category, "description": text_lines(event.description),
                                     "phone": single_line(event.contact.phone)})


async def send_status_change(event: TicketStatusChanged, ctx: EventContext) -> None:
    log.info("%s: message_id=%s ticket_number=%s status=%s previous_status=%s", ctx.event, ctx.message_id,
             event.ticket_number, event.status, event.previous_status)
    if event.status not in MAILED_STATUSES:
        log.debug("ticket_number=%s status=%s: nothing to mail", event.ticket_number, event.status)
        return
    settings = notifier_settings(ctx.instance)
    change = event.change
    visiting = event.status in VISIT_STATUSES
    # ticketing carries the ETA forward into every later change; only the mails before arrival show it.
    eta = aware(change.eta) if event.status in ARRIVAL_STATUSES and change.eta is not None else None
    cancelled = event.status == "cancelled"
    method = calendar_method(event)
    values = {**ticket_values(event, settings.public_url), "status": event.status, "by": change.by,
              "technician": single_line(change.technician) if visiting else None,
              "eta": eta, "eta_zone": zone_label(eta) if eta is not None else None,
              # A customer cancels with a reason; an operator's cancellation gives its reason as the note.
              "reason": text_lines(event.reason or change.note or "") if cancelled else [],
              "note": [] if cancelled else text_lines(change.note or ""),
              # What the mail says of its calendar entry: the visit, the visit at a new time, the visit withdrawn.
              "calendar": _CALENDAR_NOTE[event.status] if method is not None else None}

    await deliver_to_contact(ctx, STATUS, address=event.contact.email, name=event.contact.name,
                             language=event.language, values=values,
                             attachments=partial(_visit_attachment, event, method, settings) if method else None)


def calendar_method(event: TicketStatusChanged) -> CalendarMethod | None:
    """The calendar entry the status mail of `event` carries, if any.

    PUBLISH for a dispatch with an ETA, and for `en_route` when that step set a new ETA (`eta_changed`): the
    same UID with a higher SEQUENCE moves the entry in the customer's calendar. CANCEL for a cancellation
    after dispatch whose change carries the ETA (ticketing carries it forward): it withdraws the entry.
    """
    if event.change.eta is None:
        return None
    if event.status == "dispatched" or (event.status == "en_route" and event.eta_changed):
        return "PUBLISH"
    if event.status == "cancelled" and event.previous_status == "dispatched":
        return "CANCEL"
    return None


_CALENDAR_NOTE = {"dispatched": "publish", "en_route": "update", "cancelled": "cancel"}


async def notify_service_desk(event: TicketUpdated, ctx: EventContext) -> None:
    log.info("%s: message_id=%s ticket_number=%s", ctx.event, ctx.message_id, event.ticket_number)
    settings = notifier_settings(ctx.instance)
    if not settings.notifier_service_desk_email:
        log.debug("ticket_number=%s: no service desk address set, note not mailed", event.ticket_number)
        return
    await deliver_once(ctx, NOTE, user_id=None, address=settings.notifier_service_desk_email,
                       language=settings.notifier_service_desk_language, name=None,
                       values={**ticket_values(event, settings.public_url), "note": text_lines(event.note.text),
                               "noted_at": aware(event.note.at).astimezone(UTC),
                               "contact": {"name": single_line(event.contact.name), "email": event.contact.email,
                                           "phone": single_line(event.contact.phone)}})


def ticket_values(event: TicketEvent, public_url: str) -> dict[str, Any]:
    """What every ticket mail shows: the number and its link, the device, the customer and the service address."""
    device = event.device
    return {"ticket_number": one_line(event.ticket_number), "ticket_url": ticket_url(public_url, event.ticket_number),
            "device": {"model": single_line(device.model), "serial_number": single_line(device.serial_number),
                       "friendly_name": single_line(device.friendly_name)},
            "customer_number": single_line(event.customer_number), "address": address_lines(event.service_address)}


def ticket_url(public_url: str, ticket_number: str) -> str:
    """The ticket's page in the portal: `1484049/1` is one path segment, `/tickets/1484049%2F1`."""
    return f"{public_url.rstrip('/')}/tickets/{quote(ticket_number, safe='')}"


def text_lines(text: str) -> list[str]:
    """Free text (a description, a note) as its non-empty lines, each on one line."""
    return [line for line in (one_line(part) for part in text.splitlines()) if line]


def zone_label(moment: datetime) -> str:
    """`UTC`, `UTC+01:00`, `UTC-03:30`: the offset the ETA was given in, so the time shown is read as meant."""
    offset = moment.utcoffset() or timedelta(0)
    if not offset:
        return "UTC"
    minutes = int(abs(offset).total_seconds()) // 60
    return f"UTC{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def visit_calendar(event: TicketStatusChanged, *, eta: datetime, language: str, settings: NotifierSettings,
                   method: CalendarMethod = "PUBLISH", now: datetime | None = None) -> bytes:
    """The technician's visit as an iCalendar entry (RFC 5545; METHOD:PUBLISH, or METHOD:CANCEL to withdraw it).

    Its UID is the ticket's, so a later entry for the same ticket, with a higher SEQUENCE (the ticket's
    status changes before this one), replaces it in the customer's calendar rather than adding one; a
    CANCEL with the same UID and `STATUS:CANCELLED` removes it.
    """
    words = VISIT_WORDS.get(language, VISIT_WORDS["en"])
    host = urlsplit(settings.public_url).hostname or "portal.localhost"
    number = one_line(event.ticket_number)
    start = eta.astimezone(UTC)
    technician = single_line(event.change.technician)
    description = [f"{words['technician']}: {technician}" if technician else None,
                   f"{words['serial_number']}: {one_line(event.device.serial_number)}",
                   ticket_url(settings.public_url, event.ticket_number)]

    visit = CalendarEvent()
    visit.add("uid", f"ticket-{_file_part(event.ticket_number)}@{host}")
    if (organizer := _organizer(settings.mail_from)) is not None:
        visit.add("organizer", organizer)
    visit.add("sequence", event.sequence)
    visit.add("dtstamp", now or datetime.now(UTC))
    visit.add("dtstart", start)
    visit.add("dtend", start + timedelta(minutes=settings.notifier_visit_minutes))
    visit.add("summary", f"{words['visit']} {number}: {one_line(event.device.model)}")
    visit.add("location", ", ".join(address_lines(event.service_address)))
    visit.add("description", "\n".join(line for line in description if line))
    visit.add("url", ticket_url(settings.public_url, event.ticket_number))
    if method == "CANCEL":
        visit.add("status", "CANCELLED")
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    calendar.add_component(visit)
    ical: bytes = calendar.to_ical()
    return ical


def _organizer(mail_from: str) -> vCalAddress | None:
    """`PORTAL_MAIL_FROM` as the entry's ORGANIZER (RFC 5546 §3.2.1 and §3.2.5: one in PUBLISH and in CANCEL):
    `mailto:` its address, with its display name as CN if it has one; None if it names no address."""
    name, address = email.utils.parseaddr(mail_from)
    if not address:
        return None
    organizer = vCalAddress(f"mailto:{address}")
    if name := one_line(name):
        organizer.params["CN"] = name
    return organizer


def _visit_attachment(event: TicketStatusChanged, method: CalendarMethod, settings: NotifierSettings,
                      language: str) -> Sequence[Attachment]:
    if event.change.eta is None:
        return ()
    return [(f"service-visit-{_file_part(event.ticket_number)}.ics", CALENDAR[method],
             visit_calendar(event, eta=aware(event.change.eta), language=language, settings=settings, method=method))]


def _file_part(ticket_number: str) -> str:
    # `1484049/1` → `1484049-1`: a file name and a UID's local part without a slash.
    return "".join(character if character.isascii() and character.isalnum() else "-"
                   for character in one_line(ticket_number))

