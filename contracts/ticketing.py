"""ticketing: service requests for one device each, and a technician's life cycle (CATALOG §6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from contracts.base import Command, Contact, Event, Message, PageRequest, SingleLine
from contracts.registration import DeviceId as ListedDeviceId
from contracts.registration import Location

TicketStatus = Literal["to_be_scheduled", "dispatched", "en_route", "on_site", "resolved", "closed", "cancelled"]
TicketCategory = Literal["malfunction", "defective_consumable", "installation", "other"]
Actor = Literal["customer", "operator"]

# A ticket holds its device until it is resolved or cancelled: a device has at most one ticket in these.
OPEN_STATUSES: tuple[TicketStatus, ...] = ("to_be_scheduled", "dispatched", "en_route", "on_site")
# The operator's life cycle (CATALOG §6): each status and the ones it may go to; nothing else is a transition.
TRANSITIONS: dict[str, tuple[TicketStatus, ...]] = {
    "to_be_scheduled": ("dispatched", "cancelled"),
    "dispatched": ("en_route", "cancelled"),
    "en_route": ("on_site",),
    "on_site": ("resolved",),
    "resolved": ("closed",),
    "closed": (),
    "cancelled": (),
}

TicketNumber = Field(min_length=3, max_length=32, pattern=r"^\d+/\d+$",
                     description="`<project>/<n>`: the portal-wide project number and the device's n-th ticket.",
                     examples=["1484049/1"])
DeviceId = Field(min_length=1, max_length=64)
EARLIEST_ETA = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_ETA = datetime(2100, 1, 1, tzinfo=UTC)


class TicketContact(Contact):
    """Whom the technician calls and the mails go to (OKI: "Kontakt" with name, phone and e-mail)."""

    phone: SingleLine | None = Field(default=None, min_length=3, max_length=40, pattern=r"^[0-9+()/.\- ]+$",
                                     examples=["0211/5266-252"])


class ServiceAddress(Message):
    """Where the technician should go, if not to the device's location.

    `permanent: false`: for this ticket only. `permanent: true`: for this ticket, and registration gets an
    address-change request for the device, which an operator decides as any other (approved, it moves every device
    of the customer at that address). The address goes in `address`; its fields sent flat beside `permanent` are
    read the same way.
    """

    address: Location
    permanent: bool = False

    @model_validator(mode="before")
    @classmethod
    def flat_address(cls, value: Any) -> Any:
        if isinstance(value, dict) and "address" not in value:
            return {"address": {key: item for key, item in value.items() if key != "permanent"},
                    "permanent": value.get("permanent", False)}
        return value

    @model_validator(mode="after")
    def somewhere(self) -> ServiceAddress:
        missing = [name for name in ("street", "postal_code", "city")
                   if not (getattr(self.address, name) or "").strip()]
        if missing:
            raise ValueError(f"a technician needs the {', '.join(missing)} of the address")
        return self


class OpenTicket(Command):
    """A service request for one device the caller sees; at most one open ticket per device."""

    routing_key: ClassVar[str] = "ticketing.open_ticket"
    device_id: str = DeviceId
    contact: TicketContact
    description: str = Field(min_length=1, max_length=4000, description="What is wrong (free text).")
    category: TicketCategory = "malfunction"
    service_address: ServiceAddress | None = None


class OpenedReply(BaseModel):
    ticket_number: str
    status: Literal["to_be_scheduled"] = "to_be_scheduled"


class AddNote(Command):
    """More text for a ticket no technician is dispatched to yet; the vendor is notified."""

    routing_key: ClassVar[str] = "ticketing.add_note"
    ticket_number: str = TicketNumber
    text: str = Field(min_length=1, max_length=4000)


class CancelTicket(Command):
    """The customer withdraws a ticket no technician is dispatched to yet."""

    routing_key: ClassVar[str] = "ticketing.cancel_ticket"
    ticket_number: str = TicketNumber
    reason: str = Field(min_length=1, max_length=2000)


class CancelledReply(BaseModel):
    status: Literal["cancelled"] = "cancelled"


class GetTicket(Command):
    routing_key: ClassVar[str] = "ticketing.get_ticket"
    ticket_number: str = TicketNumber


class StatusChange(BaseModel):
    """One step of a ticket's life: the status it went to, when, by whom, and what came with it."""

    status: TicketStatus
    at: datetime
    by: Actor
    technician: str | None = None
    eta: datetime | None = None
    note: str | None = None


class Note(BaseModel):
    text: str
    at: datetime
    by: Actor


class TicketDevice(BaseModel):
    device_id: str
    serial_number: str
    model: str
    friendly_name: str | None = None


class Ticket(BaseModel):
    ticket_number: str
    status: TicketStatus
    updatable: bool = Field(description="Notes and cancellation are possible (no technician dispatched yet).")
    device: TicketDevice
    customer_number: str | None = None
    contract_number: str | None = None
    category: TicketCategory
    description: str
    contact: TicketContact
    service_address: Location = Field(description="Where the technician goes: the device's location when the "
                                      "ticket was opened, or the address given with it.")
    address_permanent: bool = Field(description="The address given was also asked for as the device's new "
                                    "address (registration's address-change request).")
    opened_at: datetime
    technician: str | None = None
    eta: datetime | None = None
    history: list[StatusChange] = Field(description="Every status, oldest first, starting with `to_be_scheduled`.")
    notes: list[Note] = Field(description="Notes added before dispatch, oldest first.")


class ListTickets(PageRequest, Command):
    """The caller's tickets, newest first."""

    routing_key: ClassVar[str] = "ticketing.list_tickets"
    device_id: str | None = Field(default=None, max_length=64)
    device_ids: list[ListedDeviceId] | None = Field(default=None, max_length=200,
                                                    description="Optional: only tickets of these devices (a page's).")
    status: TicketStatus | None = None
    ticket_number: str | None = Field(default=None, max_length=32, description="Quick search: part of the number.")


class OperatorListTickets(PageRequest, Command):
    """The back office's queue: tickets of a status, oldest first, each with its device and service address."""

    routing_key: ClassVar[str] = "ticketing.operator.list_tickets"
    status: TicketStatus | None = Field(default="to_be_scheduled", description="None: every status.")


class SetStatus(Command):
    """The operator moves a ticket along its life cycle (`TRANSITIONS`); anything else is `invalid_transition`."""

    routing_key: ClassVar[str] = "ticketing.operator.set_status"
    ticket_number: str = TicketNumber
    status: TicketStatus
    technician: SingleLine | None = Field(default=None, min_length=1, max_length=120, examples=["Kari Nordmann"])
    eta: AwareDatetime | None = Field(default=None, description="When the technician is expected, with its time "
                                      "zone (`2026-12-04T09:30:00+01:00`); the dispatch mail carries it as an .ics.")
    note: str | None = Field(default=None, min_length=1, max_length=4000)

    @field_validator("eta")
    @classmethod
    def plausible(cls, eta: datetime | None) -> datetime | None:
        # A calendar entry's time, stored in UTC: years outside this range are typing errors (and some overflow).
        if eta is not None and not EARLIEST_ETA <= eta <= LATEST_ETA:
            raise ValueError(f"must lie between {EARLIEST_ETA.year} and {LATEST_ETA.year}")
        return eta


class StatusReply(BaseModel):
    status: TicketStatus


# --- events -------------------------------------------------------------------------------------------

class TicketEvent(Event):
    """What every ticket event carries: whom to mail, in which language, about which device and where."""

    ticket_number: str
    device: TicketDevice
    customer_number: str | None = None
    contact: TicketContact = Field(description="Who gets the mails: the ticket's contact.")
    language: str = Field(default="en", description="The language of the user who opened the ticket.")
    service_address: Location


class TicketOpened(TicketEvent):
    routing_key: ClassVar[str] = "ticketing.ticket.opened"
    opened_by: str = Field(description="The user who opened it.")
    opened_at: datetime
    category: TicketCategory
    description: str
    address_permanent: bool = Field(default=False, description="True: registration files an address-change request "
                                    "for the device with `service_address`.")


class TicketUpdated(TicketEvent):
    """A note was added before dispatch; the vendor's service desk is told."""

    routing_key: ClassVar[str] = "ticketing.ticket.updated"
    note: Note


class TicketStatusChanged(TicketEvent):
    routing_key: ClassVar[str] = "ticketing.ticket.status_changed"
    status: TicketStatus
    previous_status: TicketStatus
    change: StatusChange
    reason: str | None = Field(default=None, description="A customer's reason for cancelling.")
    sequence: int = Field(default=0, description="How many status changes the ticket had before this one: the "
                          "SEQUENCE of its calendar entry.")
    eta_changed: bool = Field(default=False, description="This step set an ETA other than the one before (a first "
                              "one at dispatch, a new one later): the visit's calendar entry is to be updated.")
