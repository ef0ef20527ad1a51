"""ticketing's commands: opening a ticket for a device, notes and cancellation before dispatch, finding tickets, the
back office's queue and life cycle; and its read model of devices.

Who sees a device mirrors registration (`services.runtime.readmodels.sees`); a device the caller may not see is
`not_found`, also when it exists. Who sees a ticket: the users of the customer its device belonged to when it was
opened, a contract sign-in of that device's contract, and whoever opened it (a claimant, a dealer, a user of no
customer). Operators see every ticket. Anyone else gets `not_found`, for reading and for changing it.

Every change is one write conditional on the status it starts from and on the command not having changed the ticket
yet (`not_applied`); when it matches nothing, the ticket is read again to tell a re-run (answered as before) from a
ticket that moved on (refused).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from contracts import ticketing as api
from contracts.base import Page
from contracts.registration import DeviceState
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document, parse_stamp, stamp
from services.runtime.outbox import APPLIED
from services.runtime.readmodels import DEVICE_EVENTS, device_fields, may_see_record, visible_records
from services.runtime.service import Router, ServiceInstance
from services.ticketing import opening
from services.ticketing.settings import ticketing_settings
from services.ticketing.store import TicketingStore
from services.ticketing.tickets import (
    MAX_NOTES,
    actor,
    allowed,
    event_fields,
    history_of,
    is_open,
    same_change,
    status_change,
    view,
)

router = Router()


def store_of(ctx: CommandContext | EventContext) -> TicketingStore:
    return TicketingStore(ctx.db, ctx.instance.lookups)


def command_of(ctx: CommandContext) -> str:
    assert ctx.message_id is not None, "a command that changes state always has its message id"
    return ctx.message_id


def same_moment(eta: str, before: str | None) -> bool:
    return before is not None and parse_stamp(eta) == parse_stamp(before)


def applied(ticket: Document, command_id: str) -> bool:
    return command_id in (ticket.get(APPLIED) or [])


async def visible_ticket(ctx: CommandContext, number: str) -> Document:
    """The ticket if the caller may see it; else `not_found`, whether or not it exists."""
    ticket = await store_of(ctx).ticket({"ticket_number": number})
    if ticket is None or not may_see_record(ctx.caller, ticket):
        raise CommandError("not_found", fields={"ticket_number": "not_found"})
    return ticket


async def again(ctx: CommandContext, number: str) -> Document:
    """The ticket read again after a conditional write that matched nothing (tickets are never deleted)."""
    ticket = await store_of(ctx).ticket({"ticket_number": number})
    assert ticket is not None, f"ticket {number} vanished"
    return ticket


async def release(ctx: CommandContext, ticket: Document) -> None:
    """Free the device for its next ticket, once the ticket's own status says it is over."""
    await store_of(ctx).release_guard(str(ticket["device_id"]), str(ticket["_id"]))


# --- a customer's tickets -------------------------------------------------------------------------------------------

@router.command("ticketing.open_ticket", api.OpenTicket, access=Access.AUTH, claim_in_write=True)
async def open_ticket(request: api.OpenTicket, ctx: CommandContext) -> api.OpenedReply:
    """A service request for one device the caller sees, to its location or the address given; refused with
    `open_ticket_exists` (naming the open ticket's number and whether it can still be updated) while the device has a
    ticket that is not resolved or cancelled."""
    return await opening.open_ticket(ctx, store_of(ctx), request, caller=ctx.caller, command_id=command_of(ctx),
                                     language=ctx.language, settings=ticketing_settings(ctx.instance))


@router.command("ticketing.add_note", api.AddNote, access=Access.AUTH)
async def add_note(request: api.AddNote, ctx: CommandContext) -> dict[str, Any]:
    """More text for a ticket no technician is dispatched to yet; in any other status `already_dispatched`, as the
    catalogue names it (also once cancelled or resolved); at most `MAX_NOTES` notes per ticket (`rate_limited`)."""
    command_id = command_of(ctx)
    ticket = await visible_ticket(ctx, request.ticket_number)
    if ticket["status"] == "to_be_scheduled" and int(ticket.get("note_count") or 0) < MAX_NOTES:
        now = datetime.now(UTC)
        note = {"text": request.text, "at": stamp(now), "by": actor(ctx.caller)}
        event = api.TicketUpdated(**event_fields(ticket), note=api.Note(text=request.text, at=now, by=note["by"]))
        if await store_of(ctx).change(request.ticket_number, status="to_be_scheduled",
                                      condition={"note_count": {"$lt": MAX_NOTES}},
                                      fields={f"notes.{command_id}": note, "updated_at": stamp(now)},
                                      inc={"note_count": 1}, events=[event], command_id=command_id):
            return {}
        ticket = await again(ctx, request.ticket_number)
    if applied(ticket, command_id):
        return {}
    if ticket["status"] != "to_be_scheduled":
        raise CommandError("already_dispatched", fields={"ticket_number": str(ticket["status"])})
    if int(ticket.get("note_count") or 0) >= MAX_NOTES:
        raise CommandError("rate_limited", fields={"text": f"at most {MAX_NOTES} notes per ticket"})
    raise CommandError("conflict")  # changed meanwhile in a way no rule names: the caller may send it again


@router.command("ticketing.cancel_ticket", api.CancelTicket, access=Access.AUTH)
async def cancel_ticket(request: api.CancelTicket, ctx: CommandContext) -> api.CancelledReply:
    """Withdraw a ticket no technician is dispatched to yet, with a reason; a cancelled one again is answered
    `cancelled`; once dispatched, `already_dispatched` (the hotline takes it from there)."""
    command_id = command_of(ctx)
    ticket = await visible_ticket(ctx, request.ticket_number)
    if ticket["status"] == "to_be_scheduled":
        now = datetime.now(UTC)
        history = history_of(ticket)
        entry = {"status": "cancelled", "at": stamp(now), "by": actor(ctx.caller), "technician": ticket.get(
            "technician"), "eta": ticket.get("eta"), "note": request.reason, "sequence": len(history)}
        event = api.TicketStatusChanged(**event_fields(ticket), status="cancelled", previous_status="to_be_scheduled",
                                        change=status_change(entry), reason=request.reason, sequence=len(history))
        if await store_of(ctx).change(request.ticket_number, status="to_be_scheduled", events=[event],
                                      fields={"status": "cancelled", f"history.{command_id}": entry,
                                              "cancel_reason": request.reason, "updated_at": stamp(now)},
                                      command_id=command_id):
            await release(ctx, ticket)
            return api.CancelledReply()
        ticket = await again(ctx, request.ticket_number)
    if applied(ticket, command_id) or ticket["status"] == "cancelled":
        await release(ctx, ticket)  # heals a release that died after the status was written
        return api.CancelledReply()
    raise CommandError("already_dispatched", fields={"ticket_number": str(ticket["status"])})


@router.command("ticketing.get_ticket", api.GetTicket, access=Access.AUTH, replay=Replay.RERUN)
async def get_ticket(request: api.GetTicket, ctx: CommandContext) -> api.Ticket:
    """The ticket with its device, service address, status history and notes (oldest first), and whether notes and
    cancellation are still possible (`updatable`); another customer's is `not_found`."""
    return view(await visible_ticket(ctx, request.ticket_number))


@router.command("ticketing.list_tickets", api.ListTickets, access=Access.AUTH, replay=Replay.RERUN)
async def list_tickets(request: api.ListTickets, ctx: CommandContext) -> Page[api.Ticket]:
    """The caller's tickets, newest first; by device (or devices), by status, and by part of the number (quick
    search)."""
    visible = visible_records(ctx.caller)
    filters: Document = {}
    if request.device_id:
        filters["device_id"] = request.device_id
    if request.device_ids is not None:  # with `device_id` too: the tickets of that device if it is among them
        asked = [device_id for device_id in request.device_ids if request.device_id in (None, "", device_id)]
        filters["device_id"] = {"$in": asked}
    if request.status:
        filters["status"] = request.status
    if request.ticket_number and request.ticket_number.strip():
        filters["ticket_number"] = {"$regex": re.escape(request.ticket_number.strip())}
    # `$and` only when keys collide: nx-27017 reads the whole collection for it.
    query = {"$and": [visible, filters]} if visible.keys() & filters.keys() else {**visible, **filters}
    found, total = await store_of(ctx).tickets_page(query, [("opened_at", -1), ("ticket_number", -1)],
                                                    request.page, request.page_size)
    return Page[api.Ticket](items=[view(ticket) for ticket in found], total=total, page=request.page,
                            page_size=request.page_size)


# --- the back office ------------------------------------------------------------------------------------------------

@router.command("ticketing.operator.list_tickets", api.OperatorListTickets, access=Access.OPERATOR,
                replay=Replay.RERUN)
async def operator_list_tickets(request: api.OperatorListTickets, ctx: CommandContext) -> Page[api.Ticket]:
    """What to schedule: tickets of a status (`to_be_scheduled` unless asked otherwise; none: all), oldest first,
    each with its device and service address."""
    query: Document = {"status": request.status} if request.status else {}
    found, total = await store_of(ctx).tickets_page(query, [("opened_at", 1), ("ticket_number", 1)], request.page,
                                                    request.page_size)
    return Page[api.Ticket](items=[view(ticket) for ticket in found], total=total, page=request.page,
                            page_size=request.page_size)


@router.command("ticketing.operator.set_status", api.SetStatus, access=Access.OPERATOR)
async def set_status(request: api.SetStatus, ctx: CommandContext) -> api.StatusReply:
    """One step of the life cycle (`to_be_scheduled → dispatched → en_route → on_site → resolved → closed`;
    `cancelled` from `to_be_scheduled` or `dispatched`), with technician, ETA and a note; the technician and ETA stay
    as set before when not given. The same change sent again is answered with the status; anything else is
    `invalid_transition`. `resolved` and `cancelled` free the device for its next ticket."""
    command_id = command_of(ctx)
    ticket = await store_of(ctx).ticket({"ticket_number": request.ticket_number})
    if ticket is None:
        raise CommandError("not_found", fields={"ticket_number": "not_found"})
    asked = request.status
    # The ETA keeps the operator's offset: the customer's mail and calendar show the visit in local time.
    technician, eta = request.technician, request.eta.isoformat() if request.eta else None
    current = str(ticket["status"])
    if allowed(current, asked):
        now = datetime.now(UTC)
        history = history_of(ticket)
        entry = {"status": asked, "at": stamp(now), "by": "operator",
                 "technician": technician or ticket.get("technician"), "eta": eta or ticket.get("eta"),
                 "note": request.note, "sequence": len(history)}
        event = api.TicketStatusChanged(**event_fields(ticket), status=asked, previous_status=current,
                                        change=status_change(entry), sequence=len(history),
                                        eta_changed=eta is not None and not same_moment(eta, ticket.get("eta")))
        if await store_of(ctx).change(request.ticket_number, status=current, events=[event], command_id=command_id,
                                      fields={"status": asked, "technician": entry["technician"], "eta": entry["eta"],
                                              f"history.{command_id}": entry, "updated_at": stamp(now)}):
            if not is_open(asked):
                await release(ctx, ticket)
            return api.StatusReply(status=asked)
        ticket = await again(ctx, request.ticket_number)
        current = str(ticket["status"])
    history = history_of(ticket)
    if applied(ticket, command_id) or (current == asked != "to_be_scheduled" and same_change(
            history[-1] if history else None, technician=technician, eta=eta, note=request.note)):
        if not is_open(asked):
            await release(ctx, ticket)  # heals a release that died after the status was written
        return api.StatusReply(status=asked)
    raise CommandError("invalid_transition", fields={"status": f"{current} -> {asked} is not allowed"})


# --- read model ---------------------------------------------------------------------------------------------------

async def remember_device(event: DeviceState, ctx: EventContext) -> None:
    await store_of(ctx).remember_device(event.device_id, device_fields(event), event.version)


for _event in DEVICE_EVENTS:
    router.event(_event)(remember_device)


async def create_indexes(instance: ServiceInstance) -> None:
    await TicketingStore(instance.db).create_indexes()
