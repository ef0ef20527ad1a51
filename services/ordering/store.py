"""The collections of ordering: read models of devices and customers, the consumables catalogue, orders, the guards
that stop double orders, and the counters that number orders.

Timestamps are stored as ISO strings (`2026-12-03T10:11:12.345678Z`): they sort as times, and nx-27017 stores a
datetime that `$set` writes into an existing document as a naive string anyway.

- `devices`: the device as registration's latest event describes it (kept by `version`).
- `customers`: the contracts of each customer as accounts' latest `customer.provisioned` describes them.
- `consumables`: one document per model (`_id` the model's key, see `contracts.ordering.model_key`) with its list of
  items; an upsert replaces the list.
- `delivery_defaults`: per device, the "z. Hd." and "Zusätzl. Info" last saved with `save_as_default`, and the
  customer the device belonged to then.
- `orders`: one document per order, `_id` derived from the placing command, so a command re-run after a crash finds
  its order instead of placing a second one; its events ride in it (outbox).
- `guards`: one document per (device, article) holding the orders of that article for that device that are not
  delivered yet (`open`: order id -> number and time, `count`: how many). Its unique `_id` is what decides between
  two identical orders placed at the same moment: only an update that finds `count: 0` may take it unconfirmed.
- `counters`: one document per year, `seq` incremented atomically for each order number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pymongo import ASCENDING, DESCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from contracts.base import Event
from services.runtime.batching import Lookups
from services.runtime.mongo import Database, Document
from services.runtime.outbox import not_applied, with_events, with_outbox
from services.runtime.readmodels import keep_latest

DEVICES, CUSTOMERS, CONSUMABLES, DEFAULTS, ORDERS, GUARDS, COUNTERS = (
    "devices", "customers", "consumables", "delivery_defaults", "orders", "guards", "counters")
OUTBOX_COLLECTIONS = (ORDERS,)
# Both ways of a first insert into an empty counter or guard can race; each retry follows a write that won.
MAX_ATTEMPTS = 20


class OrderingStore:
    def __init__(self, db: Database, lookups: Lookups | None = None) -> None:
        """`lookups`: the running copy's, so the reads by `_id` of commands handled at once are one `find`."""
        self.db = db
        self.lookups = lookups or Lookups(db)
        self.devices = db[DEVICES]
        self.customers = db[CUSTOMERS]
        self.consumables = db[CONSUMABLES]
        self.defaults = db[DEFAULTS]
        self.orders = db[ORDERS]
        self.guards = db[GUARDS]
        self.counters = db[COUNTERS]

    async def create_indexes(self) -> None:
        await self.devices.create_index([("customer_number", ASCENDING), ("contract_number", ASCENDING)])
        await self.devices.create_index("registered_by")
        await self.devices.create_index("claimants")
        await self.orders.create_index("order_number", unique=True)
        await self.orders.create_index([("viewers", ASCENDING), ("placed_at", DESCENDING)])
        await self.orders.create_index([("contract_key", ASCENDING), ("placed_at", DESCENDING)])
        await self.orders.create_index("device_ids")
        await self.orders.create_index([("status", ASCENDING), ("placed_at", ASCENDING)])

    # --- read models ------------------------------------------------------------------------------

    async def remember_device(self, device_id: str, fields: Document, version: int) -> bool:
        return await keep_latest(self.devices, device_id, fields, version)

    async def remember_customer(self, customer_number: str, contracts: Document, version: int) -> bool:
        return await keep_latest(self.customers, customer_number, {"contracts": contracts}, version)

    async def devices_where(self, query: Document, projection: Document | None = None) -> list[Document]:
        """Devices by a query without `$or`/`$and` (nx-27017 reads the whole collection for those): by `_id`, by an
        indexed field; judge visibility on the result (`services.runtime.readmodels.sees`)."""
        return [device async for device in self.devices.find(query, projection)]

    async def devices_by_id(self, device_ids: Iterable[str]) -> dict[str, Document]:
        return await self.lookups.of(DEVICES).many(device_ids)

    async def customers_by_number(self, numbers: Iterable[str]) -> dict[str, Document]:
        return await self.lookups.of(CUSTOMERS).many(numbers)

    # --- the catalogue ------------------------------------------------------------------------------

    async def replace_consumables(self, key: str, model: str, items: list[Document], updated_at: str) -> None:
        # A replace, not `$push`: nx-27017 corrupts subdocuments pushed into an existing document.
        await self.consumables.replace_one({"_id": key}, {"_id": key, "model": model, "items": items,
                                                          "updated_at": updated_at}, upsert=True)

    async def consumables_of(self, keys: Iterable[str]) -> dict[str, list[Document]]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        return {document["_id"]: list(document.get("items") or [])
                async for document in self.consumables.find({"_id": {"$in": wanted}})}

    # --- delivery defaults --------------------------------------------------------------------------

    async def defaults_of(self, device_id: str, view: str) -> Document | None:
        return await self.defaults.find_one({"_id": f"{device_id}|{view}"})

    async def save_defaults(self, defaults: Sequence[tuple[str, str, Document]], saved_at: str) -> None:
        """Keep each device's `fields` in that view unless a later order saved others meanwhile (a command re-run
        after a crash must not undo a later choice)."""
        for device_id, view, fields in defaults:
            try:
                await self.defaults.update_one({"_id": f"{device_id}|{view}", "saved_at": {"$lt": saved_at}},
                                               {"$set": {**fields, "saved_at": saved_at}}, upsert=True)
            except DuplicateKeyError:
                pass  # saved by a later order (or by this one before a crash): that stays

    # --- order numbers ------------------------------------------------------------------------------

    async def next_number(self, year: int) -> int:
        """The next sequence number of `year`, unique across replicas (one atomic `$inc`)."""
        for _ in range(MAX_ATTEMPTS):
            try:
                counter = await self.counters.find_one_and_update(
                    {"_id": f"orders-{year}"}, {"$inc": {"seq": 1}}, upsert=True,
                    return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                continue  # two first orders of the year created the counter at once: the other one won
            assert counter is not None, "an upsert returning the document after the update"
            return int(counter["seq"])
        raise RuntimeError("no order number after repeated collisions")

    # --- guards against double orders ----------------------------------------------------------------

    async def guards_of(self, keys: Iterable[str]) -> dict[str, Document]:
        return await self.lookups.of(GUARDS).many(sorted(set(keys)))

    def guard_entry(self, key: str, order_id: str, entry: Document, *, exclusive: bool) -> UpdateOne:
        """For `ctx.write_once`: enter `order_id` as an open order of (device, article) `key`. Exclusive: only while
        no order holds the guard; else once per order. When the condition does not hold, the upsert's insert collides
        on `_id` and the write stops there."""
        condition: Document = {"count": 0} if exclusive else {f"open.{order_id}": {"$exists": False}}
        return UpdateOne({"_id": key, **condition}, {"$set": {f"open.{order_id}": entry}, "$inc": {"count": 1}},
                         upsert=True, namespace=self.guards.full_name)

    async def release_guards(self, keys: Iterable[str], order_id: str, *,
                             entered: Mapping[str, Document] | None = None) -> None:
        """Remove `order_id` from the guards (delivered, refused, or never stored); harmless when done before.
        `entered`: only the entries as given per key (an attempt's, by its `attempt` token, else its time), so a
        take-back never removes what another copy of the same command entered meanwhile."""
        for key in sorted(set(keys)):
            condition: Document = {f"open.{order_id}": {"$exists": True}}
            if entered is not None:
                if key not in entered:
                    continue
                entry = entered[key]
                condition = {f"open.{order_id}.attempt": entry["attempt"]} if entry.get("attempt") else \
                    {f"open.{order_id}.at": entry.get("at")}
            await self.guards.update_one({"_id": key, **condition},
                                         {"$unset": {f"open.{order_id}": ""}, "$inc": {"count": -1}})

    # --- orders -------------------------------------------------------------------------------------

    async def order_by_id(self, order_id: str) -> Document | None:
        return await self.lookups.of(ORDERS).one(order_id)

    async def order(self, query: Document) -> Document | None:
        return await self.orders.find_one(query, {"outbox": 0})

    async def orders_by_id(self, order_ids: Iterable[str]) -> dict[str, Document]:
        wanted = sorted(set(order_ids))
        return {order["_id"]: order async for order in self.orders.find({"_id": {"$in": wanted}}, {"outbox": 0})}

    def order_insert(self, order: Document, events: Sequence[Event]) -> InsertOne[Document]:
        """For `ctx.write_once`: the order with its events."""
        return InsertOne(with_outbox(order, events), namespace=self.orders.full_name)

    async def change_status(self, order_number: str, *, from_status: str, fields: Document, events: Sequence[Event],
                            command_id: str | None) -> bool:
        """Move the order from `from_status` with `fields` and its events, in one write; False when it was not in
        `from_status` (or this command changed it before)."""
        changed = await self.orders.update_one(
            {"order_number": order_number, "status": from_status, **not_applied(command_id)},
            with_events({"$set": fields}, events, command_id=command_id))
        return changed.modified_count == 1

    async def orders_page(self, query: Document, sort: list[tuple[str, int]], page: int,
                          page_size: int) -> tuple[list[Document], int]:
        # The total from the matching ids: nx-27017 answers `count_documents` through aggregation, ~0.1 s at best.
        total = len(await self.orders.find(query, {"_id": 1}).to_list())
        cursor = self.orders.find(query, {"outbox": 0}).sort(sort).skip((page - 1) * page_size).limit(page_size)
        return [order async for order in cursor], total
