"""Read models every service keeps of other services' aggregates, the same way: devices from registration's events
and customers' contracts from accounts' events, each kept at the highest `version` seen; who may see a device, and
who may see a record made about devices (an order, a ticket).

Events arrive in any order and more than once: a write is an upsert conditional on the stored version being lower,
so an older copy arriving late changes nothing (its insert collides on `_id`), and a duplicate rewrites the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts.accounts import CustomerProvisioned
from contracts.registration import (
    DeviceClaimed,
    DeviceDeregistered,
    DeviceProvisioned,
    DeviceRegisteredEvent,
    DeviceState,
    DeviceUpdated,
)
from services.runtime.mongo import Collection, Document
from services.runtime.tokens import Claims, Role

# Every event of registration that describes a device as stored: a read model of devices consumes them all.
DEVICE_EVENTS: tuple[type[DeviceState], ...] = (DeviceProvisioned, DeviceRegisteredEvent, DeviceClaimed,
                                                DeviceUpdated, DeviceDeregistered)


def newer_than(version: int) -> Document:
    """Filter: stored at a lower version. Version 0 (a sender without versions) fills in, never overwrites."""
    return {"$lt": version} if version > 0 else {"$lte": 0}


async def keep_latest(collection: Collection, key: str, fields: Document, version: int,
                      on_insert: Document | None = None) -> bool:
    """Store `fields` under `key` unless a newer version is stored; False when the copy was older and ignored."""
    update: dict[str, Any] = {"$set": {**fields, "version": version}}
    if on_insert:
        update["$setOnInsert"] = on_insert
    try:
        await collection.update_one({"_id": key, "version": newer_than(version)}, update, upsert=True)
    except DuplicateKeyError:
        return False  # stored with a newer version: the upsert's insert collided
    return True


def device_fields(event: DeviceState) -> Document:
    """What a read model keeps of a device: who sees it, what it is, where it stands, its reminder settings and the
    ERP's last readings (`baseline`: counter -> {value, date})."""
    return {
        "serial_number": event.serial_number, "model": event.model, "article_number": event.article_number,
        "counters": event.counters, "customer_number": event.customer_number,
        "contract_number": event.contract_number, "location": event.location.model_dump(),
        "friendly_name": event.friendly_name, "e_maintenance": event.e_maintenance, "visible": event.visible,
        "registered_by": event.registered_by, "claimants": event.claimants,
        "reminder_recipients": [recipient.model_dump() for recipient in event.reminder_recipients],
        "baseline": {reading.name: {"value": reading.value, "date": reading.date.isoformat()}
                     for reading in event.last_readings},
    }


def contract_of(device: Mapping[str, object], customer: Mapping[str, object] | None) -> Document | None:
    """The device's contract as its customer's latest `customer.provisioned` describes it; None while unknown."""
    number = device.get("contract_number")
    if not number or customer is None:
        return None
    contracts = customer.get("contracts") or {}
    contract = contracts.get(str(number)) if isinstance(contracts, dict) else None
    return contract if isinstance(contract, dict) else None


def contracts_of(event: CustomerProvisioned) -> Document:
    """A customer's contracts by number, dates as `YYYY-MM-DD`."""
    return {contract.contract_number: contract.model_dump(mode="json") for contract in event.contracts}


def sees(claims: Claims, device: Document) -> bool:
    """Whether the caller sees a device read already, as registration decides it: the users of its customer (only
    the contract's devices for a contract sign-in), the registering user of a device of no customer, and claimants
    outside the customer who did not hide it; a device its customer deregistered is out of its customer's view.

    Checked in Python after a lookup by `_id` or an indexed field, never as one query with `$and`/`$or`: nx-27017
    checks every document of the collection for such a filter (measured: 62 ms per lookup at 5,000 devices).
    """
    shown = device.get("visible", True) in (True, 1)
    if claims.contract_number:
        return shown and device.get("customer_number") == claims.customer_number \
            and device.get("contract_number") == claims.contract_number
    member = device.get("registered_by") == claims.user_id or bool(
        claims.customer_number and device.get("customer_number") == claims.customer_number)
    return (member and shown) or claims.user_id in (device.get("claimants") or [])


async def visible_devices(collection: Collection, claims: Claims,
                          projection: Document | None = None) -> list[Document]:
    """Every device in the caller's view, by serial number: a few queries on indexed fields (customer, registering
    user, claimant) and `sees` on what they find, never one filter with `$or`."""
    # `$in`, not plain equality: nx-27017 matches equality on an indexed array field wrongly.
    queries: list[Document] = [{"registered_by": claims.user_id}, {"claimants": {"$in": [claims.user_id]}}]
    if claims.customer_number:
        queries.insert(0, {"customer_number": claims.customer_number})
    if claims.contract_number:
        queries = [{"customer_number": claims.customer_number}]
    found: dict[str, Document] = {}
    for query in queries:
        async for device in collection.find(query, projection):
            if device["_id"] not in found and sees(claims, device):
                found[device["_id"]] = device
    return sorted(found.values(), key=lambda device: device.get("serial_number", ""))


# --- records about devices: orders, tickets --------------------------------------------------------------------

def record_viewers(customer_number: object, user_id: str) -> list[str]:
    """Who sees a record besides operators: the users of the customer it was made for, and whoever made it (a
    claimant or a user of no customer). Nobody else: it names contacts and texts another viewer of its device need
    not know. Stored as the record's `viewers`, queried with `$in` (see `visible_records`)."""
    return ([f"customer:{customer_number}"] if customer_number else []) + [f"user:{user_id}"]


def view_of(claims: Claims) -> list[str]:
    """The `viewers` entries naming the caller."""
    return record_viewers(claims.customer_number, claims.user_id)


def contract_key(customer_number: str, contract_number: str) -> str:
    """A record's `contract_key` when all its devices are of one contract: what a contract sign-in sees."""
    return f"{customer_number}/{contract_number}"


def visible_records(claims: Claims) -> Document:
    """Filter on records: those the caller may see. Operators every one; a contract sign-in those of its contract;
    anyone else those of their customer and the ones they made themselves."""
    if claims.role is Role.OPERATOR:
        return {}
    if claims.contract_number and claims.customer_number:
        return {"contract_key": contract_key(claims.customer_number, claims.contract_number)}
    # Array fields only with `$in`: nx-27017 matches plain equality on an indexed array field wrongly.
    return {"viewers": {"$in": view_of(claims)}}


def may_see_record(claims: Claims, record: Mapping[str, Any]) -> bool:
    """`visible_records` for one record at hand."""
    if claims.role is Role.OPERATOR:
        return True
    if claims.contract_number and claims.customer_number:
        return bool(record.get("contract_key") == contract_key(claims.customer_number, claims.contract_number))
    return bool(set(view_of(claims)) & set(record.get("viewers") or []))
