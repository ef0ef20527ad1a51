"""registration: claims of installed-base devices and address changes, decided by operators.

Claiming (`registration.claim_device`): the serial and the postcode of the device's location (compared without
spaces or case) prove the caller stands at the machine; the device then joins the caller's view, recorded as
`claimants.<user_id>` on the device (a map, safe on nx-27017) and matched by `handlers.visible_to`. A wrong
postcode and an unknown serial get the same `serial_or_postcode_mismatch`, so nothing tells which part was wrong.

Claims do not exclude each other. The device keeps belonging to its ERP customer (whose users all see it, the
Canon rule); a claim only adds one user's view. So a device someone else already claimed, even a user of another
customer, can still be claimed with the right serial and postcode: colleagues at one location each claim the
machines they use (OneRicoh "several machines at the same place"), and a shared building or a facility service
needs the same. Claiming a deregistered device brings it back into view (`visible`), like registering it anew.

`same_location` in the reply lists the other devices at the same address (normalised street, postcode and city)
that the caller does not see yet. `registration.claim_same_location` asks for them with
`devices: [{device_id, friendly_name?, reminder_email?, reminders?}]` (settings left unset stay as they are); only
devices at the address of a device the caller claimed qualify (else `not_found`). It waits in the `requests`
collection (kind `same_location_claim`) until an operator decides; once approved the devices join the requester's
view with those settings (`registration.device.claimed`, plus `registration.device.updated` when settings change).

`registration.request_address_change` (kind `address_change`) asks to move a device the caller sees. Approved, it
moves every device of that device's customer at its address (same normalised street, postcode and city), as
OneRicoh's FAQ says for "this account/address"; another customer's devices in the same building stay (the
operator sees what will move in `list_requests`), each with a
`registration.device.updated` of a new version; each device keeps its own `building_location` unless the new
address names one.

Every decision emits `registration.request.decided` for the notifier's mail. The request is marked decided first
(atomically, only while pending: a second decision gets `conflict`), then the devices change, each write filtered
by `not_applied(message_id)`: a decision re-run after a crash finds the request decided by itself and completes
the device changes once.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts import registration as api
from contracts.base import Page
from services.registration import domain
from services.registration.handlers import device_state, own_device, store_of, visible_to
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.mongo import Document, as_datetime
from services.runtime.outbox import APPLIED
from services.runtime.service import Router

router = Router()

PENDING = "pending_approval"
MISMATCH = "serial_or_postcode_mismatch"


def compact_postcode(postal_code: str | None) -> str:
    return re.sub(r"\s+", "", postal_code or "").casefold()


def _words(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


def location_key(location: Document | None) -> tuple[str, str, str] | None:
    """Street, postcode and city compared without case or extra spaces; None for a device with no postcode."""
    location = location or {}
    postcode = compact_postcode(location.get("postal_code"))
    if not postcode:
        return None
    return _words(location.get("street")), postcode, _words(location.get("city"))


def request_id_for(ctx: CommandContext) -> str:
    """The same id for a command re-run after a crash, so it inserts its request once."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{ctx.command}:{ctx.message_id}").hex if ctx.message_id \
        else uuid.uuid4().hex


async def devices_at(ctx: CommandContext, location: Document | None) -> list[Document]:
    key = location_key(location)
    if key is None:
        return []
    return [device for device in await store_of(ctx).devices_with_postcode(key[1])
            if location_key(device.get("location")) == key]


async def devices_moving(ctx: CommandContext, request: Document, location: Document | None) -> list[Document]:
    """The devices an address change moves: those of the requested device's customer at that address.

    Another company's printer in the same building stays where it is; a device of no customer
    moves alone.
    """
    origin = await store_of(ctx).device({"_id": request.get("device_id")})
    owner = (origin or {}).get("customer_number")
    return [device for device in await devices_at(ctx, location)
            if (device.get("customer_number") == owner if owner else device["_id"] == request.get("device_id"))]


async def visible_ids(ctx: CommandContext, device_ids: list[str]) -> set[str]:
    if not device_ids:
        return set()
    found = store_of(ctx).devices.find({"$and": [{"_id": {"$in": device_ids}}, visible_to(ctx.caller),
                                                 {"visible": True}]}, {"_id": 1})
    return {device["_id"] async for device in found}


def claimed_by(device: Document, user_id: str) -> bool:
    return user_id in (device.get("claimants") or {})


async def add_claimant(ctx: CommandContext, device: Document, user_id: str, settings: Document) -> None:
    """One write: the claimant, the settings, a new version; `device.claimed` (and `device.updated` for settings)."""
    version = device.get("version", 1) + 1
    fields = {**settings, "visible": True, "version": version}
    changed = {**device, **fields}
    state = device_state(changed, version)
    events: list[api.DeviceState] = [api.DeviceClaimed(**state, claimed_by=user_id)]
    if settings:
        events.append(api.DeviceUpdated(**state))
    await store_of(ctx).change_device(device["_id"], {"$set": {f"claimants.{user_id}": True, **fields}}, events,
                                      ctx.message_id)


# --- customers ---------------------------------------------------------------------------------------------

@router.command("registration.claim_device", api.ClaimDevice, access=Access.AUTH)
async def claim_device(request: api.ClaimDevice, ctx: CommandContext) -> api.ClaimedDevice:
    user_id = ctx.caller.user_id
    device = await store_of(ctx).device({"serial_number": domain.normalise_serial(request.serial_number)})
    if device is None or location_key(device.get("location")) is None \
            or compact_postcode((device.get("location") or {}).get("postal_code")) \
            != compact_postcode(request.postal_code):
        raise CommandError(MISMATCH, fields={"serial_number": MISMATCH, "postal_code": MISMATCH})
    if not (claimed_by(device, user_id) and device.get("visible", True)):
        await add_claimant(ctx, device, user_id, {})
    others = [other for other in await devices_at(ctx, device.get("location")) if other["_id"] != device["_id"]]
    seen = await visible_ids(ctx, [other["_id"] for other in others])
    return api.ClaimedDevice(device_id=device["_id"], same_location=[
        api.SameLocationDevice(device_id=other["_id"], serial_number=other["serial_number"], model=other["model"])
        for other in others if other["_id"] not in seen])


@router.command("registration.claim_same_location", api.ClaimSameLocation, access=Access.AUTH)
async def claim_same_location(request: api.ClaimSameLocation, ctx: CommandContext) -> api.PendingRequest:
    user_id, store = ctx.caller.user_id, store_of(ctx)
    claimed = store.devices.find({f"claimants.{user_id}": {"$exists": True}}, {"location": 1})
    keys = {key: device["location"] async for device in claimed
            if (key := location_key(device.get("location"))) is not None}  # the addresses as the caller claimed
    items = list({item.device_id: item for item in request.devices}.values())
    locations: list[Document] = []
    for index, item in enumerate(items):
        device = await store.device({"_id": item.device_id})
        key = location_key(device.get("location")) if device else None
        if key is None or key not in keys:
            raise CommandError("not_found", fields={f"devices.{index}.device_id": "not_found"})
        locations.append(keys[key])
    request_id = request_id_for(ctx)
    document: Document = {
        "_id": request_id, "kind": "same_location_claim", "status": PENDING, "requested_by": user_id,
        "customer_number": ctx.caller.customer_number, "language": ctx.language,
        "requested_at": datetime.now(UTC), "location": locations[0],
        "items": [item.model_dump() for item in items],
    }
    try:
        await store.insert_request(document)
    except DuplicateKeyError:
        pass  # this command's request, inserted before a crash
    return api.PendingRequest(request_id=request_id)


@router.command("registration.request_address_change", api.RequestAddressChange, access=Access.AUTH)
async def request_address_change(request: api.RequestAddressChange, ctx: CommandContext) -> api.PendingRequest:
    device = await own_device(ctx, device_id=request.device_id)
    request_id = request_id_for(ctx)
    document: Document = {
        "_id": request_id, "kind": "address_change", "status": PENDING, "requested_by": ctx.caller.user_id,
        "customer_number": ctx.caller.customer_number, "language": ctx.language,
        "requested_at": datetime.now(UTC), "device_id": device["_id"], "location": device.get("location") or {},
        "address": request.address.model_dump(), "reason": request.reason,
    }
    try:
        await store_of(ctx).insert_request(document)
    except DuplicateKeyError:
        pass
    return api.PendingRequest(request_id=request_id)


# --- operators -----------------------------------------------------------------------------------------------

def request_device(device: Document, item: Document | None = None) -> api.RequestDevice:
    item = item or {}
    return api.RequestDevice(
        device_id=device["_id"], serial_number=device["serial_number"], model=device["model"],
        customer_number=device.get("customer_number"), contract_number=device.get("contract_number"),
        location=api.Location(**(device.get("location") or {})),
        friendly_name=item.get("friendly_name", device.get("friendly_name")),
        reminder_email=item.get("reminder_email", device.get("reminder_email")),
        reminders=item["reminders"] if item.get("reminders") is not None else bool(device.get("reminders", True)))


async def old_location(ctx: CommandContext, request: Document) -> Document:
    """Where an address change moves devices from: the device's address now, else as it was when asked."""
    device = await store_of(ctx).device({"_id": request.get("device_id")})
    return (device or {}).get("location") or request.get("location") or {}


@router.command("registration.operator.list_requests", api.ListRequests, access=Access.OPERATOR, replay=Replay.RERUN)
async def list_requests(request: api.ListRequests, ctx: CommandContext) -> Page[api.RequestView]:
    store = store_of(ctx)
    found, total = await store.pending_requests(request.kind, request.page, request.page_size)
    views = []
    for stored in found:
        location = stored.get("location") or {}
        devices: list[api.RequestDevice] = []
        if stored["kind"] == "address_change":
            location = await old_location(ctx, stored)
            devices = [request_device(device) for device in await devices_moving(ctx, stored, location)]
        else:
            for item in stored.get("items") or []:
                device = await store.device({"_id": item["device_id"]})
                if device is not None:
                    devices.append(request_device(device, item))
        views.append(api.RequestView(
            request_id=stored["_id"], kind=stored["kind"], status=stored["status"],
            requested_by=stored["requested_by"], customer_number=stored.get("customer_number"),
            requested_at=as_datetime(stored.get("requested_at")), reason=stored.get("reason"),
            location=api.Location(**location),
            address=api.Location(**stored["address"]) if stored.get("address") else None, devices=devices))
    return Page[api.RequestView](items=views, total=total, page=request.page, page_size=request.page_size)


async def decision_targets(ctx: CommandContext, stored: Document, from_location: Document
                           ) -> list[tuple[Document, Document]]:
    """The devices an approval changes, each with the fields it sets."""
    targets: list[tuple[Document, Document]] = []
    if stored["kind"] == "address_change":
        address = stored.get("address") or {}
        for device in await devices_moving(ctx, stored, from_location):
            location = {**address, "building_location": address.get("building_location")
                        or (device.get("location") or {}).get("building_location")}
            targets.append((device, {"location": location}))
        return targets
    for item in stored.get("items") or []:
        claimed = await store_of(ctx).device({"_id": item["device_id"]})
        if claimed is not None:
            targets.append((claimed, {key: item[key] for key in ("friendly_name", "reminder_email", "reminders")
                                     if item.get(key) is not None}))
    return targets


@router.command("registration.operator.decide_request", api.DecideRequest, access=Access.OPERATOR)
async def decide_request(request: api.DecideRequest, ctx: CommandContext) -> api.Decision:
    store = store_of(ctx)
    stored = await store.request(request.request_id)
    if stored is None:
        raise CommandError("not_found")
    status = "approved" if request.approve else "rejected"
    from_location = await old_location(ctx, stored) if stored["kind"] == "address_change" else {}
    targets = await decision_targets(ctx, stored, from_location) if request.approve else []
    device_ids = [device["_id"] for device, _ in targets] if request.approve else \
        [item["device_id"] for item in stored.get("items") or []] or [stored.get("device_id", "")]
    event = api.RequestDecided(request_id=stored["_id"], kind=stored["kind"], approved=request.approve,
                               reason=request.reason, user_id=stored["requested_by"], device_ids=device_ids,
                               language=stored.get("language") or "en")
    fields: dict[str, Any] = {"status": status, "decided_at": datetime.now(UTC), "decided_by": ctx.caller.user_id,
                              "decision_reason": request.reason, "device_ids": device_ids,
                              "from_location": from_location}
    if not await store.decide_request(stored["_id"], fields, [event], ctx.message_id):
        again = await store.request(stored["_id"])
        if not (ctx.message_id and again and ctx.message_id in (again.get(APPLIED) or [])):
            raise CommandError("conflict")  # decided by someone else, not a re-run of this decision
        # A re-run after a crash: move from where the first run decided, not from where devices are now.
        targets = await decision_targets(ctx, again, again.get("from_location") or {}) if request.approve else []
    for device, settings in targets:
        if stored["kind"] == "address_change":
            version = device.get("version", 1) + 1
            changed = {**device, **settings, "version": version}
            await store.change_device(device["_id"], {"$set": {**settings, "version": version}},
                                      [api.DeviceUpdated(**device_state(changed, version))], ctx.message_id)
        else:
            await add_claimant(ctx, device, stored["requested_by"], settings)
    return api.Decision(status=status)
