"""Opening a ticket once: a device the caller sees, a unique number, and at most one open ticket per device.

Without multi-document transactions, the command claims its message id in the same ordered bulk write that takes the
device's guard and inserts the ticket (`claim_in_write`, `ctx.write_once`), so a copy of the command finds it done:

1. The ticket `t-<command>`, the device and its guard (`open_tickets`) are read. The ticket found, this command stored
   it before (its claim expired since, or its worker died before the stored reply): its number is the answer, and
   nothing is written. A guard held by a live ticket refuses before a number is spent; held by this very ticket (a
   worker that died half-way), its number is the guard's. A revoked caller is refused before anything is written.
2. The project number comes from a counter document (`$inc`), unique across replicas.
3. One round trip: the claim; the guard, taken only as it was read (free, and its count of the device's tickets
   unchanged; or still this ticket's), else the write collides and nothing after it happens; the ticket with its
   `ticketing.ticket.opened` (outbox); the stored reply. Of two tickets opened at the same moment one takes the guard,
   the other reads it again and is refused naming the winner's number, which the guard alone gives
   (`<seq>/<count>`), even before the winner's ticket is stored.

Reaching `resolved` or `cancelled` frees the guard after the ticket's status is written. A guard left behind (its
ticket resolved or cancelled but the release died; or its ticket never stored, after
`PORTAL_TICKETING_GUARD_GRACE_SECONDS`) is freed by the next ticket that finds it in the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts import ticketing as api
from contracts.registration import Location
from services.runtime.commands import CommandContext, CommandError
from services.runtime.mongo import Document, parse_stamp, stamp
from services.runtime.readmodels import contract_key, may_see_record, record_viewers, sees
from services.runtime.tokens import Claims, Role
from services.ticketing.settings import TicketingSettings
from services.ticketing.store import MAX_ATTEMPTS, TicketingStore
from services.ticketing.tickets import actor, event_fields, guard_number, is_open, ticket_number


async def open_ticket(ctx: CommandContext, store: TicketingStore, request: api.OpenTicket, *, caller: Claims,
                      command_id: str, language: str, settings: TicketingSettings) -> api.OpenedReply:
    ticket_id = f"t-{command_id}"
    earlier, device, guard = await asyncio.gather(store.ticket_by_id(ticket_id), store.device(request.device_id),
                                                  store.guard(request.device_id))
    if earlier is not None:  # this very command, re-run after its claim expired (or a crash before its reply)
        await ctx.ensure_signed_in()
        return api.OpenedReply(ticket_number=earlier["ticket_number"])
    if device is None or not may_open(caller, device):
        raise CommandError("not_found", fields={"device_id": "not_found"})

    if request.service_address is None and not all(
            str((device.get("location") or {}).get(key) or "").strip() for key in ("street", "postal_code", "city")):
        raise CommandError("validation_failed", fields={
            "service_address": "the device's location has no street, postcode or city: give the address"})

    now = datetime.now(UTC)
    customer, contract = device.get("customer_number"), device.get("contract_number")
    seen_by = {"viewers": viewers(caller, device),
               "contract_key": contract_key(customer, contract) if customer and contract else None}
    project: int | None = None  # spent once, only when the guard is free
    await ctx.ensure_signed_in()  # before the first write: a number spent, a guard healed
    for _ in range(MAX_ATTEMPTS):
        holder = guard.get("ticket_id") if guard else None
        if guard is not None and holder is not None and holder != ticket_id:
            await refuse_if_held(store, guard, caller, settings, now)  # refused early: no number spent
            guard = {**guard, "ticket_id": None}  # freed as read; if not, taking it below collides
        if guard is not None and holder == ticket_id:
            # Taken by this command before it died: its number stands, if the guard is still its own. Refreshing its
            # time keeps a ticket that finds it in the way from freeing it as never stored.
            number = guard_number(guard)
            guard_write = store.refresh_guard(request.device_id, ticket_id, stamp(now))
        else:
            if project is None:
                project = settings.ticketing_first_number - 1 + await store.next_seq()
            count = int(guard.get("count") or 0) if guard else 0
            number = ticket_number(project, count + 1)
            guard_write = store.take_guard(request.device_id, ticket_id, {"seq": project, "at": stamp(now), **seen_by},
                                           count=guard.get("count") if guard else None)
        ticket = ticket_document(ticket_id, number, request, device, caller=caller, language=language, now=now,
                                 entry_id=command_id, seen_by=seen_by)
        event = api.TicketOpened(**event_fields(ticket), opened_by=caller.user_id, opened_at=now,
                                 category=request.category, description=request.description,
                                 address_permanent=ticket["address_permanent"])
        reply = api.OpenedReply(ticket_number=number)
        try:
            await ctx.write_once([guard_write, store.ticket_insert(ticket, [event])], reply)
            return reply
        except DuplicateKeyError:
            # The guard moved since it was read, or this ticket exists (its command re-run after its claim expired).
            earlier, guard = await asyncio.gather(store.ticket({"_id": ticket_id}), store.guard(request.device_id))
            if earlier is not None:
                return api.OpenedReply(ticket_number=earlier["ticket_number"])
    raise RuntimeError(f"the guard of device {request.device_id} not taken after repeated collisions")


def viewers(caller: Claims, device: Document) -> list[str]:
    """Who sees the ticket: the device's customer and whoever opened it; for a ticket an operator opens for a
    device of no customer, also the user who registered that device (the one who called)."""
    seen = record_viewers(device.get("customer_number"), caller.user_id)
    if caller.role is Role.OPERATOR and not device.get("customer_number") and device.get("registered_by"):
        seen.append(f"user:{device['registered_by']}")
    return seen


def may_open(caller: Claims, device: Document) -> bool:
    """A device the caller sees; operators open tickets for any device (a customer on the phone)."""
    return caller.role is Role.OPERATOR or sees(caller, device)


async def refuse_if_held(store: TicketingStore, guard: Document, caller: Claims, settings: TicketingSettings,
                         now: datetime) -> None:
    """Refuse with `open_ticket_exists` while the guard's ticket is open, or not stored yet but within the grace
    period; else free the guard (the caller may try to take it)."""
    holder_id = str(guard["ticket_id"])
    holder = await store.ticket({"_id": holder_id})
    if holder is not None:
        live = is_open(holder["status"])
    else:
        live = parse_stamp(str(guard.get("at"))) >= now - timedelta(seconds=settings.ticketing_guard_grace_seconds)
    if not live:
        # Only as read: a re-run of the holder's own command refreshes `at` when it goes on to insert its ticket.
        await store.release_guard(str(guard["_id"]), holder_id, taken_at=str(guard.get("at")))
        return
    raise CommandError("open_ticket_exists", fields=held_fields(caller, guard, holder))


def held_fields(caller: Claims, guard: Mapping[str, Any], holder: Mapping[str, Any] | None) -> dict[str, str]:
    """Name the open ticket and whether notes and cancellation are still possible (a ticket not stored yet is about
    to be `to_be_scheduled`); to a caller who may not see it (the device changed customer while it was open, or it
    is another user's ticket), only that one exists."""
    if not may_see_record(caller, holder if holder is not None else guard):
        return {"device_id": "open_ticket_exists", "updatable": "false"}
    number = str(holder["ticket_number"]) if holder is not None else guard_number(guard)
    updatable = holder is None or holder["status"] == "to_be_scheduled"
    return {"ticket_number": number, "updatable": "true" if updatable else "false"}


def ticket_document(ticket_id: str, number: str, request: api.OpenTicket, device: Document, *, caller: Claims,
                    language: str, now: datetime, entry_id: str, seen_by: Document) -> Document:
    given = request.service_address
    address = given.address.model_dump() if given is not None else Location(**{
        key: value for key, value in (device.get("location") or {}).items()
        if key in Location.model_fields}).model_dump()
    opened = stamp(now)
    return {
        "_id": ticket_id, "ticket_number": number, "status": "to_be_scheduled",
        "device_id": device["_id"],
        "device": {"device_id": device["_id"], "serial_number": device["serial_number"], "model": device["model"],
                   "friendly_name": device.get("friendly_name")},
        "customer_number": device.get("customer_number"), "contract_number": device.get("contract_number"),
        **seen_by, "opened_by": caller.user_id, "opened_at": opened, "language": language,
        "contact": request.contact.model_dump(), "description": request.description, "category": request.category,
        "service_address": address, "address_permanent": bool(given is not None and given.permanent),
        "technician": None, "eta": None,
        "history": {entry_id: {"status": "to_be_scheduled", "at": opened, "by": actor(caller), "technician": None,
                               "eta": None, "note": None, "sequence": 0}},
        "notes": {}, "note_count": 0, "updated_at": opened,
    }

