"""The customer's page for one device: its facts, its readings as a table and a chart, its open service requests and
orders, and what can be done with it: rename it, turn its reminders on or off, enter a meter reading (OKI: the new
values, a preview of the printed pages, then "Accept"), ask for an address change, remove it from the portal. And
the list of the customer's devices whose reading is due."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import ValidationError

from contracts import metering, ordering, registration, ticketing
from contracts.client import NotDelivered, PortalError
from contracts.errors import ErrorCode, message_for
from gateway.web.charts import fills_of, stacked
from gateway.web.i18n import N_
from gateway.web.view import (
    ADDRESS_FIELDS,
    ADDRESS_REQUIRED,
    FIELD_MESSAGES,
    Errors,
    Page,
    Refusal,
    View,
    items_of_devices,
    page_number,
    refusal_errors,
    validation_errors,
    whole_number,
)

router = APIRouter(include_in_schema=False)

COUNTER_FIELD = "counter-"  # the reading form's field of a counter: `counter-mono`, `counter-color`
# One plain address, as contracts.base.ContactEmail: what a reminder may be sent to.
EMAIL = re.compile(r"^[^@\s,;<>\"()\[\]]+@[^@\s,;<>\"()\[\]]+\.[^@\s,;<>\"()\[\]]+$")
# What the device page says after a form went through (post, redirect, get: `?done=<key>`).
DONE = {
    "renamed": N_("The device's name is saved."),
    "reminders_on": N_("Meter-reading reminders are on for this device."),
    "reminders_off": N_("Meter-reading reminders are off for this device."),
    "reading": N_("Thank you: the meter reading is submitted."),
    "address": N_("Your address change is sent. We check it and let you know by e-mail."),
}
ORDER_OPEN = ("placed", "shipped")
DUE_PER_PAGE = 50  # devices per page of /readings/due


def device_path(device_id: str, *, done: str | None = None) -> str:
    return f"/devices/{quote(device_id, safe='')}" + (f"?done={done}" if done else "")


# --- the device page -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CounterRow:
    """One counter of the reading form: its last value (the last reading, else the vendor's ERP) and the new one."""

    name: str
    field: str
    last_date: str | None
    last_value: int | None


def counter_rows(device: dict[str, Any], history: dict[str, Any], due: dict[str, Any] | None) -> list[CounterRow]:
    last: dict[str, tuple[str | None, int | None]] = {
        reading["name"]: (reading.get("date"), reading.get("value")) for reading in device.get("last_readings", [])}
    if history["readings"]:  # newest first; an estimate of the contract team counts as the last value too
        newest = history["readings"][0]
        for counter in newest["counters"]:
            last[counter["counter"]] = (newest["reading_date"], counter["value"])
    for counter in (due or {}).get("counters", []):  # metering's own view of the last values, where it is due
        last[counter["counter"]] = (counter.get("last_date"), counter.get("last_value"))
    names = list(device.get("counters") or []) or list(last)
    return [CounterRow(name, COUNTER_FIELD + name, *last.get(name, (None, None))) for name in names]


async def device_page_data(view: View, device_id: str) -> dict[str, Any]:
    """Everything the device page shows; another customer's device (or no device) is `not_found`: the 404 page."""
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    history, tickets, orders, due = await asyncio.gather(
        history_of(view, device),
        view.call(ticketing.ListTickets.routing_key, {"device_id": device["device_id"], "page_size": 50}),
        view.call(ordering.ListOrders.routing_key, {"device_id": device["device_id"], "page_size": 50}),
        items_of_devices(view, metering.ListDue.routing_key, [device["device_id"]]))
    for reading in history["readings"]:
        reading["by_counter"] = {counter["counter"]: counter for counter in reading["counters"]}
    due_here = next((item for item in due if item["device_id"] == device["device_id"]), None)
    counters = counter_rows(device, history, due_here)
    names = [row.name for row in counters]
    counted = {name for period in history["periods"] for name in period["printed_pages"]}
    shown = names + sorted(counted - set(names))  # a counter the model no longer names still had its pages
    return {
        "device": device, "history": history, "counters": counters, "due": due_here,
        "chart": stacked(history["periods"], names),
        "fills": fills_of(shown),
        "tickets": [ticket for ticket in tickets["items"] if ticket["status"] in ticketing.OPEN_STATUSES],
        "orders": [order for order in orders["items"] if order["status"] in ORDER_OPEN],
    }


async def history_of(view: View, device: dict[str, Any]) -> dict[str, Any]:
    try:
        return await view.call(metering.History.routing_key, {"device_id": device["device_id"]})
    except PortalError as error:
        if error.code != ErrorCode.NOT_FOUND:
            raise
        # registration knows the device and metering not yet (its event is on its way): no readings so far.
        return {"device_id": device["device_id"], "serial_number": device["serial_number"], "readings": [],
                "periods": []}


async def render_device(view: View, device_id: str, http_status: int = 200, *, errors: Errors | None = None,
                        values: dict[str, str] | None = None, notice: str | None = None) -> Response:
    data = await device_page_data(view, device_id)
    device = data["device"]
    shown = {"friendly_name": device.get("friendly_name") or "", "reminder_email": device.get("reminder_email") or "",
             "reminders": "on" if device.get("reminders") else "", "reading_date": view.today.isoformat(),
             **(values or {})}
    return view.render("device.html", http_status, errors=errors, values=shown, notice=notice, **data)


@router.get("/devices/{device_id}")
async def device_page(view: Page, device_id: str, done: str = "") -> Response:
    return await render_device(view, device_id, notice=view.gettext(DONE[done]) if done in DONE else None)


# --- rename and reminders ----------------------------------------------------------------------------------------

@router.post("/devices/{device_id}/name")
async def rename(view: Page, device_id: str) -> Response:
    form = await view.form()
    try:
        request = registration.RenameDevice(device_id=device_id, friendly_name=form.get("friendly_name") or None)
        # Every field sent: `call` leaves a None out, and the catalogue asks for friendly_name, None removing it.
        await view.call(registration.RenameDevice.routing_key, request.model_dump(mode="json"))
    except ValidationError as error:
        return await render_device(view, device_id, 400, errors=validation_errors(view, error), values=form)
    except Refusal as error:
        return await refused(view, device_id, error, form)
    return view.redirect(device_path(device_id, done="renamed"))


@router.post("/devices/{device_id}/reminders")
async def reminders(view: Page, device_id: str) -> Response:
    form = await view.form()
    on = form.get("reminders") in ("on", "true", "1")
    email = form.get("reminder_email") or None
    values = {**form, "reminders": "on" if on else ""}
    if email is not None and not EMAIL.match(email):
        text = view.gettext("Please enter a valid e-mail address.")
        return await render_device(view, device_id, 400, errors=Errors(text, {"reminder_email": text}), values=values)
    try:
        request = registration.SetReminders(device_id=device_id, reminders=on, reminder_email=email)
        await view.call(registration.SetReminders.routing_key, request)
    except ValidationError as error:
        return await render_device(view, device_id, 400, errors=validation_errors(view, error), values=values)
    except Refusal as error:
        return await refused(view, device_id, error, values)
    return view.redirect(device_path(device_id, done="reminders_on" if on else "reminders_off"))


async def refused(view: View, device_id: str, error: PortalError | NotDelivered | TimeoutError,
                  values: dict[str, str]) -> Response:
    """A refusal of a device's form: a device the caller may not see is the 404 page, else the form with why."""
    if isinstance(error, PortalError) and error.code == ErrorCode.NOT_FOUND:
        return view.render("not_found.html", 404)
    return await render_device(view, device_id, 400, errors=refusal_errors(view, error), values=values)


# --- the meter reading: new values, preview, accept (OKI's "Zählerablesung") -------------------------------------

@dataclass
class ReadingForm:
    values: list[metering.CounterValue]
    reading_date: date | None
    errors: Errors


def reading_form(view: View, form: dict[str, str], counters: list[str]) -> ReadingForm:
    """The posted counters (whole numbers from 0) and date, each mistake beside its own field."""
    fields: dict[str, str] = {}
    values = []
    for name in counters:
        value = whole_number(form.get(COUNTER_FIELD + name, ""), metering.MAX_COUNTER)
        if isinstance(value, str):
            fields[COUNTER_FIELD + name] = view.gettext(FIELD_MESSAGES[value])
        else:
            values.append(metering.CounterValue(counter=name, value=value))
    reading_date = None
    if form.get("reading_date"):
        try:
            reading_date = date.fromisoformat(form["reading_date"])
        except ValueError:
            fields["reading_date"] = view.gettext("Please enter a date.")
    summary = message_for(ErrorCode.VALIDATION_FAILED, view.language) if fields else None
    return ReadingForm(values, reading_date, Errors(summary, fields))


def reading_errors(view: View, error: PortalError | NotDelivered | TimeoutError) -> Errors:
    """A refused reading: the service's message beside each counter it names (`readings.<counter>`)."""
    errors = refusal_errors(view, error)
    if isinstance(error, PortalError):
        counters = {COUNTER_FIELD + name.removeprefix("readings."): errors.summary or ""
                    for name in (error.fields or {}) if name.startswith("readings.")}
        if counters:
            return Errors(errors.summary, counters)
    return errors


async def submit_once(view: View, request: metering.SubmitReading, submission: str) -> dict[str, Any]:
    """`metering.submit_reading` under the preview's own message id: a second click on "Accept" (or a reload of
    the post) is answered with the first reply and stores nothing more."""
    return await view.call(request.routing_key, request, message_id=submission)


def submission_id(given: str | None) -> str:
    try:
        return str(uuid.UUID(given or ""))
    except ValueError:
        return str(uuid.uuid4())


@router.post("/devices/{device_id}/reading")
async def reading(view: Page, device_id: str) -> Response:
    """One form, three buttons: "Preview" (the device page's form), and on the preview "Change" or "Accept"."""
    form = await view.form()
    action = form.get("action", "preview")
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    counters = counter_rows(device, {"readings": []}, None)
    names = [row.name for row in counters] or [name.removeprefix(COUNTER_FIELD) for name in form
                                               if name.startswith(COUNTER_FIELD)]
    if action == "change":
        return await render_device(view, device_id, values=form)
    read = reading_form(view, form, names)
    if read.errors:
        return await render_device(view, device_id, 400, errors=read.errors, values=form)
    request = metering.SubmitReading(device_id=device["device_id"], readings=read.values,
                                     reading_date=read.reading_date)
    try:
        if action == "accept":
            await submit_once(view, request, submission_id(form.get("submission")))
            return view.redirect(device_path(device_id, done="reading"))  # the page's top: the thanks, then the chart
        preview = await view.call(metering.PreviewReading.routing_key,
                                  metering.PreviewReading(**request.model_dump()))
    except Refusal as error:
        if isinstance(error, PortalError) and error.code == ErrorCode.NOT_FOUND:
            return view.render("not_found.html", 404)
        return await render_device(view, device_id, 400, errors=reading_errors(view, error), values=form)
    return view.render("device_reading.html", device=device, preview=preview, submission=str(uuid.uuid4()),
                       fields={value.counter: COUNTER_FIELD + value.counter for value in read.values},
                       given_date=form.get("reading_date", ""))


# --- address change and removal ----------------------------------------------------------------------------------

@router.get("/devices/{device_id}/address")
async def address_page(view: Page, device_id: str) -> Response:
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    values = {name: device["location"].get(name) or "" for name in ADDRESS_FIELDS}
    return view.render("device_address.html", device=device, values=values)


@router.post("/devices/{device_id}/address")
async def request_address_change(view: Page, device_id: str) -> Response:
    form = await view.form()
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    missing = {name: view.gettext("This field is required.") for name in (*ADDRESS_REQUIRED, "reason")
               if not form.get(name)}
    if missing:
        return view.render("device_address.html", 400, device=device, values=form, errors=Errors(
            message_for(ErrorCode.VALIDATION_FAILED, view.language), missing))
    try:
        address = registration.Location(**{name: form.get(name) or None for name in ADDRESS_FIELDS})
        request = registration.RequestAddressChange(device_id=device["device_id"], address=address,
                                                    reason=form.get("reason", ""))
        await view.call(registration.RequestAddressChange.routing_key, request)
    except ValidationError as error:
        return view.render("device_address.html", 400, device=device, values=form,
                           errors=validation_errors(view, error))
    except Refusal as error:
        return view.render("device_address.html", 400, device=device, values=form,
                           errors=refusal_errors(view, error))
    return view.redirect(device_path(device_id, done="address"))


@router.get("/devices/{device_id}/remove")
async def remove_page(view: Page, device_id: str) -> Response:
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    return view.render("device_remove.html", device=device)


@router.post("/devices/{device_id}/remove")
async def remove(view: Page, device_id: str) -> Response:
    await view.form()
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    try:
        await view.call(registration.DeregisterDevices.routing_key, {"device_ids": [device["device_id"]]})
    except Refusal as error:
        return view.render("device_remove.html", 400, device=device, errors=refusal_errors(view, error))
    return view.render("device_removed.html", device=device)


# --- the readings due ----------------------------------------------------------------------------------------

@router.get("/readings/due")
async def readings_due(view: Page, page: str = "1") -> Response:
    asked = {"page": page_number(page), "page_size": DUE_PER_PAGE}
    due = await view.call(metering.ListDue.routing_key, asked)
    if not due["items"] and due["total"]:  # a page past the last (an old link, readings sent since): the last
        last = -(-int(due["total"]) // DUE_PER_PAGE)
        due = await view.call(metering.ListDue.routing_key, {**asked, "page": last})
    return view.render("device_readings_due.html", due=due)
