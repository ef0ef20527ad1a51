"""The rules of a ticket as pure functions: its number, its life cycle, who acted, and how a stored ticket reads.

A ticket's history and notes are stored as maps keyed by an entry id (the command's identity), never as arrays:
nx-27017 turns subdocuments pushed into an existing array into JSON strings. They are sorted on read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts import ticketing as api
from contracts.registration import Location
from services.runtime.mongo import Document, parse_stamp
from services.runtime.tokens import Claims, Role

# Notes a ticket takes before dispatch: enough for any conversation, not enough to grow a document without bound, and
# with its status changes fewer than the command ids a ticket remembers (outbox.APPLIED_KEPT), so a re-run of a note's
# command always finds it applied.
MAX_NOTES = 40


def ticket_number(project: int, nth: int) -> str:
    """`<project>/<n>` (the OKI seed's `Projekt: 1484049/1`): the portal-wide project number and the device's n-th
    ticket."""
    return f"{project}/{nth}"


def guard_number(guard: Mapping[str, Any]) -> str:
    """The number of the ticket holding a device's guard, from the guard alone."""
    return ticket_number(int(guard["seq"]), int(guard["count"]))


def actor(claims: Claims) -> api.Actor:
    return "operator" if claims.role is Role.OPERATOR else "customer"


def is_open(status: object) -> bool:
    """Whether a ticket in `status` holds its device; one that is not (resolved, closed, cancelled) frees it."""
    return status in api.OPEN_STATUSES


def allowed(current: str, asked: str) -> bool:
    return asked in api.TRANSITIONS.get(current, ())


def history_of(ticket: Mapping[str, Any]) -> list[Document]:
    """The status changes, oldest first."""
    entries = list((ticket.get("history") or {}).values())
    return sorted(entries, key=lambda entry: (int(entry.get("sequence") or 0), str(entry.get("at"))))


def notes_of(ticket: Mapping[str, Any]) -> list[Document]:
    """The notes, oldest first."""
    entries = sorted((ticket.get("notes") or {}).items(), key=lambda item: (str(item[1].get("at")), item[0]))
    return [entry for _, entry in entries]


def status_change(entry: Mapping[str, Any]) -> api.StatusChange:
    return api.StatusChange(status=entry["status"], at=parse_stamp(entry["at"]), by=entry["by"],
                            technician=entry.get("technician"),
                            eta=parse_stamp(entry["eta"]) if entry.get("eta") else None, note=entry.get("note"))


def view(ticket: Mapping[str, Any]) -> api.Ticket:
    return api.Ticket(
        ticket_number=ticket["ticket_number"], status=ticket["status"],
        updatable=ticket["status"] == "to_be_scheduled", device=api.TicketDevice(**ticket["device"]),
        customer_number=ticket.get("customer_number"), contract_number=ticket.get("contract_number"),
        category=ticket["category"], description=ticket["description"],
        contact=api.TicketContact(**ticket["contact"]), service_address=Location(**ticket["service_address"]),
        address_permanent=bool(ticket.get("address_permanent")),  # stored booleans may read back as 1
        opened_at=parse_stamp(ticket["opened_at"]), technician=ticket.get("technician"),
        eta=parse_stamp(ticket["eta"]) if ticket.get("eta") else None,
        history=[status_change(entry) for entry in history_of(ticket)],
        notes=[api.Note(text=note["text"], at=parse_stamp(note["at"]), by=note["by"]) for note in notes_of(ticket)])


def event_fields(ticket: Mapping[str, Any]) -> dict[str, Any]:
    """What every event of a ticket carries: whom to mail, in which language, about which device and where."""
    return {"ticket_number": ticket["ticket_number"], "device": api.TicketDevice(**ticket["device"]),
            "customer_number": ticket.get("customer_number"), "contact": api.TicketContact(**ticket["contact"]),
            "language": ticket.get("language") or "en",
            "service_address": Location(**ticket["service_address"])}


def same_change(entry: Mapping[str, Any] | None, *, technician: str | None, eta: str | None,
                note: str | None) -> bool:
    """Whether a status change asked again (another message id, the same body) is the latest one made: the same
    note, and the technician and ETA it gave, where it gave them (those not given were kept from before)."""
    if entry is None:
        return False
    return entry.get("note") == note and (technician is None or entry.get("technician") == technician) and (
        eta is None or entry.get("eta") == eta)
