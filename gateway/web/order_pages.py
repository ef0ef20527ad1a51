"""The customer's orders of consumables and service requests.

Orders follow OKI's order pages: the devices at one address (one order, one delivery address), the consumables of
their models by name, the contact the confirmation goes to (picked, or added for next time), "z. Hd." and "Zusätzl.
Info" that may be kept for the devices, and the order number at the end. Service requests follow OneRicoh's FAQ: one
open request per device, shown with its number when a second is tried; notes and cancellation until a technician is
dispatched; the request's status track.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast, get_args
from urllib.parse import quote

import annotated_types
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import ValidationError

from contracts import accounts, ordering, registration, ticketing
from contracts.client import NotDelivered, PortalError
from contracts.errors import ErrorCode, message_for
from gateway.web.view import (
    ADDRESS_FIELDS,
    ADDRESS_REQUIRED,
    FIELD_MESSAGES,
    INVALID,
    Errors,
    Page,
    Refusal,
    View,
    page_number,
    refusal_errors,
    ticked,
    whole_number,
)

router = APIRouter(include_in_schema=False)
NEW_CONTACT = "new"
PAGE_SIZE = 50
MAX_DEVICES = 20  # of one order: OKI's order lines per address, far beyond what one site holds
Devices = Annotated[list[str] | None, Query()]
# The most of one article a line may ask for, as the contract bounds it.
MOST_OF_A_LINE = next(cast(int, bound.le) for bound in ordering.OrderLine.model_fields["quantity"].metadata
                      if isinstance(bound, annotated_types.Le))



def problem_text(view: View, problem: Mapping[str, Any]) -> str:
    if problem["type"] == "value_error" and problem["loc"] and problem["loc"][-1] == "email":
        return view.gettext("Please enter a valid e-mail address.")
    if problem["type"] == "string_too_short" and problem.get("input") == "":
        return view.gettext("This field is required.")
    return view.gettext(FIELD_MESSAGES.get(problem["type"], INVALID))


def field_errors(view: View, error: ValidationError, field_of: Any) -> Errors:
    """Each pydantic problem beside the form field `field_of(location)` names."""
    fields: dict[str, str] = {}
    for problem in error.errors():
        fields.setdefault(field_of(tuple(str(part) for part in problem["loc"])), problem_text(view, problem))
    return Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language), fields)


def address_of(location: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Street, postcode and city, compared as a person would read them (case, spacing and punctuation aside)."""
    location = location or {}
    return tuple(" ".join(re.sub(r"[^\w]+", " ", str(location.get(key) or "").casefold()).split())
                 for key in ("street", "postal_code", "city"))


def same_person(contact: Mapping[str, Any], entered: accounts.AddContact) -> bool:
    return bool(contact["email"].casefold() == entered.email.casefold()
                and contact["name"].casefold() == entered.name.casefold())


async def contacts_of(view: View) -> list[dict[str, Any]]:
    return list((await view.call(accounts.ListContacts.routing_key))["items"])


@dataclass
class Chosen:
    """The person the mails about an order or request go to: one of the customer's contacts, or a new one."""

    name: str
    email: str
    phone: str | None


async def chosen_contact(view: View, form: Mapping[str, str], contacts: list[dict[str, Any]],
                         values: dict[str, Any]) -> Chosen | Errors:
    """The contact picked, or the one entered, added to the customer's contacts for next time (OKI's "+")."""
    picked = form.get("contact", "")
    if picked != NEW_CONTACT:
        found = next((contact for contact in contacts if contact["contact_id"] == picked), None)
        if found is None:
            return Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language),
                          {"contact": view.gettext("Please choose one of the options.")})
        return Chosen(found["name"], found["email"], found.get("phone"))
    names = {"name": "new_name", "email": "new_email", "phone": "new_phone"}
    try:
        request = accounts.AddContact(name=form.get("new_name", ""), email=form.get("new_email", ""),
                                      phone=form.get("new_phone") or None)
        known = [contact for contact in contacts if same_person(contact, request)]
        if known:  # entered again (a form kept open): the contact there is, not a second copy
            values["contact"] = known[0]["contact_id"]
            for name in names.values():
                values.pop(name, None)
            return Chosen(request.name, request.email, request.phone or known[0].get("phone"))
        added = await view.call(accounts.AddContact.routing_key, request)
    except ValidationError as error:
        return field_errors(view, error, lambda location: names.get(location[0], "new_name") if location else "contact")
    except Refusal as error:
        refused = refusal_errors(view, error)
        return Errors(refused.summary, {names.get(name, "new_name"): text for name, text in refused.fields.items()})
    contacts[:] = added["items"]
    mine = [contact for contact in contacts if same_person(contact, request)]
    if mine:  # picked from now on: a form shown again keeps it and adds no second copy
        values["contact"] = mine[-1]["contact_id"]
        for name in names.values():
            values.pop(name, None)
    return Chosen(request.name, request.email, request.phone)


# --- ordering consumables -----------------------------------------------------------------------------------------

@router.get("/orders")
async def orders_page(view: Page, page: str = "1") -> Response:
    at = page_number(page)
    orders, devices = await asyncio.gather(
        view.call(ordering.ListOrders.routing_key, {"page": at, "page_size": PAGE_SIZE}),
        view.call(registration.ListDevices.routing_key, {"page_size": 200}))
    return view.render("orders.html", orders=orders["items"], result=orders,
                       devices=devices["items"])


def quantity_field(device_id: str, article_number: str) -> str:
    return f"qty-{device_id}-{article_number}"


@dataclass
class OrderForm:
    """What the order form shows: the devices at the address, the picked ones with their consumables, the contacts."""

    devices: list[dict[str, Any]]
    picked: list[dict[str, Any]]  # list_orderable of each picked device, in the order picked
    contacts: list[dict[str, Any]]
    elsewhere: set[str]  # devices picked at another address than the first

    def context(self) -> dict[str, Any]:
        return {"devices": self.devices, "picked": self.picked, "contacts": self.contacts,
                "picked_ids": [device["device_id"] for device in self.picked],
                "address": self.picked[0]["location"], "quantity_field": quantity_field,
                "new_contact": NEW_CONTACT, "duplicate": False, "elsewhere": self.elsewhere}


async def order_form(view: View, picked_ids: Sequence[str]) -> OrderForm:
    """The devices at the first picked device's address (the ones an order may hold) and the picked ones' consumables;
    a device of another customer is not found (the 404 page)."""
    first = await view.call(registration.GetDevice.routing_key, {"device_id": picked_ids[0]})
    place = address_of(first.get("location"))
    postal_code = (first.get("location") or {}).get("postal_code")
    nearby, picked, contacts = await asyncio.gather(
        view.call(registration.ListDevices.routing_key, {"postal_code": postal_code, "page_size": 200})
        if postal_code else asyncio.sleep(0, {"items": [first]}),
        asyncio.gather(*(view.call(ordering.ListOrderable.routing_key, {"device_id": device_id})
                         for device_id in picked_ids)),
        contacts_of(view))
    devices = [device for device in nearby["items"] if address_of(device.get("location")) == place]
    if first["device_id"] not in [device["device_id"] for device in devices]:
        devices.insert(0, first)
    # A device picked at another address (a link, an older page) stays shown: the order's refusal names it.
    known = {device["device_id"] for device in devices}
    away = [{**orderable, "friendly_name": None} for orderable in picked if orderable["device_id"] not in known]
    return OrderForm(devices + away, list(picked), contacts, {device["device_id"] for device in away})


def order_defaults(form: OrderForm) -> dict[str, Any]:
    defaults = form.picked[0].get("delivery_defaults") or {}
    return {"contact": form.contacts[0]["contact_id"] if form.contacts else NEW_CONTACT,
            "attention": defaults.get("attention") or "", "additional_info": defaults.get("additional_info") or ""}


def picked_of(devices: Sequence[str] | None) -> list[str]:
    return list(dict.fromkeys(device for device in devices or [] if device))[:MAX_DEVICES]


@router.get("/orders/new")
async def new_order_page(view: Page, device: Devices = None) -> Response:
    picked = picked_of(device)
    if not picked:
        return view.redirect("/orders")
    form = await order_form(view, picked)
    return view.render("order_new.html", values=order_defaults(form), **form.context())


@router.post("/orders/new")
async def place_order(view: Page) -> Response:
    form = await view.form()
    picked = picked_of([value for value in (await view.request.form()).getlist("device") if isinstance(value, str)])
    if not picked:
        return view.redirect("/orders")
    shown = await order_form(view, picked)
    values: dict[str, Any] = dict(form)

    def again(errors: Errors, duplicate: bool = False) -> Response:
        return view.render("order_new.html", 400, values=values, errors=errors,
                           **{**shown.context(), "duplicate": duplicate})

    lines: list[dict[str, Any]] = []
    fields: list[str] = []  # the form field of each line, for the messages about it
    wrong: dict[str, str] = {}
    for orderable in shown.picked:
        for item in orderable["items"]:
            name = quantity_field(orderable["device_id"], item["article_number"])
            given = form.get(name, "")
            if given in ("", "0"):
                continue
            quantity = whole_number(given, MOST_OF_A_LINE)  # ASCII digits only: int() takes "٣" too
            if isinstance(quantity, str):
                wrong[name] = view.gettext(FIELD_MESSAGES[quantity])
                continue
            lines.append({"device_id": orderable["device_id"], "article_number": item["article_number"],
                          "quantity": quantity})
            fields.append(name)
    if wrong:
        return again(Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language), wrong))
    if not lines:
        first = f"device-{shown.picked[0]['device_id']}"
        text = view.gettext("Please enter how many of at least one consumable you need.")
        return again(Errors(text, {first: text}))

    contact = await chosen_contact(view, form, shown.contacts, values)
    if isinstance(contact, Errors):
        return again(contact)

    def field_of(location: tuple[str, ...]) -> str:
        if location[:1] == ("lines",) and len(location) > 1 and location[1].isdigit():
            index = int(location[1])
            if location[2:3] == ("device_id",):
                return f"device-{lines[index]['device_id']}"
            return fields[index]
        if location[:1] == ("delivery",) and len(location) > 1:
            return location[1] if location[1] in ("attention", "additional_info") else "attention"
        return {"reference": "reference"}.get(location[0] if location else "", "contact")

    try:
        request = ordering.PlaceOrder.model_validate({
            "lines": lines, "contact": {"name": contact.name, "email": contact.email},
            "delivery": {"attention": form.get("attention") or None,
                         "additional_info": form.get("additional_info") or None,
                         "save_as_default": ticked(form, "save_as_default")},
            "reference": form.get("reference") or None, "confirm_duplicate": ticked(form, "confirm_duplicate")})
    except ValidationError as error:
        return again(field_errors(view, error, field_of))
    try:
        placed = await view.call(ordering.PlaceOrder.routing_key, request)
    except PortalError as error:
        message = error.message or message_for(error.code, view.language)
        beside: dict[str, str] = {}
        for path, value in (error.fields or {}).items():
            location = tuple(path.split("."))
            if location == ("order_number",):
                continue
            if error.code == "duplicate_order" and location[:1] == ("lines",):
                beside[field_of(location)] = view.gettext(
                    "Ordered already with order %(number)s, which is not delivered yet.", number=value)
            else:
                beside.setdefault(field_of(location), message)
        return again(Errors(message, beside), duplicate=error.code == "duplicate_order")
    except (NotDelivered, TimeoutError) as error:
        return again(refusal_errors(view, error))
    return view.redirect(f"/orders/{quote(placed['order_number'], safe='')}?placed=1")


@router.get("/orders/{order_number}")
async def order_page(view: Page, order_number: str, placed: str = "") -> Response:
    order = await view.call(ordering.GetOrder.routing_key, {"order_number": order_number})
    return view.render("order.html", order=order, placed=bool(placed))


# --- service requests -----------------------------------------------------------------------------------------

@router.get("/tickets")
async def tickets_page(view: Page, page: str = "1") -> Response:
    at = page_number(page)
    tickets, devices = await asyncio.gather(
        view.call(ticketing.ListTickets.routing_key, {"page": at, "page_size": PAGE_SIZE}),
        view.call(registration.ListDevices.routing_key, {"page_size": 200}))
    return view.render("tickets.html", tickets=tickets["items"], result=tickets,
                       devices=devices["items"])


async def open_ticket_of(view: View, device_id: str) -> dict[str, Any] | None:
    """The device's open request, as `open_ticket_exists` names it: its number, and whether notes are possible."""
    found = await view.call(ticketing.ListTickets.routing_key, {"device_id": device_id, "page_size": 20})
    for ticket in found["items"]:
        if ticket["status"] in ticketing.OPEN_STATUSES:
            return {"ticket_number": ticket["ticket_number"], "updatable": bool(ticket["updatable"])}
    return None


async def ticket_form(view: View, device_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    device, contacts = await asyncio.gather(
        view.call(registration.GetDevice.routing_key, {"device_id": device_id}), contacts_of(view))
    return device, contacts


@router.get("/tickets/new")
async def new_ticket_page(view: Page, device: str = "") -> Response:
    if not device:
        return view.redirect("/tickets")
    (found, contacts), existing = await asyncio.gather(ticket_form(view, device), open_ticket_of(view, device))
    values = {"contact": contacts[0]["contact_id"] if contacts else NEW_CONTACT, "category": "malfunction"}
    return view.render("ticket_new.html", device=found, contacts=contacts, existing=existing, values=values,
                       new_contact=NEW_CONTACT, categories=CATEGORIES)


CATEGORIES = get_args(ticketing.TicketCategory)


@router.post("/tickets/new")
async def open_ticket(view: Page) -> Response:
    form = await view.form()
    device_id = form.get("device", "")
    if not device_id:
        return view.redirect("/tickets")
    device, contacts = await ticket_form(view, device_id)
    values: dict[str, Any] = dict(form)

    def again(errors: Errors, existing: dict[str, Any] | None = None) -> Response:
        return view.render("ticket_new.html", 400, device=device, contacts=contacts, existing=existing, values=values,
                           errors=errors, new_contact=NEW_CONTACT, categories=CATEGORIES)

    contact = await chosen_contact(view, form, contacts, values)
    if isinstance(contact, Errors):
        return again(contact)
    new = form.get("contact") == NEW_CONTACT

    def field_of(location: tuple[str, ...]) -> str:
        if location[:1] == ("contact",):
            return "new_phone" if new and location[1:2] == ("phone",) else ("new_name" if new else "contact")
        if location[:1] == ("service_address",):
            named = [part for part in location if part in ADDRESS_FIELDS]
            return f"other_{named[0]}" if named else "other_street"
        return location[0] if location and location[0] in ("description", "category") else "description"

    address = {name: form.get(f"other_{name}") or None for name in ADDRESS_FIELDS}
    # Checked here, each beside its field: ServiceAddress refuses the address as a whole, naming no field.
    unaddressed = {f"other_{name}": view.gettext(FIELD_MESSAGES["missing"]) for name in ADDRESS_REQUIRED
                   if any(address.values()) and not address[name]}
    try:
        request = ticketing.OpenTicket(
            device_id=device_id, description=form.get("description", ""),
            category=form.get("category") or "malfunction",
            contact=ticketing.TicketContact(name=contact.name, email=contact.email, phone=contact.phone),
            service_address=ticketing.ServiceAddress(address=registration.Location(**address),
                                                     permanent=ticked(form, "other_permanent"))
            if any(address.values()) and not unaddressed else None)
    except ValidationError as error:
        errors = field_errors(view, error, field_of)
        return again(Errors(errors.summary, {**unaddressed, **errors.fields}))
    if unaddressed:
        return again(Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language), unaddressed))
    try:
        opened = await view.call(ticketing.OpenTicket.routing_key, request)
    except PortalError as error:
        message = error.message or message_for(error.code, view.language)
        if error.code == "open_ticket_exists":
            held = error.fields or {}
            existing = {"ticket_number": held.get("ticket_number"), "updatable": held.get("updatable") == "true"}
            return again(Errors(message), existing)
        beside = {field_of(tuple(path.split("."))): message for path in (error.fields or {})}
        return again(Errors(message, beside))
    except (NotDelivered, TimeoutError) as error:
        return again(refusal_errors(view, error))
    return view.redirect(f"/tickets/{opened['ticket_number']}?opened=1")


def ticket_number_of(project: str, sequence: str) -> str:
    return f"{project}/{sequence}"


@router.get("/tickets/{project}/{sequence}")
async def ticket_page(view: Page, project: str, sequence: str, opened: str = "", noted: str = "",
                      cancelled: str = "") -> Response:
    ticket = await view.call(ticketing.GetTicket.routing_key, {"ticket_number": ticket_number_of(project, sequence)})
    return view.render("ticket.html", ticket=ticket, opened=bool(opened), noted=bool(noted),
                       cancelled=bool(cancelled))


async def ticket_change(view: View, project: str, sequence: str, command: str, field: str, done: str) -> Response:
    """A note or the cancellation: sent, then the ticket page again; refused, the message beside the text."""
    form = await view.form()
    number = ticket_number_of(project, sequence)
    text = form.get(field, "")
    try:
        request = (ticketing.AddNote(ticket_number=number, text=text) if command == ticketing.AddNote.routing_key
                   else ticketing.CancelTicket(ticket_number=number, reason=text))
        await view.call(command, request)
    except ValidationError as error:
        errors = field_errors(view, error, lambda location: field)
    except PortalError as error:
        if error.code == ErrorCode.NOT_FOUND:
            raise
        message = error.message or message_for(error.code, view.language)
        errors = Errors(message, {field: message})
    except (NotDelivered, TimeoutError) as error:
        errors = refusal_errors(view, error)
    else:
        return view.redirect(f"/tickets/{number}?{done}=1")
    ticket = await view.call(ticketing.GetTicket.routing_key, {"ticket_number": number})
    return view.render("ticket.html", 400, ticket=ticket, values=form, errors=errors, opened=False, noted=False,
                       cancelled=False)


@router.post("/tickets/{project}/{sequence}/notes")
async def add_note(view: Page, project: str, sequence: str) -> Response:
    return await ticket_change(view, project, sequence, ticketing.AddNote.routing_key, "note", "noted")


@router.post("/tickets/{project}/{sequence}/cancel")
async def cancel_ticket(view: Page, project: str, sequence: str) -> Response:
    return await ticket_change(view, project, sequence, ticketing.CancelTicket.routing_key, "reason", "cancelled")
