"""Who sees a device and whose settings apply, and the one versioned write every change of a device goes through.

Members of a device are the users of its customer (only the contract's devices for a contract sign-in) and, for a
device of no customer, the user who registered it. They share one view: what one of them changes, all of them see.

A claimant outside the device's customer (`claimants.<user_id>` on the device: a map, since nx-27017 turns the
elements of an existing array into strings) has a view of their own: their friendly name, their reminders (off
until they turn them on; to their own address) and hiding the device (`hidden`) change their map entry only, never
what the customer's users see or receive. Device events carry the resulting `reminder_recipients` for read models.

Every change is a conditional update on the version the device was read at, retried when another change came first
(`change_device`): each version is issued once, and the event with the highest version is the device as stored, so
read models that skip older versions converge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from contracts import registration as api
from services.registration.store import RegistrationStore
from services.runtime.commands import CommandError
from services.runtime.mongo import Document
from services.runtime.outbox import APPLIED
from services.runtime.tokens import Claims

CLAIMANTS = "claimants"
# Each retry follows a change that won, so n concurrent changes of one device need at most n attempts.
MAX_CHANGE_ATTEMPTS = 100

Change = Callable[[Document], Document | None]  # the device as read → the top-level fields to set (None: nothing)
Events = Callable[[Document], Sequence[api.DeviceState]]  # the device as it reads after the change → its events


def member_filter(claims: Claims) -> Document:
    if claims.contract_number:
        return {"customer_number": claims.customer_number, "contract_number": claims.contract_number}
    if claims.customer_number:
        return {"$or": [{"customer_number": claims.customer_number}, {"registered_by": claims.user_id}]}
    return {"registered_by": claims.user_id}


def is_member(claims: Claims, device: Document) -> bool:
    """`member_filter` for one device read already."""
    if claims.contract_number:
        return (device.get("customer_number") == claims.customer_number
                and device.get("contract_number") == claims.contract_number)
    if claims.customer_number and device.get("customer_number") == claims.customer_number:
        return True
    return device.get("registered_by") == claims.user_id


def claimant_filter(user_id: str) -> Document:
    # `$nin`, not `$ne`: nx-27017 matches `$ne` wrongly on missing fields; booleans may read back as 1.
    return {f"{CLAIMANTS}.{user_id}": {"$exists": True}, f"{CLAIMANTS}.{user_id}.hidden": {"$nin": [True, 1]}}


def visible_to(claims: Claims) -> Document:
    """Filter: the devices in the caller's view. A contract sign-in sees its contract's devices and nothing else."""
    members: Document = {"$and": [member_filter(claims), {"visible": True}]}
    if claims.contract_number:
        return members
    return {"$or": [members, claimant_filter(claims.user_id)]}


def sees(claims: Claims, device: Document) -> bool:
    """`visible_to` for one device read already (by `_id` or serial): nx-27017 checks every document of the
    collection for a filter with `$and`/`$or`, so lookups of one device use this instead."""
    if is_member(claims, device) and device.get("visible", True) in (True, 1):
        return True
    if claims.contract_number:
        return False
    entry = (device.get(CLAIMANTS) or {}).get(claims.user_id)
    return entry is not None and not (isinstance(entry, dict) and entry.get("hidden") in (True, 1))


def personal_settings(claims: Claims, device: Document) -> Document | None:
    """The caller's own entry for a device they claimed from outside its customer; None for its members."""
    if is_member(claims, device):
        return None
    entry = (device.get(CLAIMANTS) or {}).get(claims.user_id)
    return dict(entry) if isinstance(entry, dict) else {}  # claims stored before personal settings: `True`


def apply_settings(claims: Claims, settings: Document) -> Change:
    """`settings` (`friendly_name`, `reminders`, `reminder_email`, `visible`) as the caller changes them: on the device
    for its members, in the caller's own entry for a claimant outside its customer."""
    def change(device: Document) -> Document:
        own = personal_settings(claims, device)
        if own is None:
            return dict(settings)
        for key, value in settings.items():
            if key == "visible":
                own["hidden"] = not value
            else:
                own[key] = value
        return {CLAIMANTS: {**(device.get(CLAIMANTS) or {}), claims.user_id: own}}
    return change


def set_fields(fields: Document) -> Change:
    """A change setting the same fields whatever the device reads."""
    return lambda _device: fields


def reminders_off(recipient: api.ReminderRecipient, email: str) -> Change:
    """An unsubscribe from a reminder mailed to `email` for `recipient`: off for whoever the reminder was for.

    A claimant outside the customer (`recipient.user_id` in the claimants map) turns off their own entry. Anyone
    else turns off the device's own setting (the customer's, or the registering user's for a device of no
    customer), but only while that setting still sends to that address: the `reminder_email` it went to, or none
    then and none now (the customer's contacts). A reminder for an address taken off the list since, or for an
    owner the device no longer has, changes nothing; reminders already off change nothing either.
    """
    def change(device: Document) -> Document | None:
        claimants = device.get(CLAIMANTS) or {}
        if recipient.user_id is not None and recipient.user_id in claimants:
            before = claimants[recipient.user_id]
            own = dict(before) if isinstance(before, dict) else {}  # `True`: claimed before personal settings
            if not own.get("reminders"):
                return None
            return {CLAIMANTS: {**claimants, recipient.user_id: {**own, "reminders": False}}}
        if not bool(device.get("reminders", True)) or not names_owner(recipient, device) \
                or not still_sent_to(device, recipient, email):
            return None
        return {"reminders": False}
    return change


def still_sent_to(device: Document, recipient: api.ReminderRecipient, email: str) -> bool:
    """Whether the device's own reminders still go where that reminder went: its `reminder_email` (any case), or,
    with none set now, to the customer's contacts as then (the reminder named no address)."""
    current = (device.get("reminder_email") or "").strip()
    if current:
        return current.casefold() == email.strip().casefold()
    return recipient.email is None


def names_owner(recipient: api.ReminderRecipient, device: Document) -> bool:
    """Whether the reminder was for the device's own setting as it stands: for its customer, or for the user who
    registered a device of no customer (a recipient naming no one is judged by the address alone)."""
    customer = device.get("customer_number")
    if recipient.customer_number is not None:
        return bool(recipient.customer_number == customer)
    if recipient.user_id is not None:
        return customer is None and recipient.user_id == device.get("registered_by")
    return True


def device_view(device: Document, claims: Claims) -> api.Device:
    view = api.Device(
        device_id=device["_id"], serial_number=device["serial_number"], model=device["model"],
        article_number=device.get("article_number"), customer_number=device.get("customer_number"),
        contract_number=device.get("contract_number"), friendly_name=device.get("friendly_name"),
        location=api.Location(**(device.get("location") or {})), contact_name=device.get("contact_name"),
        counters=device.get("counters") or [], last_readings=last_readings(device),
        warranty=api.Warranty(**device["warranty"]) if device.get("warranty") else None,
        reminders=bool(device.get("reminders", True)), reminder_email=device.get("reminder_email"),
        e_maintenance=bool(device.get("e_maintenance")), registered_at=device.get("registered_at"))
    own = personal_settings(claims, device)
    if own is None:
        return view
    return view.model_copy(update={"friendly_name": own.get("friendly_name", view.friendly_name),
                                   "reminders": bool(own.get("reminders", False)),
                                   "reminder_email": own.get("reminder_email")})


def reminder_recipients(device: Document) -> list[api.ReminderRecipient]:
    """The customer's reminders where they are on (the registering user's for a device of no customer), plus each
    claimant outside the customer who turned them on for themselves and did not hide the device."""
    recipients = []
    if bool(device.get("visible", True)) and bool(device.get("reminders", True)):
        customer = device.get("customer_number")
        recipients.append(api.ReminderRecipient(customer_number=customer, email=device.get("reminder_email"),
                                                user_id=None if customer else device.get("registered_by")))
    for user_id, entry in sorted((device.get(CLAIMANTS) or {}).items()):
        if isinstance(entry, dict) and entry.get("reminders") and not entry.get("hidden"):
            recipients.append(api.ReminderRecipient(user_id=user_id, email=entry.get("reminder_email")))
    return recipients


def last_readings(device: Document) -> list[api.CounterReading]:
    """The ERP's last value of each counter, as the installed-base import stored it: a map by counter name of
    `{name, value, date}` (the date as `YYYY-MM-DD`)."""
    return [api.CounterReading(**reading) for reading in (device.get("last_readings") or {}).values()]


def visible_claimants(device: Document) -> list[str]:
    """The claimants outside the customer who see the device: every entry not hidden (claims stored before personal
    settings are `True`; nx-27017 may read a boolean back as 1)."""
    return sorted(user_id for user_id, entry in (device.get(CLAIMANTS) or {}).items()
                  if not (isinstance(entry, dict) and entry.get("hidden")))


def device_state(device: Document) -> dict[str, Any]:
    """The fields of every device event, from the device as it reads after the change."""
    return {"device_id": device["_id"], "serial_number": device["serial_number"], "model": device["model"],
            "article_number": device.get("article_number"), "counters": device.get("counters") or [],
            "customer_number": device.get("customer_number"), "contract_number": device.get("contract_number"),
            "location": api.Location(**(device.get("location") or {})), "friendly_name": device.get("friendly_name"),
            "reminders": bool(device.get("reminders", True)), "reminder_email": device.get("reminder_email"),
            "e_maintenance": bool(device.get("e_maintenance")), "visible": bool(device.get("visible", True)),
            "version": device.get("version", 1), "reminder_recipients": reminder_recipients(device),
            "last_readings": last_readings(device), "registered_by": device.get("registered_by"),
            "claimants": visible_claimants(device)}


def updated(device: Document) -> list[api.DeviceState]:
    return [api.DeviceUpdated(**device_state(device))]


async def change_device(store: RegistrationStore, device_id: str, change: Change, events: Events, *,
                        command_id: str | None) -> Document | None:
    """Apply `change` to the device as stored now, conditional on its version; read again and retry when another
    change came first. The device as stored afterwards; None when there is no such device.

    A command re-run after a crash finds its id among the device's applied commands and changes nothing twice.
    """
    for _ in range(MAX_CHANGE_ATTEMPTS):
        device = await store.device({"_id": device_id})
        if device is None or (command_id is not None and command_id in (device.get(APPLIED) or [])):
            return device
        fields = change(device)
        if fields is None:
            return device
        changed = {**device, **fields, "version": device.get("version", 1) + 1}
        if await store.change_device(device, {**fields, "version": changed["version"]}, events(changed), command_id):
            return changed
    raise CommandError("conflict")
