"""The collections of metering: read models of devices and customers, readings, reminders, overdue devices.

Dates are stored as ISO strings (`YYYY-MM-DD`): they sort and compare as dates, and nx-27017 stores a datetime that
`$set` writes into an existing document as a naive string anyway.

- `devices`: the device as registration's latest event describes it (kept by `version`), plus a cache of its last
  and first value per counter (`last`, `first`, `last_seq`) for the lists and the plausibility check.
- `customers`: the contracts of each customer as accounts' latest `customer.provisioned` describes them.
- `readings`: one document per reading, `_id` `<device_id>:<seq>`: the unique id is what decides between two
  readings of one device submitted at the same moment, and its `metering.reading.submitted` rides in it (outbox).
- `reminders`: one document per (recipient, period, kind), inserted once whatever the number of replicas, with its
  `metering.reminder.due` (outbox) and the hash of its personal link.
- `overdue`: one document per (device, period) whose window closed without a reading, with its event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from contracts.base import Event
from services.runtime.batching import Lookups
from services.runtime.mongo import Database, Document
from services.runtime.outbox import with_outbox
from services.runtime.readmodels import keep_latest

DEVICES, CUSTOMERS, READINGS, REMINDERS, OVERDUE, SCHEDULE = (
    "devices", "customers", "readings", "reminders", "overdue", "schedule")
OUTBOX_COLLECTIONS = (READINGS, REMINDERS, OVERDUE)
SEQ_DIGITS = 10


def reading_key(device_id: str, seq: int) -> str:
    return f"{device_id}:{seq:0{SEQ_DIGITS}d}"


class MeteringStore:
    def __init__(self, db: Database, lookups: Lookups | None = None) -> None:
        """`lookups`: the running copy's, so the reads by `_id` of commands handled at once are one `find`."""
        self.db = db
        self.lookups = lookups or Lookups(db)
        self.devices = db[DEVICES]
        self.customers = db[CUSTOMERS]
        self.readings = db[READINGS]
        self.reminders = db[REMINDERS]
        self.overdue = db[OVERDUE]
        self.schedule = db[SCHEDULE]

    async def create_indexes(self) -> None:
        await self.devices.create_index("serial_number")
        await self.devices.create_index([("customer_number", ASCENDING), ("contract_number", ASCENDING)])
        await self.devices.create_index("registered_by")
        await self.devices.create_index("claimants")
        await self.readings.create_index([("device_id", ASCENDING), ("seq", DESCENDING)])
        await self.readings.create_index([("period_end", ASCENDING), ("device_id", ASCENDING)])
        # Unique: a command re-run after a crash collides with the reading it stored, rather than storing a second
        # (`readings.record` looks for it only then). Partial: readings stored without a command need no entry.
        # Nothing is dropped first: nx-27017 names indexes its own way and drops this one by any name asked, which
        # would leave copies already running without it (a database of before keeps its plain index beside it).
        await self.readings.create_index("command_id", name="command_id_once", unique=True,
                                         partialFilterExpression={"command_id": {"$type": "string"}})
        await self.reminders.create_index("link_hash")
        await self.overdue.create_index([("period_end", ASCENDING), ("serial_number", ASCENDING)])

    # --- read models ------------------------------------------------------------------------------

    async def remember_device(self, device_id: str, fields: Document, version: int) -> bool:
        """Keep the device as an event describes it unless a newer version is stored; False when ignored."""
        return await keep_latest(self.devices, device_id, fields, version, on_insert={"last_seq": 0})

    async def remember_customer(self, customer_number: str, contracts: Document, version: int) -> bool:
        return await keep_latest(self.customers, customer_number, {"contracts": contracts}, version)

    async def device(self, query: Document) -> Document | None:
        return await self.devices.find_one(query)

    async def device_by_id(self, device_id: str) -> Document | None:
        return await self.lookups.of(DEVICES).one(device_id)

    async def customer(self, customer_number: str | None) -> Document | None:
        return await self.lookups.of(CUSTOMERS).one(customer_number) if customer_number else None

    async def customers_by_number(self, numbers: Iterable[str]) -> dict[str, Document]:
        return await self.lookups.of(CUSTOMERS).many(numbers)

    # --- readings --------------------------------------------------------------------------------

    async def latest_reading(self, device_id: str) -> Document | None:
        return await self.readings.find_one({"device_id": device_id}, sort=[("seq", DESCENDING)])

    async def readings_by_commands(self, command_ids: Sequence[str]) -> dict[str, Document]:
        """The readings stored by these commands before (re-run after a crash), by command id."""
        if not command_ids:
            return {}
        return {reading["command_id"]: reading async for reading in self.readings.find(
            {"command_id": {"$in": list(command_ids)}}, {"outbox": 0})}

    async def insert_readings(self, batch: Sequence[tuple[Document, Sequence[Event]]]) -> list[bool]:
        """Insert readings with their events in one round trip; False where the `_id` (device and sequence
        number) was taken: another reading of that device came first, or the cache it was numbered from is behind."""
        if not batch:
            return []
        documents = [with_outbox(reading, events) for reading, events in batch]
        try:
            await self.readings.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            taken = {failure["index"] for failure in error.details["writeErrors"] if failure["code"] == 11000}
            if len(taken) < len(error.details["writeErrors"]):
                raise
            return [index not in taken for index in range(len(batch))]
        return [True] * len(batch)

    def reading_writes(self, reading: Document, events: Sequence[Event], cache: Document, *,
                       command_id: str | None) -> list[InsertOne[Document] | UpdateOne]:
        """One reading as `ctx.write_once` applies it, with its command's claim: the reading with its events and the
        mark of its command (an insert colliding on `_id` means another reading of the device came first), then the
        device's cache advanced to it."""
        return [InsertOne(with_outbox(reading, events, command_id=command_id), namespace=self.readings.full_name),
                self._cache_advance(reading["device_id"], reading["seq"], cache, namespace=self.devices.full_name)]

    async def advance_caches(self, updates: Sequence[tuple[str, int, Document]]) -> None:
        """Set each device's cache (`fields`) to the reading numbered `seq`, unless a later one is cached."""
        if updates:
            await self.devices.bulk_write([self._cache_advance(device_id, seq, fields)
                                           for device_id, seq, fields in updates], ordered=False)

    @staticmethod
    def _cache_advance(device_id: str, seq: int, fields: Document, namespace: str | None = None) -> UpdateOne:
        return UpdateOne({"_id": device_id, "last_seq": {"$lt": seq}},  # set to 0 when first stored
                         {"$set": {**fields, "last_seq": seq}}, namespace=namespace)

    async def readings_of(self, device_ids: Sequence[str], *, first_period: str | None = None,
                          last_period: str | None = None, limit: int = 0) -> list[Document]:
        query: Document = {"device_id": {"$in": list(device_ids)}}
        period: Document = {}
        if first_period:
            period["$gte"] = first_period
        if last_period:
            period["$lte"] = last_period
        if period:
            query["period_end"] = period
        cursor = self.readings.find(query, {"outbox": 0}).sort([("device_id", ASCENDING), ("seq", DESCENDING)])
        if limit:
            cursor = cursor.limit(limit)
        return [reading async for reading in cursor]

    async def devices_read_for(self, period_end: str, device_ids: Sequence[str] | None = None) -> set[str]:
        """The devices with a reading dated in the window of the period ending `period_end`."""
        query: Document = {"period_end": period_end, "in_window": {"$in": [True, 1]}}
        if device_ids is not None:
            query["device_id"] = {"$in": list(device_ids)}
        return {reading["device_id"] async for reading in self.readings.find(query, {"device_id": 1})}

    # --- reminders and overdue devices ---------------------------------------------------------------

    async def insert_once(self, collection: str, batch: Sequence[tuple[Document, Sequence[Event]]]) -> int:
        """Insert documents with their events where their `_id` is new; how many were. The unique `_id` is what
        makes a reminder or an overdue notice go once, however many replicas run the schedule at once."""
        if not batch:
            return 0
        documents = [with_outbox(document, events) for document, events in batch]
        try:
            result = await self.db[collection].insert_many(documents, ordered=False)
        except BulkWriteError as error:
            if any(failure["code"] != 11000 for failure in error.details["writeErrors"]):
                raise
            return int(error.details["nInserted"])
        return len(result.inserted_ids)

    async def existing_ids(self, collection: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 1000):
            async for document in self.db[collection].find({"_id": {"$in": list(ids[start:start + 1000])}},
                                                           {"_id": 1}):
                found.add(document["_id"])
        return found

    async def reminder_by_link(self, link_hash: str) -> Document | None:
        return await self.reminders.find_one({"link_hash": link_hash}, {"outbox": 0})

    async def overdue_page(self, period_end: str, page: int, page_size: int) -> tuple[list[Document], int]:
        query = {"period_end": period_end}
        total = await self.overdue.count_documents(query)
        cursor = self.overdue.find(query, {"outbox": 0}).sort("serial_number", ASCENDING) \
            .skip((page - 1) * page_size).limit(page_size)
        return [document async for document in cursor], total

    async def last_scheduled_day(self) -> str | None:
        state = await self.schedule.find_one({"_id": "daily"})
        return state.get("last_day") if state else None

    async def mark_scheduled(self, day: str) -> None:
        try:
            await self.schedule.update_one({"_id": "daily", "last_day": {"$lt": day}}, {"$set": {"last_day": day}},
                                           upsert=True)
        except DuplicateKeyError:
            pass  # another replica marked this day or a later one

