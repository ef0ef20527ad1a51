"""The collections of ticketing: the read model of devices, tickets, the guards that keep one open ticket per device,
and the counter that numbers tickets.

Timestamps are stored as ISO strings (`2026-12-03T10:11:12.345678Z`): they sort as times, and nx-27017 stores a
datetime that `$set` writes into an existing document as a naive string anyway.

- `devices`: the device as registration's latest event describes it (kept by `version`); looked up by `_id` only.
- `tickets`: one document per ticket, `_id` derived from the opening command (`t-<command id>`), so a command re-run
  after a crash finds its ticket instead of opening a second one. Its events ride in it (outbox); `history` and
  `notes` are maps keyed by entry id (no `$push` of subdocuments: nx-27017 corrupts them).
- `open_tickets`: one guard per device (`_id` the device id): `ticket_id` of the ticket holding it (None when free),
  `seq` its project number, `count` how many tickets the device had, `at` when it was taken, and who may see the
  holder (`viewers`, `contract_key`), so a refused caller can be told the number even before the ticket is stored.
  Its unique `_id` decides between two tickets opened at the same moment.
- `counters`: one document (`tickets`), `seq` incremented atomically for each project number.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING, DESCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from contracts.base import Event
from services.runtime.batching import Lookups
from services.runtime.mongo import Database, Document
from services.runtime.outbox import not_applied, with_events, with_outbox
from services.runtime.readmodels import keep_latest

DEVICES, TICKETS, GUARDS, COUNTERS = "devices", "tickets", "open_tickets", "counters"
OUTBOX_COLLECTIONS = (TICKETS,)
COUNTER_ID = "tickets"
# The first insert of the counter can race; each retry follows a write that won.
MAX_ATTEMPTS = 20


class TicketingStore:
    def __init__(self, db: Database, lookups: Lookups | None = None) -> None:
        """`lookups`: the running copy's, so the reads by `_id` of commands handled at once are one `find`."""
        self.db = db
        self.lookups = lookups or Lookups(db)
        self.devices = db[DEVICES]
        self.tickets = db[TICKETS]
        self.guards = db[GUARDS]
        self.counters = db[COUNTERS]

    async def create_indexes(self) -> None:
        # Devices are only looked up by `_id`: their read model needs no index of its own.
        await self.tickets.create_index("ticket_number", unique=True)
        await self.tickets.create_index([("viewers", ASCENDING), ("opened_at", DESCENDING)])
        await self.tickets.create_index([("contract_key", ASCENDING), ("opened_at", DESCENDING)])
        await self.tickets.create_index("device_id")
        await self.tickets.create_index([("status", ASCENDING), ("opened_at", ASCENDING)])

    # --- read model ---------------------------------------------------------------------------------

    async def remember_device(self, device_id: str, fields: Document, version: int) -> bool:
        return await keep_latest(self.devices, device_id, fields, version)

    async def device(self, device_id: str) -> Document | None:
        return await self.lookups.of(DEVICES).one(device_id)

    # --- numbers ------------------------------------------------------------------------------------

    async def next_seq(self) -> int:
        """The next value of the ticket counter (1, 2, ...), unique across replicas (one atomic `$inc`)."""
        for _ in range(MAX_ATTEMPTS):
            try:
                counter = await self.counters.find_one_and_update(
                    {"_id": COUNTER_ID}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                continue  # two first tickets created the counter at once: the other one won
            if counter is None:
                continue  # nx-27017 answers a lost upsert with nothing rather than DuplicateKeyError
            return int(counter["seq"])
        raise RuntimeError("no ticket number after repeated collisions")

    # --- one open ticket per device -----------------------------------------------------------------

    async def guard(self, device_id: str) -> Document | None:
        return await self.lookups.of(GUARDS).one(device_id)

    def take_guard(self, device_id: str, ticket_id: str, fields: Document, *, count: int | None) -> UpdateOne:
        """For `ctx.write_once`: hold the device's guard for `ticket_id`, its count of the device's tickets counted up
        from `count`, if nobody holds it and the count is still `count` (None: a guard never written). Otherwise the
        upsert's insert collides on `_id` and the write stops there.

        `ticket_id: None` (and `count: None`) match a field set to null and a missing one, on MongoDB and on
        nx-27017 alike (tests/ticketing/test_guards.py)."""
        return UpdateOne({"_id": device_id, "ticket_id": None, "count": count},
                         {"$set": {**fields, "ticket_id": ticket_id, "count": (count or 0) + 1}},
                         upsert=True, namespace=self.guards.full_name)

    def refresh_guard(self, device_id: str, ticket_id: str, at: str) -> UpdateOne:
        """For `ctx.write_once`: the guard's time set to `at` if `ticket_id` still holds it; otherwise the upsert's
        insert collides on `_id` and the write stops there."""
        return UpdateOne({"_id": device_id, "ticket_id": ticket_id}, {"$set": {"at": at}}, upsert=True,
                         namespace=self.guards.full_name)

    async def release_guard(self, device_id: str, ticket_id: str, *, taken_at: str | None = None) -> bool:
        """Free the device's guard if `ticket_id` holds it (resolved, cancelled, or never stored), and, given
        `taken_at`, only if it was not refreshed since it was read; harmless when it was freed before."""
        condition: Document = {"_id": device_id, "ticket_id": ticket_id}
        if taken_at is not None:
            condition["at"] = taken_at
        freed = await self.guards.update_one(condition, {"$set": {"ticket_id": None}})
        return freed.modified_count == 1

    # --- tickets ------------------------------------------------------------------------------------

    async def ticket_by_id(self, ticket_id: str) -> Document | None:
        return await self.lookups.of(TICKETS).one(ticket_id)

    async def ticket(self, query: Document) -> Document | None:
        return await self.tickets.find_one(query, {"outbox": 0})

    def ticket_insert(self, ticket: Document, events: Sequence[Event]) -> InsertOne[Document]:
        """For `ctx.write_once`: the ticket with its events. Not marked with its command: a ticket stored before
        collides, so the command answers with that ticket's number."""
        return InsertOne(with_outbox(ticket, events), namespace=self.tickets.full_name)

    async def change(self, ticket_number: str, *, status: str, fields: Document, events: Sequence[Event],
                     command_id: str | None, inc: Document | None = None, condition: Document | None = None) -> bool:
        """Write `fields` (and `inc`) with the events into the ticket while it is in `status` and matches
        `condition`, once per command; False when it did not match (moved on, or changed by this command before)."""
        update: Document = {"$set": fields}
        if inc:
            update["$inc"] = inc
        changed = await self.tickets.update_one(
            {"ticket_number": ticket_number, "status": status, **(condition or {}), **not_applied(command_id)},
            with_events(update, events, command_id=command_id))
        return changed.modified_count == 1

    async def tickets_page(self, query: Document, sort: list[tuple[str, int]], page: int,
                           page_size: int) -> tuple[list[Document], int]:
        # The total from the matching ids: nx-27017 answers `count_documents` through aggregation, ~0.1 s at best.
        total = len(await self.tickets.find(query, {"_id": 1}).to_list())
        cursor = self.tickets.find(query, {"outbox": 0}).sort(sort).skip((page - 1) * page_size).limit(page_size)
        return [ticket async for ticket in cursor], total
