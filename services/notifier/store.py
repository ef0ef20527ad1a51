"""The notifier's collections: `recipients` (who, in which language), `deliveries` (each mail's state),
`unsubscribe_tokens` (the one-click links of reminder mails, by the sha256 of the token) and `waiting_mails`
(events whose recipient is not known yet).

nx-27017 (STACK_NOTES §3): every write is a single-document update with `$set`/`$unset` (no
`$push` of subdocuments, no `$ne` in filters); booleans may read back as 1. It also stores a
datetime that `$set` writes into an existing document as a string, which no date range then
matches: so the two times the retry loop compares (`next_attempt_ms`, `lease_until_ms`) are
UTC epoch milliseconds, `updated_at`/`sent_at` are written with `$currentDate`, and only
`created_at` is a datetime from the insert. All of this runs unchanged on MongoDB.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts.base import Event, Page
from contracts.notifier import Delivery, ListDeliveries
from services.runtime.mongo import Database, Document
from services.runtime.outbox import with_events

RETRYING, SENT, FAILED = "retrying", "sent", "failed"
TOUCH = {"updated_at": True}


def delivery_id(event_message_id: str, recipient: str) -> str:
    return f"{event_message_id}:{recipient.lower()}"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class RecipientStore:
    def __init__(self, db: Database) -> None:
        self.collection = db.recipients

    async def create_indexes(self) -> None:
        await self.collection.create_index("email")
        await self.collection.create_index("email_key")
        await self.collection.create_index("customer_number")

    async def remember(self, user_id: str, fields: dict[str, Any], *, version: int) -> bool:
        """Write `fields` unless a newer version is stored; False when it was older and ignored.

        Events without a version (sign-up, activation) pass 0: they fill in a recipient no
        profile update has described yet, and never overwrite one that has.
        """
        newer_than = {"$lt": version} if version > 0 else {"$lte": 0}
        if fields.get("email"):
            fields = {**fields, "email_key": str(fields["email"]).lower()}
        try:
            await self.collection.update_one(
                {"_id": user_id, "version": newer_than},
                {"$set": {**fields, "version": version}, "$currentDate": TOUCH,
                 "$setOnInsert": {"created_at": datetime.now(UTC)}},
                upsert=True)
        except DuplicateKeyError:
            return False  # the recipient exists with a newer version: the upsert's insert collided
        return True

    async def get(self, user_id: str) -> Document | None:
        return await self.collection.find_one({"_id": user_id})

    async def by_email(self, address: str) -> Document | None:
        """The recipient with this address, whatever its case; the last updated if several had it."""
        # `email` as given too: a recipient stored before `email_key` existed has only that.
        return await self.collection.find_one({"$or": [{"email_key": address.lower()}, {"email": address}]},
                                              sort=[("updated_at", DESCENDING)])

    async def of_customer(self, customer_number: str) -> list[Document]:
        """The known users of a customer who have an address, oldest first."""
        cursor = self.collection.find({"customer_number": customer_number}).sort([("created_at", ASCENDING),
                                                                                  ("_id", ASCENDING)])
        return [document async for document in cursor if document.get("email")]

    async def known(self, whos: Iterable[str]) -> set[str]:
        """Which of `whos` (`who_user`, `who_customer`) have an address by now: users by `_id`, customers by a
        user of theirs."""
        users: set[str] = set()
        customers: set[str] = set()
        for who in whos:
            kind, _, key = who.partition(":")
            if kind == USER:
                users.add(key)
            elif kind == CUSTOMER:
                customers.add(key)
        known: set[str] = set()
        if users:
            async for document in self.collection.find({"_id": {"$in": sorted(users)}}, {"email": 1}):
                if document.get("email"):
                    known.add(who_user(document["_id"]))
        if customers:
            async for document in self.collection.find({"customer_number": {"$in": sorted(customers)}},
                                                       {"email": 1, "customer_number": 1}):
                if document.get("email"):
                    known.add(who_customer(document["customer_number"]))
        return known


USER, CUSTOMER = "user", "customer"


def who_user(user_id: str) -> str:
    """Whom a mail waits for: a user, known once `recipients` has their address."""
    return f"{USER}:{user_id}"


def who_customer(customer_number: str) -> str:
    """Whom a mail waits for: any user of a customer, known once `recipients` has one with an address."""
    return f"{CUSTOMER}:{customer_number}"


def majority_language(recipients: Iterable[Document], languages: Sequence[str], *,
                      prefer: str | None = None) -> str | None:
    """The language most of `recipients` saved (only those in `languages`); a tie goes to `prefer` if it is one
    of the tied, else to the first of them in `languages`."""
    counts = Counter(recipient.get("language") for recipient in recipients)
    ranked = sorted((language for language in languages if counts[language]),
                    key=lambda language: (-counts[language], language != prefer, languages.index(language)))
    return ranked[0] if ranked else None


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.collection = db.deliveries

    async def create_indexes(self) -> None:
        await self.collection.create_index([("status", ASCENDING), ("next_attempt_ms", ASCENDING)])
        await self.collection.create_index([("created_at", DESCENDING)])
        await self.collection.create_index("recipient")
        await self.collection.create_index("event")

    async def create(self, document: Document, *, now: datetime, lease: timedelta) -> str | None:
        """Store a new delivery, leased to the caller who sends it at once; its lease id, or None if it existed."""
        lease_id = uuid.uuid4().hex
        try:
            await self.collection.insert_one({
                **document, "status": RETRYING, "attempts": 0, "next_attempt_ms": epoch_ms(now), "last_error": None,
                "lease_until_ms": epoch_ms(now + lease), "lease_id": lease_id, "created_at": now, "updated_at": now,
                "sent_at": None})
        except DuplicateKeyError:
            return None
        return lease_id

    async def create_failed(self, document: Document, *, now: datetime, error: str) -> bool:
        """Store a delivery that no attempt could send (an address no mail can carry) as `failed` at once;
        False if it existed."""
        try:
            await self.collection.insert_one({
                **document, "status": FAILED, "attempts": 0, "next_attempt_ms": epoch_ms(now), "last_error": error,
                "lease_until_ms": 0, "lease_id": None, "created_at": now, "updated_at": now, "sent_at": None})
        except DuplicateKeyError:
            return False
        return True

    async def claim_due(self, *, now: datetime, lease: timedelta) -> Document | None:
        """Lease the delivery whose next attempt is due longest, so no other replica sends it meanwhile."""
        return await self.collection.find_one_and_update(
            {"status": RETRYING, "next_attempt_ms": {"$lte": epoch_ms(now)}, "lease_until_ms": {"$lte": epoch_ms(now)}},
            {"$set": {"lease_until_ms": epoch_ms(now + lease), "lease_id": uuid.uuid4().hex}},
            sort=[("next_attempt_ms", ASCENDING)], return_document=ReturnDocument.AFTER)

    async def mark_sent(self, key: str, lease_id: str, *, attempts: int) -> None:
        # The body is dropped once final: it may hold a one-time link nobody needs any more.
        await self.collection.update_one(
            {"_id": key, "lease_id": lease_id},
            {"$set": {"status": SENT, "attempts": attempts, "last_error": None, "lease_until_ms": 0},
             "$currentDate": {**TOUCH, "sent_at": True}, "$unset": {"message": ""}})

    async def mark_failed(self, key: str, lease_id: str, *, attempts: int, error: str) -> None:
        await self.collection.update_one(
            {"_id": key, "lease_id": lease_id},
            {"$set": {"status": FAILED, "attempts": attempts, "last_error": error, "lease_until_ms": 0},
             "$currentDate": TOUCH, "$unset": {"message": ""}})

    async def retry_later(self, key: str, lease_id: str, *, attempts: int, error: str, at: datetime) -> None:
        await self.collection.update_one(
            {"_id": key, "lease_id": lease_id},
            {"$set": {"status": RETRYING, "attempts": attempts, "next_attempt_ms": epoch_ms(at),
                      "last_error": error, "lease_until_ms": 0},
             "$currentDate": TOUCH})

    async def get(self, key: str) -> Document | None:
        return await self.collection.find_one({"_id": key})

    async def page(self, request: ListDeliveries) -> Page[Delivery]:
        query: Document = {}
        if request.recipient is not None:
            query["recipient"] = request.recipient.lower()
        if request.event is not None:
            query["event"] = request.event
        if request.status is not None:
            query["status"] = request.status
        total = await self.collection.count_documents(query)
        cursor = (self.collection.find(query, {"message": 0})
                  .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
                  .skip((request.page - 1) * request.page_size).limit(request.page_size))
        items = [_delivery(document) async for document in cursor]
        return Page[Delivery](items=items, total=total, page=request.page, page_size=request.page_size)


def _delivery(document: Document) -> Delivery:
    retrying = document["status"] == RETRYING
    return Delivery(
        id=document["_id"], event=document["event"], event_message_id=document["event_message_id"],
        mail=document["mail"], recipient=document["recipient"], language=document["language"],
        subject=document["subject"], status=document["status"], attempts=document["attempts"],
        next_attempt_at=from_epoch_ms(document["next_attempt_ms"]) if retrying else None,
        last_error=document.get("last_error"), created_at=document["created_at"],
        updated_at=document["updated_at"], sent_at=document.get("sent_at"))


UNSUBSCRIBE_TOKENS = "unsubscribe_tokens"
UNUSED, USED = "unused", "used"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UnsubscribeStore:
    """One document per one-click token, keyed by its sha256: the token itself is only in the mail.

    `state` is a string (`unused`, `used`), not a boolean: nx-27017 reads booleans back as 1.
    Using a token writes its `notifier.reminders.unsubscribed` events in the same conditional
    update (outbox), so a second click, or two at once, emits nothing more.
    """

    def __init__(self, db: Database) -> None:
        self.collection = db[UNSUBSCRIBE_TOKENS]

    async def create_indexes(self) -> None:
        await self.collection.create_index("expires_at", expireAfterSeconds=0)

    async def create(self, documents: Sequence[Document]) -> None:
        if documents:
            await self.collection.insert_many([{**document, "state": UNUSED} for document in documents])

    async def discard(self, digests: Sequence[str]) -> None:
        """Remove tokens made for a mail that was not created after all (a copy of the event got there first)."""
        await self.collection.delete_many({"_id": {"$in": list(digests)}, "state": UNUSED})

    async def get(self, digest: str) -> Document | None:
        return await self.collection.find_one({"_id": digest})

    async def use(self, digest: str, events: Sequence[Event]) -> bool:
        """Mark the token used and emit `events` with it; False when it was used already."""
        written = await self.collection.update_one(
            {"_id": digest, "state": UNUSED},
            with_events({"$set": {"state": USED}, "$currentDate": {"used_at": True}}, events))
        return written.modified_count == 1


class WaitingMailStore:
    """One document per (event, message_id, who) that could not be mailed because `who` was not known yet.

    Written once by an insert and deleted by `_id`, never updated; `since` is a `stamp` string (nx-27017 turns
    a datetime `$set` into a naive string; an insert would keep it, but one kind of time everywhere is simpler).
    """

    def __init__(self, db: Database) -> None:
        self.collection = db[WAITING_MAILS]

    async def create_indexes(self) -> None:
        await self.collection.create_index("who")

    async def keep(self, document: Document) -> bool:
        """Store a waiting mail; False when it was there already (a copy of the event)."""
        try:
            await self.collection.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    async def of(self, whos: Sequence[str]) -> list[Document]:
        """The mails waiting for any of `whos`, oldest first."""
        cursor = self.collection.find({"who": {"$in": list(whos)}}).sort([("since", ASCENDING), ("_id", ASCENDING)])
        return [document async for document in cursor]

    async def batch(self, *, after: str | None, limit: int) -> list[Document]:
        """The next `limit` waiting mails by `_id` after `after`, without their bodies."""
        query: Document = {"_id": {"$gt": after}} if after is not None else {}
        cursor = self.collection.find(query, {"body": 0}).sort([("_id", ASCENDING)]).limit(limit)
        return [document async for document in cursor]

    async def get(self, key: str) -> Document | None:
        return await self.collection.find_one({"_id": key})

    async def delete(self, key: str) -> None:
        await self.collection.delete_one({"_id": key})


WAITING_MAILS = "waiting_mails"
