"""Meter-reading reminders (`metering.reminder.due`) and their one-click unsubscribe (RFC 8058, `notifier.unsubscribe`).

Who gets a reminder: `recipient.email` → that address, in the language `recipients` knows for it,
else the `user_id`'s, else the language most of the customer's known users have, else the event's,
else English;
`recipient.user_id` alone → that user's address; `customer_number` alone → every known user of
that customer, each in their own language. A user or customer not known yet raises
`RecipientUnknown`: the event waits until an accounts event names them (`waiting.py`).

Each mail carries, per device, a link that stops that device's reminders for that address, and a
`List-Unsubscribe` header whose link stops all devices of the mail. The tokens are random, stored
as sha256 only, and made only when the delivery is: a copy of the event that finds its delivery
makes none. They are stored just before the delivery, so a mail never goes out with a link that
does not work; when a copy wins the race for the delivery, the tokens made for nothing are removed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.metering import ReminderDevice, ReminderDue
from contracts.notifier import RemindersUnsubscribed, Unsubscribe
from contracts.registration import Location, ReminderRecipient
from services.notifier.excel import reading_sheet
from services.notifier.handlers import deliver_once, display_name, message_id_of
from services.notifier.mails import LANGUAGES, XLSX, mail_language
from services.notifier.settings import notifier_settings
from services.notifier.store import (
    USED,
    DeliveryStore,
    RecipientStore,
    UnsubscribeStore,
    delivery_id,
    majority_language,
    token_digest,
    who_customer,
    who_user,
)
from services.notifier.waiting import RecipientUnknown
from services.runtime.commands import CommandContext, CommandError
from services.runtime.events import EventContext
from services.runtime.mongo import Document, as_datetime

log = logging.getLogger(__name__)

MAIL = "meter_reading_reminder"
SHEET_NAMES = {"de": "zaehlerstaende", "en": "meter-readings", "nb": "maleravlesninger"}


@dataclass(frozen=True)
class Addressee:
    address: str
    language: str | None
    name: str | None = None
    user_id: str | None = None


async def send_reminder(event: ReminderDue, ctx: EventContext) -> None:
    log.info("%s: message_id=%s reminder_id=%s kind=%s devices=%d", ctx.event, ctx.message_id, event.reminder_id,
             event.kind, len(event.devices))
    addressees = await addressees_of(ctx, event)
    if not addressees:
        return
    sheet = await asyncio.to_thread(reading_sheet, event.devices)
    event_message_id = message_id_of(ctx)
    for addressee in addressees:
        await _remind(ctx, event, addressee, sheet, event_message_id)


async def addressees_of(ctx: EventContext, event: ReminderDue) -> list[Addressee]:
    """Who gets this reminder, in which language; raises `RecipientUnknown` for a user or customer not known yet."""
    recipients, named = RecipientStore(ctx.db), event.recipient
    if named.email:
        known = await recipients.by_email(named.email)
        language = _language(known)
        if language is None and named.user_id:
            language = _language(await recipients.get(named.user_id))
        if language is None and named.customer_number:
            language = majority_language(await recipients.of_customer(named.customer_number), LANGUAGES,
                                         prefer=event.language)
        return [Addressee(named.email, language or event.language, _name(known),
                          named.user_id or (known or {}).get("_id"))]
    if named.user_id:
        user = await recipients.get(named.user_id)
        if user is None or not user.get("email"):
            raise RecipientUnknown(who_user(named.user_id), MAIL)
        return [Addressee(user["email"], _language(user) or event.language, _name(user), named.user_id)]
    if named.customer_number:
        users = await recipients.of_customer(named.customer_number)
        if not users:
            raise RecipientUnknown(who_customer(named.customer_number), MAIL)
        usual = majority_language(users, LANGUAGES, prefer=event.language)
        addressees: dict[str, Addressee] = {}
        for user in users:
            addressees.setdefault(user["email"].lower(), Addressee(
                user["email"], _language(user) or usual or event.language, _name(user), user["_id"]))
        return list(addressees.values())
    log.error("%s: message_id=%s reminder_id=%s names no recipient, nothing mailed", ctx.event, ctx.message_id,
              event.reminder_id)
    return []


def _language(recipient: Document | None) -> str | None:
    language = (recipient or {}).get("language")
    return language if language in LANGUAGES else None


def _name(recipient: Document | None) -> str | None:
    return display_name(recipient.get("first_name"), recipient.get("last_name")) if recipient else None


async def _remind(ctx: EventContext, event: ReminderDue, addressee: Addressee, sheet: bytes,
                  event_message_id: str) -> None:
    if await DeliveryStore(ctx.db).get(delivery_id(event_message_id, addressee.address)) is not None:
        log.info("reminder already mailed or being mailed: reminder_id=%s", event.reminder_id)
        return  # a copy of the event: no new tokens
    settings = notifier_settings(ctx.instance)
    now = datetime.now(UTC)
    expires_at = now + timedelta(days=settings.notifier_unsubscribe_days)
    base = f"{settings.public_url.rstrip('/')}/unsubscribe?token="
    device_ids = list(dict.fromkeys(device.device_id for device in event.devices))
    tokens = {device_id: secrets.token_urlsafe(32) for device_id in device_ids}
    every_device = secrets.token_urlsafe(32)
    naming: list[tuple[str, list[str]]] = [(tokens[device_id], [device_id]) for device_id in device_ids]
    naming.append((every_device, device_ids))
    # Whose reminder each device was (one address may get the devices of several customers): an unsubscribe turns
    # off that entry, in registration, and no other.
    owners = {device.device_id: (device.recipient or event.recipient).model_dump(mode="json")
              for device in event.devices}
    stored: list[Document] = [
        {"_id": token_digest(token), "device_ids": ids, "email": addressee.address,
         "recipient": event.recipient.model_dump(mode="json"), "reminder_id": event.reminder_id,
         "device_recipients": {device_id: owners[device_id] for device_id in ids},
         "delivery_id": delivery_id(event_message_id, addressee.address), "created_at": now,
         "expires_at": expires_at} for token, ids in naming]
    unsubscribes = UnsubscribeStore(ctx.db)
    await unsubscribes.create(stored)
    language = mail_language(addressee.language)
    created = await deliver_once(
        ctx, MAIL, user_id=addressee.user_id, address=addressee.address, language=language, name=addressee.name,
        event_message_id=event_message_id,
        attachments=[(f"{SHEET_NAMES[language]}-{event.period_end.isoformat()}.xlsx", XLSX, sheet)],
        headers={"List-Unsubscribe": f"<{base}{every_device}>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        values={"second": event.kind == "second", "period_end": event.period_end,
                "window_closes": event.window_closes, "reading_url": event.reading_url,
                "whole_customer": event.recipient.customer_number is not None,
                "devices": [_device(device, base + tokens[device.device_id]) for device in event.devices]})
    if not created:
        await unsubscribes.discard([document["_id"] for document in stored])


def _device(device: ReminderDevice, unsubscribe_url: str) -> dict[str, Any]:
    return {"serial_number": device.serial_number, "friendly_name": device.friendly_name, "model": device.model,
            "location": location_line(device.location), "unsubscribe_url": unsubscribe_url,
            "counters": [{"counter": counter.counter, "last_value": counter.last_value,
                          "last_date": counter.last_date} for counter in device.counters]}


def location_line(location: Location) -> str | None:
    place = " ".join(part for part in (location.postal_code, location.city) if part)
    return ", ".join(part for part in (location.name, location.street, place, location.building_location)
                     if part) or None


# --- unsubscribe ------------------------------------------------------------------------------

async def unsubscribe(request: Unsubscribe, ctx: CommandContext) -> None:
    """The one-click link of a reminder mail: emits `notifier.reminders.unsubscribed` for each of its devices,
    once; a used link answers ok and changes nothing; an unknown or expired one → `token_invalid`."""
    store, now = UnsubscribeStore(ctx.db), datetime.now(UTC)
    digest = token_digest(request.token)
    token = await store.get(digest)
    if token is None or _expired(token.get("expires_at"), now):
        raise CommandError("token_invalid")
    if token["state"] == USED:
        log.info("unsubscribe link used again: reminder_id=%s", token.get("reminder_id"))
        return
    recipient = ReminderRecipient.model_validate(token["recipient"])
    own = token.get("device_recipients") or {}  # tokens made before it: the mail's recipient for every device
    events = [RemindersUnsubscribed(
        device_id=device_id, email=token["email"], unsubscribed_at=now,
        recipient=ReminderRecipient.model_validate(own[device_id]) if device_id in own else recipient)
        for device_id in token["device_ids"]]
    if await store.use(digest, events):
        log.info("reminders unsubscribed: reminder_id=%s devices=%d", token.get("reminder_id"), len(events))


def _expired(expires_at: datetime | str | None, now: datetime) -> bool:
    moment = as_datetime(expires_at)
    return moment is None or moment < now
