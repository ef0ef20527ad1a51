"""The notifier's handlers: keep recipients, turn account and registration events into mails, retry, list deliveries.

Registration events name only a user id: the address, name and language come from `recipients`,
kept from the accounts events. A user not known there yet (the accounts event is still on its
way, or the notifier was down) raises `RecipientUnknown`: the event waits in `waiting_mails` and
is handled again once an accounts handler here stores that user (`waiting.py`).

Each (event message_id, recipient address) is one `deliveries` document, inserted before the
first attempt: a copy of the event finds it and sends nothing. The handler tries at once;
a temporary failure leaves the delivery `retrying` for `retry_due_deliveries`, which any
replica may run (a lease keeps two from sending the same one) and which resumes after a
restart because the whole state is in the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from pymongo.errors import PyMongoError

from contracts.accounts import (
    EmailChangeRequested,
    EmailConfirmationRequested,
    PasswordChanged,
    PasswordResetRequested,
    ProfileUpdated,
    Recipient,
    UserActivated,
    UsernameReminderRequested,
    UserRegistered,
    VerificationDecided,
)
from contracts.base import Page
from contracts.notifier import Delivery, ListDeliveries
from contracts.registration import BulkUploadCompleted, DeviceRegisteredEvent, RequestDecided
from contracts.tracing import OUTCOME
from services.notifier.mailer import Mailer, Outcome, count_mails_from_zero, mail_attempts
from services.notifier.mails import (
    LANGUAGES,
    XLSX,
    Attachment,
    compose,
    mail_language,
    mailable_address,
    render,
    single_line,
)
from services.notifier.settings import NotifierSettings, notifier_settings
from services.notifier.store import (
    DeliveryStore,
    RecipientStore,
    UnsubscribeStore,
    WaitingMailStore,
    delivery_id,
    who_customer,
    who_user,
)
from services.notifier.waiting import RecipientUnknown, release_waiting
from services.runtime import tracing
from services.runtime.commands import CommandContext
from services.runtime.events import EventContext
from services.runtime.metrics import Counter
from services.runtime.mongo import Document

if TYPE_CHECKING:
    from services.runtime.service import ServiceInstance

log = logging.getLogger(__name__)


async def create_indexes(instance: ServiceInstance) -> None:
    await RecipientStore(instance.db).create_indexes()
    await DeliveryStore(instance.db).create_indexes()
    await UnsubscribeStore(instance.db).create_indexes()
    await WaitingMailStore(instance.db).create_indexes()
    count_mails_from_zero(instance)


# --- recipients -------------------------------------------------------------------------------

def _basics(event: Recipient) -> dict[str, Any]:
    return {"email": event.email, "language": event.language, "first_name": event.first_name,
            "last_name": event.last_name}


# Each handler that stores a recipient then sends the mails waiting for them (`waiting.release_waiting`), also
# when an older profile was ignored: the user is known either way.

async def remember_registered_user(event: UserRegistered, ctx: EventContext) -> None:
    await RecipientStore(ctx.db).remember(event.user_id, {**_basics(event), "username": event.username}, version=0)
    await release_waiting(ctx, who_user(event.user_id))


async def remember_activated_user(event: UserActivated, ctx: EventContext) -> None:
    log.info("%s: message_id=%s user_id=%s", ctx.event, ctx.message_id, event.user_id)
    await RecipientStore(ctx.db).remember(
        event.user_id, {**_basics(event), "username": event.username, "customer_number": event.customer_number},
        version=0)
    await release_waiting(ctx, *_whos(event.user_id, event.customer_number))


async def remember_profile(event: ProfileUpdated, ctx: EventContext) -> None:
    log.info("%s: message_id=%s user_id=%s version=%d", ctx.event, ctx.message_id, event.user_id, event.version)
    fields = {**_basics(event), "username": event.username, "customer_number": event.customer_number,
              "communication": event.communication.model_dump(), "subscriptions": event.subscriptions}
    if not await RecipientStore(ctx.db).remember(event.user_id, fields, version=event.version):
        log.info("older profile of user_id=%s ignored: version=%d", event.user_id, event.version)
    await release_waiting(ctx, *_whos(event.user_id, event.customer_number))


def _whos(user_id: str, customer_number: str | None) -> list[str]:
    return [who_user(user_id), *([who_customer(customer_number)] if customer_number else [])]


# --- mails ------------------------------------------------------------------------------------

async def confirm_new_account(event: UserRegistered, ctx: EventContext) -> None:
    await remember_registered_user(event, ctx)
    await deliver(ctx, event, "account_confirmation", username=event.username, email_change=False,
                  confirmation_url=event.confirmation_url, expires_on=event.expires_at.date().isoformat())


async def confirm_email(event: EmailConfirmationRequested, ctx: EventContext) -> None:
    # The closing words differ: someone who did not sign up may take the account over; someone whose
    # address was named as a new one for another account need only ignore the mail.
    await deliver(ctx, event, "account_confirmation", username=event.username, email_change=event.email_change,
                  confirmation_url=event.confirmation_url, expires_on=event.expires_at.date().isoformat())


async def send_password_reset(event: PasswordResetRequested, ctx: EventContext) -> None:
    await deliver(ctx, event, "password_reset", reset_url=event.reset_url)


async def send_password_changed(event: PasswordChanged, ctx: EventContext) -> None:
    await deliver(ctx, event, "password_changed")


async def send_email_change_notice(event: EmailChangeRequested, ctx: EventContext) -> None:
    await deliver(ctx, event, "email_change_notice", username=event.username, new_email=event.new_email)


async def send_username_reminder(event: UsernameReminderRequested, ctx: EventContext) -> None:
    await deliver(ctx, event, "username_reminder", username=event.username)


async def send_verification_decision(event: VerificationDecided, ctx: EventContext) -> None:
    await deliver(ctx, event, "verification_decision", username=event.username, approved=event.approved,
                  reason=event.reason)


def display_name(first_name: str | None, last_name: str | None) -> str | None:
    return " ".join(part for part in (first_name, last_name) if part) or None


async def deliver(ctx: EventContext, event: Recipient, mail: str, **values: Any) -> None:
    """Mail `mail` to the address, name and language the event itself carries."""
    await deliver_once(ctx, mail, user_id=event.user_id, address=event.email, language=event.language,
                       name=display_name(event.first_name, event.last_name), values=values)


async def deliver_to_user(ctx: EventContext, user_id: str, mail: str, *, language: str | None,
                          attachments: Sequence[Attachment] = (), **values: Any) -> None:
    """Mail `mail` to a user kept in `recipients`, in their saved language, else `language`, else English.

    Raises `RecipientUnknown` while the user is not known: the event waits for them (`waiting.py`).
    """
    recipient = await RecipientStore(ctx.db).get(user_id)
    if recipient is None or not recipient.get("email"):
        raise RecipientUnknown(who_user(user_id), mail)
    await deliver_once(ctx, mail, user_id=user_id, address=recipient["email"],
                       language=recipient.get("language") or language,
                       name=display_name(recipient.get("first_name"), recipient.get("last_name")),
                       attachments=attachments, values=values)


INVALID_ADDRESS = "invalid address: not mailed"


async def deliver_to_contact(ctx: EventContext, mail: str, *, address: str, name: str | None, language: str | None,
                             values: dict[str, Any],
                             attachments: Callable[[str], Sequence[Attachment]] | None = None) -> None:
    """Mail `mail` to a contact an event names (an order's, a ticket's): not necessarily a user of the portal.

    Language: the one `recipients` knows for that address (any case), else `language`, else English;
    `attachments` makes the files in that language. An address that a `To` header cannot carry as one plain
    address is never mailed: its delivery is recorded `failed` at once, for the operator's list.
    """
    known = await RecipientStore(ctx.db).by_email(address)
    saved = (known or {}).get("language")
    language = saved if saved in LANGUAGES else language
    user_id = (known or {}).get("_id")
    name = single_line(name)
    mailable = mailable_address(address)
    if mailable is None:
        await _record_unmailable(ctx, mail, address=address, user_id=user_id, language=language, name=name,
                                 values=values)
        return
    files = attachments(mail_language(language)) if attachments is not None else ()
    await deliver_once(ctx, mail, user_id=user_id, address=mailable, language=language, name=name, values=values,
                       attachments=files)


async def _record_unmailable(ctx: EventContext, mail: str, *, address: str, user_id: str | None,
                             language: str | None, name: str | None, values: dict[str, Any]) -> None:
    log.warning("%s: message_id=%s contact address cannot be mailed, recorded failed", ctx.event, ctx.message_id)
    rendered = render(mail, language, public_url=notifier_settings(ctx.instance).public_url, name=name, **values)
    event_message_id = message_id_of(ctx)
    await DeliveryStore(ctx.db).create_failed(
        {"_id": delivery_id(event_message_id, address), "event": ctx.event, "event_message_id": event_message_id,
         "mail": mail, "user_id": user_id, "recipient": address.lower(), "address": address,
         "language": rendered.language, "subject": rendered.subject},
        now=datetime.now(UTC), error=INVALID_ADDRESS)
    mail_attempts(ctx.instance).labels("failed").inc()


def message_id_of(ctx: EventContext) -> str:
    # Without a message_id the event cannot be recognised again; the runtime cannot deduplicate it either.
    return ctx.message_id or uuid.uuid4().hex


async def deliver_once(ctx: EventContext, mail: str, *, user_id: str | None, address: str, language: str | None,
                       name: str | None, values: dict[str, Any], attachments: Sequence[Attachment] = (),
                       headers: Mapping[str, str] | None = None, event_message_id: str | None = None) -> bool:
    """Render `mail` for one recipient, store it once per (event, address), and try to send it.

    True when this call created the delivery, False when it existed already (a copy of the event).
    `event_message_id` is given by a caller that worked out the delivery's key (`message_id_of`) before.
    """
    log.info("%s: message_id=%s user_id=%s mail=%s", ctx.event, ctx.message_id, user_id, mail)
    settings = notifier_settings(ctx.instance)
    rendered = render(mail, language, public_url=settings.public_url, name=name, **values)
    message = compose(rendered, sender=settings.mail_from, to=address, to_name=name,
                      attachments=attachments, headers=headers).as_string()
    event_message_id = event_message_id or message_id_of(ctx)
    key = delivery_id(event_message_id, address)
    store = DeliveryStore(ctx.db)
    lease_id = await store.create(
        {"_id": key, "event": ctx.event, "event_message_id": event_message_id, "mail": mail,
         "user_id": user_id, "recipient": address.lower(), "address": address,
         "language": rendered.language, "subject": rendered.subject, "message": message},
        now=datetime.now(UTC), lease=timedelta(seconds=settings.notifier_lease_seconds))
    if lease_id is None:
        log.info("already mailed or being mailed: delivery=%s", key)
        return False
    await attempt(store, Mailer(settings), settings,
                  {"_id": key, "lease_id": lease_id, "attempts": 0, "address": address,
                   "message": message}, mail_attempts(ctx.instance))
    return True


# --- registration mails -----------------------------------------------------------------------

async def send_device_registration(event: DeviceRegisteredEvent, ctx: EventContext) -> None:
    if event.upload_id is not None:
        return  # a row of a bulk upload: the upload's one result mail covers it (OKI: "sent via email")
    await deliver_to_user(ctx, event.registered_by, "device_registration", language=event.language,
                          model=event.model, serial_number=event.serial_number, friendly_name=event.friendly_name,
                          warranty=event.warranty)


async def send_bulk_result(event: BulkUploadCompleted, ctx: EventContext) -> None:
    failed = event.status == "failed"
    attachments: list[Attachment] = []
    if not failed and event.result_file is not None:
        attachments.append((event.result_file.filename, event.result_file.content_type or XLSX,
                            event.result_file.content()))
    await deliver_to_user(ctx, event.user_id, "bulk_result", language=event.language, attachments=attachments,
                          filename=event.filename, failed=failed, total=event.total, processed=event.processed,
                          unprocessed=event.unprocessed, reason=event.reason, limit=event.limit,
                          attached=bool(attachments))


async def send_request_decision(event: RequestDecided, ctx: EventContext) -> None:
    await deliver_to_user(ctx, event.user_id, "request_decision", language=event.language, kind=event.kind,
                          approved=event.approved, reason=event.reason, devices=len(event.device_ids))


async def attempt(store: DeliveryStore, mailer: Mailer, settings: NotifierSettings, delivery: Document,
                  attempts_counter: Counter) -> None:
    """One attempt at a leased delivery; its outcome decides `sent`, `failed` or the next attempt."""
    key, lease_id = delivery["_id"], delivery["lease_id"]
    attempts = int(delivery["attempts"]) + 1
    # The delivery's id holds the recipient's address: the trace collector gets a digest of it, not the address.
    traced_id = hashlib.sha256(key.encode()).hexdigest()[:32]
    with tracing.span("notifier.send_mail", kind=SpanKind.CLIENT,
                      attributes={"portal.delivery.id_sha256": traced_id, "portal.delivery.attempt": attempts}) as span:
        result = await mailer.send(delivery["message"], delivery["address"])
        span.set_attribute(OUTCOME, result.outcome.value)
        if result.outcome is not Outcome.SENT:
            span.set_status(Status(StatusCode.ERROR, result.error or result.outcome.value))
    if result.outcome is Outcome.SENT:
        await _record_sent(store, key, lease_id, attempts=attempts,
                           within=settings.notifier_lease_seconds / 2)
        attempts_counter.labels("sent").inc()
        log.info("mail sent: delivery=%s attempt=%d", key, attempts)
    elif result.outcome is Outcome.PERMANENT:
        await store.mark_failed(key, lease_id, attempts=attempts, error=result.error or "refused")
        attempts_counter.labels("failed").inc()
        log.warning("mail refused for good: delivery=%s error=%s", key, result.error)
    elif attempts >= settings.notifier_max_attempts:
        error = f"gave up after {attempts} attempts: {result.error}"
        await store.mark_failed(key, lease_id, attempts=attempts, error=error)
        attempts_counter.labels("failed").inc()
        log.warning("mail given up: delivery=%s error=%s", key, error)
    else:
        delay = settings.retry_delay(attempts)
        await store.retry_later(key, lease_id, attempts=attempts, error=result.error or "temporary failure",
                                at=datetime.now(UTC) + timedelta(seconds=delay))
        attempts_counter.labels("retrying").inc()
        log.warning("mail not sent, retrying in %.1f s: delivery=%s error=%s", delay, key, result.error)


RECORD_RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)


async def _record_sent(store: DeliveryStore, key: str, lease_id: str, *, attempts: int, within: float) -> None:
    """Mark a mail the SMTP server accepted `sent`, again and again while the database is away.

    Until this write lands, the delivery is `retrying` and leased to us: once the lease ran out, the retry loop
    would send the mail a second time. So a database away for a few seconds must not end the attempt here; only
    one away for half the lease does (a process killed at this point still sends twice: README "Delivery").
    """
    deadline = asyncio.get_running_loop().time() + within
    for delay in _backoff():
        try:
            await store.mark_sent(key, lease_id, attempts=attempts)
            return
        except PyMongoError:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("mail sent, not yet recorded; trying again in %.1f s: delivery=%s", delay, key)
            await asyncio.sleep(delay)


def _backoff() -> Iterator[float]:
    yield from RECORD_RETRY_SECONDS
    while True:
        yield RECORD_RETRY_SECONDS[-1]


async def retry_due_deliveries(instance: ServiceInstance) -> None:
    """Send every delivery whose next attempt is due, one at a time, while the service runs."""
    settings = notifier_settings(instance)
    store, mailer = DeliveryStore(instance.db), Mailer(settings)
    lease = timedelta(seconds=settings.notifier_lease_seconds)
    while True:
        delivery = await store.claim_due(now=datetime.now(UTC), lease=lease)
        if delivery is None:
            await asyncio.sleep(settings.notifier_poll_seconds)
            continue
        await attempt(store, mailer, settings, delivery, mail_attempts(instance))


# --- operator ---------------------------------------------------------------------------------

async def list_deliveries(request: ListDeliveries, ctx: CommandContext) -> Page[Delivery]:
    """Mails with their status (`sent`, `retrying`, `failed`), newest first; filter by recipient, event, status."""
    return await DeliveryStore(ctx.db).page(request)
