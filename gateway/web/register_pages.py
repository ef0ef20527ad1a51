"""Devices coming into the portal and their readings from a mail: registering a device bought (warranty, proof of
purchase), claiming an installed-base device by serial and postcode (and asking for the others at its address), and
the reminder mail's personal readings link (no sign-in: the reminder's devices, each counter with its last value)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import ValidationError

from contracts import accounts, metering, registration
from contracts.base import MAX_PAGE_SIZE
from contracts.client import PortalError
from contracts.errors import ErrorCode, message_for
from gateway.web.view import (
    FIELD_MESSAGES,
    Errors,
    Page,
    Refusal,
    View,
    page_number,
    refusal_errors,
    ticked,
    validation_errors,
    whole_number,
)

router = APIRouter(include_in_schema=False)
MAX_COUNTER = metering.MAX_COUNTER
# The most pages of model names the register page asks for: 10,000 names, more than a vendor's catalogue holds; a
# larger one is offered its first 10,000 by name.
MAX_MODEL_PAGES = 50
MAX_PROOF_BYTES = 5 * 1024 * 1024  # registration's limit (CATALOG §3): a larger file is not even sent


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
            value = whole_number(text, MAX_COUNTER)
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
        # The same form sent twice (a double click, a reload of a page that refused a device) is one command.
        outcome = await view.call(metering.SubmitByLink.routing_key, {"token": token, "readings": readings},
                                  anonymous=True, message_id=view.repeated_id(token, json.dumps(readings)))
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


# --- registering a device ---------------------------------------------------------------------------------------

ADDRESS_FIELDS = ("name", "street", "postal_code", "city", "country")
# The form's names of the command's fields, where they differ (the warranty checkbox as FIELD_OF_CODE names it).
REGISTER_FIELDS = {"warranty_accepted": "accept_warranty", "location": "location_choice"}



async def serial_hint(view: View, model: str, names: list[str]) -> dict[str, Any] | None:
    """Where the serial is on the model (`registration.serial_hint`); None when no model was named. A name that is
    no model's brings those of the catalogue's `names` that contain it, in any case (`matches`), to pick from."""
    if not model:
        return None
    try:
        return await view.call(registration.SerialHint.routing_key, {"model": model[:80]}, anonymous=True)
    except PortalError as error:
        if error.code not in (ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_FAILED):
            raise
    typed = model[:80].casefold()
    return {"model": model, "hint": None, "matches": [name for name in names if typed in name.casefold()]}


async def model_names(view: View) -> list[str]:
    """The catalogue's model names, for the form's list of suggestions: every page of them, up to
    MAX_MODEL_PAGES (the first page says how many there are; the others are asked for together)."""
    def asked(page: int) -> registration.ListModels:
        return registration.ListModels(page=page, page_size=MAX_PAGE_SIZE)

    first = await view.call(registration.ListModels.routing_key, asked(1))
    pages = min(-(-int(first["total"]) // MAX_PAGE_SIZE), MAX_MODEL_PAGES)
    rest = await asyncio.gather(*(view.call(registration.ListModels.routing_key, asked(page))
                                  for page in range(2, pages + 1)))
    return [item["model"] for found in (first, *rest) for item in found["items"]]


async def terms_first(view: View, here: str) -> Response | None:
    """The sign-in for someone signed out; the vendor's current terms for someone who has not accepted them yet
    (registration refuses devices before them: OKI step 4)."""
    if not view.session:
        return view.redirect(f"/sign-in?next={here}")
    profile = await view.call(accounts.GetProfile.routing_key)
    return view.redirect(f"/terms?next={here}") if profile.get("terms_open") else None


@router.get("/devices/new")
async def register_page(view: Page, model: str = "") -> Response:
    if elsewhere := await terms_first(view, "/devices/new"):
        return elsewhere
    model = model.strip()
    names = await model_names(view)
    return view.render("register_device.html", model=model, hint=await serial_hint(view, model, names),
                       models=names, values={"location_choice": "contact"})


@router.post("/devices/new")
async def register(view: Page) -> Response:
    form = await view.form()
    if not view.session:
        return view.redirect("/sign-in?next=/devices/new")
    model = form.get("model", "")

    async def again(errors: Errors) -> Response:
        # Only a refused form is shown again: a device registered asks for neither the names nor the hint.
        names = await model_names(view)
        return view.render("register_device.html", 400, model=model, hint=await serial_hint(view, model, names),
                           models=names, values=form, errors=errors)

    try:
        proof = await view.file("proof_of_purchase")
    except ValidationError as error:  # a file name of over 255 characters
        return await again(validation_errors(view, error, {"filename": "proof_of_purchase"}))
    if proof is not None and len(proof.content()) > MAX_PROOF_BYTES:
        message = message_for("file_too_large", view.language)
        return await again(Errors(message, {"proof_of_purchase": message}))
    location: dict[str, Any] = ({"same_as_contact": True} if form.get("location_choice", "contact") == "contact"
                                else {name: form.get(name) or None for name in ADDRESS_FIELDS})
    try:
        request = registration.RegisterDevice.model_validate({
            "serial_number": form.get("serial_number", ""), "purchase_date": form.get("purchase_date", ""),
            "warranty_accepted": ticked(form, "accept_warranty"), "location": location,
            "building_location": form.get("building_location") or None,
            "friendly_name": form.get("friendly_name") or None, **({"proof_of_purchase": proof} if proof else {})})
    except ValidationError as error:
        return await again(validation_errors(view, error, REGISTER_FIELDS))
    missing = [name for name in ("street", "postal_code", "city") if "same_as_contact" not in location
               and not location[name]]
    if missing:  # another address than the contact's: where the device stands, as a technician needs it
        return await again(Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language),
                            {name: view.gettext(FIELD_MESSAGES["missing"]) for name in missing}))
    if not request.warranty_accepted:  # the service would refuse it too; said before the file travels
        message = message_for("warranty_not_accepted", view.language)
        return await again(Errors(message, {"accept_warranty": message}))
    try:
        registered = await view.call(registration.RegisterDevice.routing_key, request)
    except Refusal as error:
        if isinstance(error, PortalError) and error.code == "terms_not_accepted":  # new terms since the form opened
            return view.redirect("/terms?next=/devices/new")
        return await again(refusal_errors(view, error))
    return view.redirect(f"/devices/new/{registered['device_id']}")


@router.get("/devices/new/{device_id}")
async def registered_page(view: Page, device_id: str) -> Response:
    """After registering: the device and its warranty (a reload registers nothing again)."""
    if not view.session:
        return view.redirect(f"/sign-in?next=/devices/new/{device_id}")
    device = await view.call(registration.GetDevice.routing_key, {"device_id": device_id})
    return view.render("register_done.html", device=device)


# --- claiming an installed-base device ------------------------------------------------------------------------------

@router.get("/devices/claim")
async def claim_page(view: Page) -> Response:
    if elsewhere := await terms_first(view, "/devices/claim"):
        return elsewhere
    return view.render("register_claim.html")


@router.post("/devices/claim")
async def claim(view: Page) -> Response:
    form = await view.form()
    try:
        request = registration.ClaimDevice(serial_number=form.get("serial_number", ""),
                                           postal_code=form.get("postal_code", ""))
        claimed = await view.call(registration.ClaimDevice.routing_key, request)
    except ValidationError as error:
        return view.render("register_claim.html", 400, values=form, errors=validation_errors(view, error))
    except Refusal as error:
        return view.render("register_claim.html", 400, values=form, errors=refusal_errors(view, error))
    return view.render("register_claimed.html", claimed=claimed, serial_number=request.serial_number)


@router.post("/devices/claim/same-location")
async def claim_same_location(view: Page) -> Response:
    form = await view.form()
    device_ids = [name.removeprefix("device-") for name in form if name.startswith("device-") and ticked(form, name)]
    if not device_ids:
        return view.redirect("/")
    chosen = sorted(device_ids)[:200]
    try:  # the same devices asked for again from this browser: one request in the operators' queue
        await view.call(registration.ClaimSameLocation.routing_key, {"device_ids": chosen},
                        message_id=view.repeated_id("same-location", *chosen))
    except Refusal as error:
        return view.render("trouble.html", 400, message=refusal_errors(view, error).summary)
    return view.redirect(f"/devices/claim/same-location/done?count={len(chosen)}")


@router.get("/devices/claim/same-location/done")
async def same_location_requested(view: Page, count: str = "1") -> Response:
    return view.render("register_claim_requested.html", count=page_number(count))
