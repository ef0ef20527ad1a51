"""The pages of a device's paperwork without the dashboard: the reminder mail's personal readings link (no sign-in:
the reminder's devices, each counter with its last value, a field per counter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from contracts import metering
from contracts.client import NotDelivered, PortalError
from contracts.errors import ErrorCode, message_for
from gateway.web.view import FIELD_MESSAGES, Errors, View, refusal_errors, view_of

router = APIRouter(include_in_schema=False)
Page = Annotated[View, Depends(view_of)]
Refusal = (PortalError, NotDelivered, TimeoutError)
MAX_COUNTER = metering.MAX_COUNTER


@dataclass
class Entries:
    """A posted readings form: per listed device the values typed in, and what the page says about them."""

    values: dict[str, str] = field(default_factory=dict)  # field name -> text typed
    errors: Errors = field(default_factory=Errors)
    accepted: set[str] = field(default_factory=set)  # device ids whose reading was stored
    refused: dict[str, str] = field(default_factory=dict)  # device id -> the service's message, beside the device


def field_name(device_id: str, counter: str) -> str:
    return f"{device_id}:{counter}"


def field_id(device_index: int, counter_index: int) -> str:
    """The HTML id of a counter's field: `d<device>c<counter>`, 1-based in the listing's order (ids are opaque)."""
    return f"d{device_index}c{counter_index}"


@router.get("/readings")
async def readings_page(view: Page, token: str = "", done: str = "") -> Response:
    if not token:  # the page of a signed-in customer's due readings has the same name without a link
        return view.redirect("/readings/due" if view.session else "/sign-in?next=/readings/due")
    linked = await link_devices(view, token)
    if linked is None:
        return view.render("link_invalid.html", 404)
    return readings_form(view, 200, token, linked, Entries(accepted=set(done.split(",")) if done else set()))


@router.post("/readings")
async def submit_readings(view: Page) -> Response:
    form = await view.form()
    token = form.get("token", "")
    linked = await link_devices(view, token) if token else None
    if linked is None:
        return view.render("link_invalid.html", 404)
    entries = Entries(values={name: value for name, value in form.items() if ":" in name})
    readings: list[dict[str, Any]] = []
    for index, device in enumerate(linked["devices"], start=1):
        for position, counter in enumerate(device["counters"], start=1):
            text = entries.values.get(field_name(device["device_id"], counter["counter"]), "").replace(" ", "")
            if not text:
                continue  # a device left empty is not read now; one partly filled is the service's to refuse
            value = whole_number(text)
            if isinstance(value, str):
                entries.errors.fields[field_id(index, position)] = view.gettext(FIELD_MESSAGES[value])
                continue
            readings.append({"device_id": device["device_id"], "counter": counter["counter"], "value": value})
    if entries.errors:
        entries.errors.summary = message_for(ErrorCode.VALIDATION_FAILED, view.language)
        return readings_form(view, 400, token, linked, entries)
    if not readings:
        entries.errors.summary = view.gettext("Please enter the counters of at least one device.")
        first = field_id(1, 1) if linked["devices"] and linked["devices"][0]["counters"] else "readings"
        entries.errors.fields[first] = entries.errors.summary
        return readings_form(view, 400, token, linked, entries)
    try:
        outcome = await view.call(metering.SubmitByLink.routing_key, {"token": token, "readings": readings},
                                  anonymous=True)
    except Refusal as error:
        if isinstance(error, PortalError) and error.code == "token_invalid":  # the window closed meanwhile
            return view.render("link_invalid.html", 404)
        entries.errors = refusal_errors(view, error)
        return readings_form(view, 400, token, linked, entries)
    for row in outcome["rejected"]:  # a device is judged whole: each of its rows carries its refusal
        entries.refused.setdefault(readings[row["row"] - 1]["device_id"], row["message"])
    sent = {reading["device_id"] for reading in readings}
    if not entries.refused:  # all stored: the page again (a reload sends nothing twice), each device read marked
        return view.redirect("/readings?" + urlencode({"token": token, "done": ",".join(sorted(sent))}))
    linked = await link_devices(view, token) or linked  # the last values now include what was just stored
    entries.accepted = sent - set(entries.refused)
    for index, device in enumerate(linked["devices"], start=1):
        if device["device_id"] in entries.accepted:
            for counter in device["counters"]:
                entries.values.pop(field_name(device["device_id"], counter["counter"]), None)
        if device["device_id"] in entries.refused and device["counters"]:  # the summary links its first field
            entries.errors.fields[field_id(index, 1)] = entries.refused[device["device_id"]]
    entries.errors.summary = view.gettext("Some readings were not accepted. Please check the devices marked below.")
    return readings_form(view, 400, token, linked, entries)


def readings_form(view: View, status: int, token: str, linked: dict[str, Any], entries: Entries) -> Response:
    return view.render("link_readings.html", status, token=token, linked=linked, entries=entries,
                       errors=entries.errors, field_name=field_name, field_id=field_id)


async def link_devices(view: View, token: str) -> dict[str, Any] | None:
    """The link's devices, or None for a link unknown or whose window closed."""
    try:
        return await view.call(metering.LinkDevices.routing_key, {"token": token[:200]}, anonymous=True)
    except PortalError as error:
        if error.code in ("token_invalid", ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_FAILED):
            return None
        raise


def whole_number(text: str) -> int | str:
    """A counter as typed, or the kind of problem with it (a key of FIELD_MESSAGES)."""
    if not text.isdigit() or not text.isascii():
        return "int_parsing"
    value = int(text)
    return "less_than_equal" if value > MAX_COUNTER else value
