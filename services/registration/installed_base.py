"""registration: the installed base from a vendor's ERP, imported a few hundred devices per database write.

`registration.operator.import_installed_base` upserts by serial; each device is judged on its own
(`unknown_model`), and each gets its own `registration.device.provisioned` through the outbox.
Per batch (`PORTAL_IMPORT_BATCH_DEVICES`, 500): one read of the devices that exist, one `bulk_write`
inserting the new ones, where the unique serial index decides a serial inserted meanwhile, and one
`bulk_write` changing the existing ones, each `UpdateOne` filtered on `_id` and the version it was read
at, as every change of a device is (`devices.change_device`). The few that lost to another change
(or to an insert that came first) go through `change_device` one by one, which reads again and
retries. A serial named twice in one import is applied in order: the later entry in a later round,
as a change of the device the earlier one stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from pymongo import UpdateOne

from contracts import registration as api
from services.registration import domain
from services.registration.devices import change_device, device_state, set_fields
from services.registration.store import RegistrationStore
from services.runtime.mongo import Document
from services.runtime.outbox import with_events

# Set with each batched change: read back, it tells the changes of this batch that were applied from those that
# lost to another change of the same version (the bulk write only counts them).
WRITE_MARK = "import_write"


def provisioned(device: Document) -> list[api.DeviceState]:
    return [api.DeviceProvisioned(**device_state(device))]


def device_fields(item: api.InstalledDevice, model: api.ProductModel) -> Document:
    return {
        "serial_number": domain.normalise_serial(item.serial_number), "model": model.model,
        "article_number": model.article_number, "counters": model.counters, "customer_number": item.customer_number,
        "contract_number": item.contract_number, "location": item.location.model_dump(),
        "e_maintenance": item.e_maintenance, "visible": True,
        "last_readings": {reading.name: reading.model_dump(mode="json") for reading in item.counters},
    }


def rounds_of(items: Sequence[api.InstalledDevice], known: set[str]) -> tuple[list[list[int]], list[api.Rejected]]:
    """The indexes to import, in rounds where each serial appears once (its n-th entry in round n), and the
    entries of unknown models."""
    rounds: list[list[int]] = []
    rejected: list[api.Rejected] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.model not in known:
            rejected.append(api.Rejected(index=index, code="unknown_model"))
            continue
        serial = domain.normalise_serial(item.serial_number)
        turn = seen[serial] = seen.get(serial, -1) + 1
        if turn == len(rounds):
            rounds.append([])
        rounds[turn].append(index)
    return rounds, rejected


async def import_devices(store: RegistrationStore, items: Sequence[api.InstalledDevice], *,
                         batch_size: int) -> api.Imported:
    models = {model.model: model for model in await store.all_models()}
    rounds, rejected = rounds_of(items, set(models))
    imported = 0
    for indexes in rounds:
        for start in range(0, len(indexes), max(batch_size, 1)):
            imported += await import_batch(store, [device_fields(items[index], models[items[index].model])
                                                    for index in indexes[start:start + batch_size]])
    return api.Imported(imported=imported, rejected=sorted(rejected, key=lambda item: item.index))


async def import_batch(store: RegistrationStore, batch: list[Document]) -> int:
    """Insert the new devices and change the existing ones, each serial once; how many were imported."""
    serials = [fields["serial_number"] for fields in batch]
    existing = {device["serial_number"]: device async for device in
                store.devices.find({"serial_number": {"$in": serials}}, {"outbox": 0})}
    now = datetime.now(UTC)
    new = [{"_id": uuid.uuid4().hex, "provisioned_at": now, **fields, "version": 1}
           for fields in batch if fields["serial_number"] not in existing]
    inserted = await store.insert_devices([(device, provisioned(device)) for device in new])
    # A serial inserted by someone else since it was read: changed like any existing device instead.
    late = [device["serial_number"] for device, stored in zip(new, inserted, strict=True) if not stored]
    if late:
        existing.update({device["serial_number"]: device async for device in
                         store.devices.find({"serial_number": {"$in": late}}, {"outbox": 0})})
    changes = [(existing[fields["serial_number"]], fields) for fields in batch
               if fields["serial_number"] in existing]
    await change_devices(store, changes)
    return len(batch)


async def change_devices(store: RegistrationStore, changes: list[tuple[Document, Document]]) -> None:
    """Each device changed as `change_device` would, conditional on the version it was read at, in one write; those
    that lost to another change are read again and changed one by one."""
    if not changes:
        return
    mark = uuid.uuid4().hex
    writes = []
    for device, fields in changes:
        version: Document = {"version": device["version"]} if "version" in device else {"version": {"$exists": False}}
        changed = {**device, **fields, "version": device.get("version", 1) + 1}
        writes.append(UpdateOne({"_id": device["_id"], **version}, with_events(
            {"$set": {**fields, "version": changed["version"], WRITE_MARK: mark}}, provisioned(changed))))
    result = await store.devices.bulk_write(writes, ordered=False)
    if result.matched_count == len(writes):
        return
    ids = [device["_id"] for device, _ in changes]
    applied = {device["_id"] async for device in store.devices.find({"_id": {"$in": ids}, WRITE_MARK: mark},
                                                                     {"_id": 1})}
    for device, fields in changes:
        if device["_id"] not in applied:
            await change_device(store, device["_id"], set_fields(fields), provisioned, command_id=None)
