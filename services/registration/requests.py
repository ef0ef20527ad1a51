"""registration: claims of installed-base devices and address changes, decided by operators.

Claiming (`registration.claim_device`): the serial and the postcode of the device's location (compared without
spaces or case) prove the caller stands at the machine. A wrong postcode and an unknown serial get the same
`serial_or_postcode_mismatch`, so nothing tells which part was wrong. At most 10 attempts that fail so within 15
minutes (`claim_attempts`, one atomic counter per user): after that every `claim_device` of that user answers
`rate_limited` until the window ends, a matching one too, so serials and postcodes cannot be guessed.

What a matching claim grants depends on who asks (`ClaimedDevice.status`):
- a user of the device's customer (or of its contract) sees it already: nothing changes, except that a device their
  customer deregistered comes back into view, like registering it anew;
- a contract sign-in claims nothing outside its contract: `serial_or_postcode_mismatch`, as for a wrong postcode;
- a user who belongs to no customer yet joins the device's claimants at once (OneRicoh's first machine) and is
  offered the other devices of that customer at that address (`same_location`), which they ask for with
  `claim_same_location`; a second device of that customer at that address claimed directly waits like those;
- a user of another customer, or anyone claiming a device of no customer (someone's own registration), waits
  for an operator (a `same_location_claim` request naming that one device) and is offered nothing.
A claimant outside the device's customer gets a view of their own (services/registration/devices.py): their
name, their reminders and hiding the device never change what the customer's users see or receive.

`claim_same_location` asks for devices with `device_ids` (CATALOG §3) and, optionally, `devices: [{device_id,
friendly_name?, reminder_email?, reminders?}]` for the settings each gets (a device named in both gets these);
only devices of the customer of a device the caller claimed, at that device's address (same normalised street,
postcode and city), qualify (else `not_found`). It waits in the `requests` collection (kind `same_location_claim`)
until an operator decides; once approved the devices join the requester's view with those settings in it
(`registration.device.claimed`, plus `registration.device.updated` when settings were given).

`registration.request_address_change` (kind `address_change`) asks to move a device the caller sees; a service
request opened with a permanent service address (`ticketing.ticket.opened`, `address_permanent`) files the same
request for its device, naming the ticket. Approved, it
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

import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts import registration as api
from contracts.base import Page
from contracts.ticketing import TicketOpened
from services.registration import domain
from services.registration.devices import (
    CLAIMANTS,
    Change,
    apply_settings,
    change_device,
    device_state,
    is_member,
    sees,
    updated,
)
from services.registration.handlers import own_device, store_of
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document, as_datetime
from services.runtime.outbox import APPLIED
from services.runtime.service import Router
from services.runtime.tokens import Claims

log = logging.getLogger(__name__)
router = Router()

PENDING = "pending_approval"
MISMATCH = "serial_or_postcode_mismatch"
MAX_FAILED_CLAIMS = 10
CLAIM_WINDOW_MS = 15 * 60 * 1000


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
    found = store_of(ctx).devices.find({"_id": {"$in": device_ids}})
    return {device["_id"] async for device in found if sees(ctx.caller, device)}


async def add_claimant(ctx: CommandContext, device_id: str, user_id: str, settings: Document) -> None:
    """The user joins the device's claimants with their own settings (reminders off unless they turn them on):
    a new version, `device.claimed`, and `device.updated` when settings were given."""
    def change(device: Document) -> Document:
        before = (device.get(CLAIMANTS) or {}).get(user_id)
        entry = {"reminders": False, **(before if isinstance(before, dict) else {}), **settings, "hidden": False}
        return {CLAIMANTS: {**(device.get(CLAIMANTS) or {}), user_id: entry}}

    def events(changed: Document) -> list[api.DeviceState]:
        claimed = api.DeviceClaimed(**device_state(changed), claimed_by=user_id)
        return [claimed, *updated(changed)] if settings else [claimed]
    await change_device(store_of(ctx), device_id, change, events, command_id=ctx.message_id)


# --- customers ---------------------------------------------------------------------------------------------

@router.command("registration.claim_device", api.ClaimDevice, access=Access.AUTH)
async def claim_device(request: api.ClaimDevice, ctx: CommandContext) -> api.ClaimedDevice:
    """`rate_limited` once the caller's window holds 10 failed claims; else the claim, as the module says."""
    store, user_id = store_of(ctx), ctx.caller.user_id
    # The attempt is counted before it is tried, so parallel attempts cannot all pass a check made before any
    # of them failed; one that does not fail gives its place back.
    window = await store.take_claim_attempt(user_id, now_ms=int(time.time() * 1000), window_ms=CLAIM_WINDOW_MS,
                                            limit=MAX_FAILED_CLAIMS)
    if window is None:
        raise CommandError("rate_limited")
    failed = False
    try:
        return await claim(request, ctx)
    except CommandError as error:
        failed = error.code == MISMATCH
        raise
    finally:
        if not failed:
            await store.give_back_claim_attempt(user_id, window)


async def claim(request: api.ClaimDevice, ctx: CommandContext) -> api.ClaimedDevice:
    claims, store = ctx.caller, store_of(ctx)
    device = await store.device({"serial_number": domain.normalise_serial(request.serial_number)})
    if device is None or location_key(device.get("location")) is None \
            or compact_postcode((device.get("location") or {}).get("postal_code")) \
            != compact_postcode(request.postal_code) \
            or (claims.contract_number and not is_member(claims, device)):
        raise CommandError(MISMATCH, fields={"serial_number": MISMATCH, "postal_code": MISMATCH})
    if is_member(claims, device):
        if not device.get("visible", True):
            await change_device(store, device["_id"], apply_settings(claims, {"visible": True}), updated,
                                command_id=ctx.message_id)
        return api.ClaimedDevice(device_id=device["_id"], same_location=[])
    if user_id_claimed(device, claims.user_id) or (claims.customer_number is None and device.get("customer_number")
                                                   and not await claimed_there(ctx, device)):
        await add_claimant(ctx, device["_id"], claims.user_id, {})
        return api.ClaimedDevice(device_id=device["_id"], same_location=await offered(ctx, claims, device))
    request_id = await request_claim(ctx, device)
    return api.ClaimedDevice(device_id=device["_id"], same_location=[], status=PENDING, request_id=request_id)


def user_id_claimed(device: Document, user_id: str) -> bool:
    return user_id in (device.get(CLAIMANTS) or {})


async def claimed_there(ctx: CommandContext, device: Document) -> bool:
    """Whether the caller claimed another device of this device's customer at its address: the next ones at that
    address go through an operator, like `claim_same_location`, whoever learnt their serials."""
    return any(user_id_claimed(other, ctx.caller.user_id) for other in await devices_at(ctx, device.get("location"))
               if other["_id"] != device["_id"] and other.get("customer_number") == device.get("customer_number"))


async def offered(ctx: CommandContext, claims: Claims, device: Document) -> list[api.SameLocationDevice]:
    """The other devices of the device's customer at its address that the caller does not see yet; only for a user
    who belongs to no customer (another customer's user is offered nothing)."""
    if claims.customer_number is not None:
        return []
    others = [other for other in await devices_at(ctx, device.get("location"))
              if other["_id"] != device["_id"] and other.get("customer_number") == device.get("customer_number")]
    seen = await visible_ids(ctx, [other["_id"] for other in others])
    return [api.SameLocationDevice(device_id=other["_id"], serial_number=other["serial_number"], model=other["model"])
            for other in others if other["_id"] not in seen]


async def request_claim(ctx: CommandContext, device: Document) -> str:
    """A claim an operator decides: the caller's pending one for this device, else a new one."""
    store = store_of(ctx)
    pending = await store.requests.find_one({"kind": "same_location_claim", "status": PENDING,
                                             "requested_by": ctx.caller.user_id, "device_id": device["_id"]})
    if pending is not None:
        return str(pending["_id"])
    request_id = request_id_for(ctx)
    document: Document = {
        "_id": request_id, "kind": "same_location_claim", "status": PENDING, "requested_by": ctx.caller.user_id,
        "customer_number": ctx.caller.customer_number, "language": ctx.language,
        "requested_at": datetime.now(UTC), "location": device.get("location") or {}, "device_id": device["_id"],
        "items": [api.SameLocationItem(device_id=device["_id"]).model_dump()],
    }
    try:
        await store.insert_request(document)
    except DuplicateKeyError:
        pass  # this command's request, inserted before a crash
    return request_id


@router.command("registration.claim_same_location", api.ClaimSameLocation, access=Access.AUTH)
async def claim_same_location(request: api.ClaimSameLocation, ctx: CommandContext) -> api.PendingRequest:
    items, user_id, store = asked_for(request), ctx.caller.user_id, store_of(ctx)
    claimed = store.devices.find({f"{CLAIMANTS}.{user_id}": {"$exists": True}}, {"location": 1, "customer_number": 1})
    # The addresses as the caller claimed them, each with the customer whose devices there may be asked for.
    keys: dict[tuple[tuple[str, str, str] | None, str | None], Document] = {
        (key, device.get("customer_number")): device["location"] async for device in claimed
        if (key := location_key(device.get("location"))) is not None}
    locations: list[Document] = []
    for path, item in items.values():
        device = await store.device({"_id": item.device_id}) or {}
        place = (location_key(device.get("location")), device.get("customer_number"))
        if place not in keys:
            raise CommandError("not_found", fields={path: "not_found"})
        locations.append(keys[place])
    request_id = request_id_for(ctx)
    document: Document = {
        "_id": request_id, "kind": "same_location_claim", "status": PENDING, "requested_by": user_id,
        "customer_number": ctx.caller.customer_number, "language": ctx.language,
        "requested_at": datetime.now(UTC), "location": locations[0],
        "items": [item.model_dump() for _, item in items.values()],
    }
    try:
        await store.insert_request(document)
    except DuplicateKeyError:
        pass  # this command's request, inserted before a crash
    return api.PendingRequest(request_id=request_id)


def asked_for(request: api.ClaimSameLocation) -> dict[str, tuple[str, api.SameLocationItem]]:
    """Each device asked for once, by id, with the field that named it (for `not_found`) and its settings: those
    of `devices` where it is named there too, else none (`device_ids`, the catalogue's form)."""
    items: dict[str, tuple[str, api.SameLocationItem]] = {}
    for index, device_id in enumerate(request.device_ids):
        items.setdefault(device_id, (f"device_ids.{index}", api.SameLocationItem(device_id=device_id)))
    for index, item in enumerate(request.devices):
        path = items[item.device_id][0] if item.device_id in items else f"devices.{index}.device_id"
        items[item.device_id] = (path, item)
    if not items:
        raise CommandError("validation_failed", fields={"device_ids": "Field required: name at least one device"})
    return items


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


@router.event(TicketOpened)
async def address_from_ticket(event: TicketOpened, ctx: EventContext) -> None:
    """A permanent service address given with a service request waits as an address change like one a user asked
    for (OneRicoh: the vendor approves it, then it moves every device of the customer at that address). Its id comes
    from the ticket, so a copy of the event files it once; a temporary address stays with its ticket."""
    if not event.address_permanent:
        return
    device = await store_of(ctx).device({"_id": event.device.device_id})
    if device is None:
        log.warning("%s: message_id=%s ticket_number=%s device %s unknown, no address change", ctx.event,
                    ctx.message_id, event.ticket_number, event.device.device_id)
        return
    address = event.service_address.model_dump()
    pending = store_of(ctx).requests.find({"device_id": device["_id"], "status": PENDING, "kind": "address_change"})
    if location_key(address) in [location_key(request.get("address")) async for request in pending]:
        return  # the same move waits already (an earlier ticket's, or the user's own request)
    document: Document = {
        "_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{TicketOpened.routing_key}:{event.ticket_number}").hex,
        "kind": "address_change", "status": PENDING, "requested_by": event.opened_by,
        "customer_number": event.customer_number, "language": event.language, "requested_at": event.opened_at,
        "device_id": device["_id"], "location": device.get("location") or {},
        "address": address, "ticket_number": event.ticket_number,
        "reason": f"Permanent service address given with service request {event.ticket_number}",
    }
    try:
        await store_of(ctx).insert_request(document)
    except DuplicateKeyError:
        pass  # filed by an earlier copy of the event


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
            address=api.Location(**stored["address"]) if stored.get("address") else None, devices=devices,
            ticket_number=stored.get("ticket_number")))
    return Page[api.RequestView](items=views, total=total, page=request.page, page_size=request.page_size)


async def decision_targets(ctx: CommandContext, stored: Document, from_location: Document
                           ) -> list[tuple[str, Change | Document]]:
    """The devices an approval changes: for an address change with the change moving it, for a claim with the
    settings the claimant asked for."""
    if stored["kind"] == "address_change":
        return [(device["_id"], moved_to(stored.get("address") or {}))
                for device in await devices_moving(ctx, stored, from_location)]
    targets: list[tuple[str, Change | Document]] = []
    for item in stored.get("items") or []:
        if await store_of(ctx).device({"_id": item["device_id"]}) is not None:
            targets.append((item["device_id"], {key: item[key] for key in ("friendly_name", "reminder_email",
                                                                            "reminders") if item.get(key) is not None}))
    return targets


def moved_to(address: Document) -> Change:
    """The device at the new address, keeping its own `building_location` unless the address names one."""
    def change(device: Document) -> Document:
        return {"location": {**address, "building_location": address.get("building_location")
                             or (device.get("location") or {}).get("building_location")}}
    return change


@router.command("registration.operator.decide_request", api.DecideRequest, access=Access.OPERATOR)
async def decide_request(request: api.DecideRequest, ctx: CommandContext) -> api.Decision:
    store = store_of(ctx)
    stored = await store.request(request.request_id)
    if stored is None:
        raise CommandError("not_found")
    status = "approved" if request.approve else "rejected"
    from_location = await old_location(ctx, stored) if stored["kind"] == "address_change" else {}
    targets = await decision_targets(ctx, stored, from_location) if request.approve else []
    device_ids = [device_id for device_id, _ in targets] if request.approve else \
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
    for device_id, change in targets:
        if callable(change):
            await change_device(store, device_id, change, updated, command_id=ctx.message_id)
        else:
            await add_claimant(ctx, device_id, stored["requested_by"], change)
    return api.Decision(status=status)
