"""Mails whose recipient the notifier learns late: kept in `waiting_mails` until it knows them, then sent.

Registration and reminder events name a user (or a customer) whose address comes from `recipients`,
filled by the accounts events, which travel on other queues and may come later, or much later when
the notifier was down. A handler registered through `LateRecipients.event` that raises
`RecipientUnknown` does not fail: the event is stored under `<event>:<message_id>:<who>` (a copy
stores nothing new) and acked. Storing a recipient (`release_waiting`, called by the accounts
handlers) runs the event's own handler again with the event's original name and `message_id`, so
`deliver_once` keys the mail exactly as the first attempt would have: one mail, also when two
replicas release at once or a copy of the event comes later. The entry is deleted after its
handler completed. `sweep_waiting_mails`, on every replica, releases what the accounts handlers
missed (a recipient stored between the check and the insert) and records mails whose recipient
never came within `PORTAL_NOTIFIER_WAIT_DAYS` as `failed`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from contracts.base import Event
from services.notifier.mailer import mail_attempts
from services.notifier.mails import mail_language
from services.notifier.settings import notifier_settings
from services.notifier.store import USER, DeliveryStore, RecipientStore, WaitingMailStore, delivery_id
from services.runtime.events import EventContext, EventHandler
from services.runtime.instance import Instance
from services.runtime.mongo import Document, parse_stamp, stamp

if TYPE_CHECKING:
    from services.runtime.service import Service

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
STATE_KEY = "late_recipients"
NEVER_KNOWN = "recipient never known"
STILL_FAILING = "recipient known, but the mail kept failing"
SWEEP_BATCH = 200


class RecipientUnknown(Exception):
    """The event's user or customer (`who`, see `store.who_user`) has no address in `recipients` yet: the event
    waits for them. `mail` names the mail it was to become, for the operator's list if it never does."""

    def __init__(self, who: str, mail: str) -> None:
        super().__init__(f"recipient {who} not known yet")
        self.who, self.mail = who, mail


class LateRecipients:
    """The notifier's event registrations, kept in one place: event name → (model, handler).

    `event(Model)(handler)` registers the handler on the service, wrapped so that `RecipientUnknown` keeps
    the event in `waiting_mails`; the same (model, handler) runs it again once the recipient is known.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.handlers: dict[str, tuple[type[Event], EventHandler]] = {}
        service.on_startup(self._install)

    def event(self, model: type[Event]) -> Callable[[F], F]:
        def register(handler: F) -> F:
            self.handlers[model.routing_key] = (model, handler)
            self.service.event(model)(_kept(handler))
            return handler
        return register

    async def _install(self, instance: Instance) -> None:
        instance.state[STATE_KEY] = self

    async def release(self, instance: Instance, entry: Document) -> bool:
        """Run a waiting mail's handler as its first attempt would have; True when it waits no more (done and
        removed here, or by another replica).

        Never raises: what fails stays waiting for the next sweep (a stored body that no longer decodes, an event
        no longer consumed, a database error) and is given up on after `PORTAL_NOTIFIER_WAIT_DAYS`.
        """
        key, name, message_id, who = entry["_id"], entry["event"], entry["message_id"], entry["who"]
        store = WaitingMailStore(instance.db)
        try:
            if "body" not in entry:  # the sweep reads entries without their bodies
                found = await store.get(key)
                if found is None:
                    return True  # released by another replica meanwhile
                entry = found
            spec = self.handlers.get(name)
            if spec is None:
                log.error("%s: message_id=%s no handler for this event any more, mail for %s left waiting", name,
                          message_id, who)
                return False
            model, handler = spec
            event = model.model_validate_json(entry["body"])
            await handler(event, EventContext(event=name, message_id=message_id, db=instance.db,
                                              instance=instance))
            await store.delete(key)
        except RecipientUnknown as unknown:
            log.info("%s: message_id=%s %s still not known, mail left waiting", name, message_id, unknown.who)
            return False
        except ValidationError:
            log.error("%s: message_id=%s waiting mail for %s no longer decodes, left waiting", name, message_id,
                      who)
            return False
        except Exception:
            log.exception("%s: message_id=%s waiting mail for %s failed, left for the next sweep", name, message_id,
                          who)
            return False
        log.info("%s: message_id=%s mail for %s released: recipient known", name, message_id, who)
        return True


def _kept(handler: F) -> F:
    @functools.wraps(handler)
    async def handle(event: Event, ctx: EventContext) -> None:
        try:
            await handler(event, ctx)
        except RecipientUnknown as unknown:
            await keep(ctx, event, unknown)
    return handle  # type: ignore[return-value]


async def keep(ctx: EventContext, event: Event, unknown: RecipientUnknown) -> None:
    """Store the event until `unknown.who` is known; a copy of it finds its entry and stores nothing new."""
    # Without a message_id the event cannot be recognised again; its mail is keyed by the id chosen here.
    message_id = ctx.message_id or uuid.uuid4().hex
    stored = await WaitingMailStore(ctx.db).keep({
        "_id": f"{ctx.event}:{message_id}:{unknown.who}", "event": ctx.event, "message_id": message_id,
        "who": unknown.who, "mail": unknown.mail, "language": getattr(event, "language", None),
        "body": event.model_dump_json(), "since": stamp(datetime.now(UTC))})
    if stored:
        log.info("%s: message_id=%s %s not known yet, mail %s kept until it is", ctx.event, message_id,
                 unknown.who, unknown.mail)
    else:
        log.info("%s: message_id=%s mail for %s already waiting", ctx.event, message_id, unknown.who)


def late_recipients(instance: Instance) -> LateRecipients:
    late: LateRecipients = instance.state[STATE_KEY]
    return late


async def release_waiting(ctx: EventContext, *whos: str) -> None:
    """Send the mails waiting for `whos`, whom the calling handler has just stored in `recipients`."""
    for entry in await WaitingMailStore(ctx.db).of(whos):
        await late_recipients(ctx.instance).release(ctx.instance, entry)


async def sweep_waiting_mails(instance: Instance) -> None:
    """Every `PORTAL_NOTIFIER_WAIT_SWEEP_SECONDS`, from the start: release or give up waiting mails."""
    settings = notifier_settings(instance)
    while True:
        await sweep(instance, now=datetime.now(UTC))
        await asyncio.sleep(settings.notifier_wait_sweep_seconds)


async def sweep(instance: Instance, *, now: datetime) -> None:
    """Release the waiting mails whose recipient is known by now; give up on those older than the wait limit."""
    late, store = late_recipients(instance), WaitingMailStore(instance.db)
    recipients = RecipientStore(instance.db)
    cutoff = now - timedelta(days=notifier_settings(instance).notifier_wait_days)
    after: str | None = None
    while batch := await store.batch(after=after, limit=SWEEP_BATCH):
        after = batch[-1]["_id"]
        known = await recipients.known({entry["who"] for entry in batch})
        for entry in batch:
            if entry["who"] in known and await late.release(instance, entry):
                continue
            if parse_stamp(entry["since"]) < cutoff:
                await give_up(instance, entry, now=now,
                              error=NEVER_KNOWN if entry["who"] not in known else STILL_FAILING)


async def give_up(instance: Instance, entry: Document, *, now: datetime, error: str) -> None:
    """Record the mail as a `failed` delivery to `who` (for the operator's list) and stop waiting."""
    who, message_id = entry["who"], entry["message_id"]
    kind, _, key = who.partition(":")
    await DeliveryStore(instance.db).create_failed(
        {"_id": delivery_id(message_id, who), "event": entry["event"], "event_message_id": message_id,
         "mail": entry["mail"], "user_id": key if kind == USER else None, "recipient": who.lower(), "address": None,
         "language": mail_language(entry.get("language")), "subject": ""},
        now=now, error=error)
    await WaitingMailStore(instance.db).delete(entry["_id"])
    mail_attempts(instance).labels("failed").inc()
    log.warning("%s: message_id=%s mail %s for %s given up (%s), waiting since %s", entry["event"], message_id,
                entry["mail"], who, error, entry["since"])
