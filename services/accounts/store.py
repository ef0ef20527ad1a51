"""The collections of accounts: users, sessions, customers, contacts, sign-in failures, installed base."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts.base import Event
from services.accounts.domain import FAILURE_WINDOW, LOCKOUT, Attempt, looks_like_email
from services.runtime.mongo import Database, Document, as_datetime
from services.runtime.outbox import not_applied, with_events

USERS, SESSIONS, CUSTOMERS, CONTACTS = "users", "sessions", "customers", "contacts"
OUTBOX_COLLECTIONS = (USERS, SESSIONS, CUSTOMERS)
UNCONFIRMED_UNTIL = "unconfirmed_expires_at"  # set at sign-up (a real date), removed at confirmation


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.users = db[USERS]
        self.sessions = db[SESSIONS]
        self.customers = db[CUSTOMERS]
        self.contacts = db[CONTACTS]
        self.failures = db["login_failures"]
        self.mail_requests = db["mail_requests"]
        self.installed_base = db["installed_base"]

    async def create_indexes(self) -> None:
        await self.users.create_index("email_key", unique=True)
        await self.users.create_index("username_key", unique=True)
        await self.users.create_index("confirmation_digest")
        await self.users.create_index("reset_digest")
        await self.users.create_index([("status", ASCENDING), ("created_at", ASCENDING)])
        await self.users.create_index(UNCONFIRMED_UNTIL, expireAfterSeconds=0)
        await self.sessions.create_index("expires_at", expireAfterSeconds=0)
        await self.sessions.create_index("user_id")
        await self.contacts.create_index("owner")
        await self.failures.create_index("expires_at", expireAfterSeconds=0)
        await self.mail_requests.create_index("expires_at", expireAfterSeconds=0)

    # --- users -------------------------------------------------------------------------------

    async def user(self, user_id: str) -> Document | None:
        return await self.users.find_one({"_id": user_id})

    async def user_by_login(self, login_key: str) -> Document | None:
        """By e-mail when the login looks like one, else by username: never one for the other, so a
        username equal to someone's address (possible before usernames refused `@`) takes nothing over."""
        field = "email_key" if looks_like_email(login_key) else "username_key"
        return await self.users.find_one({field: login_key})

    async def user_by_email(self, email_key: str) -> Document | None:
        return await self.users.find_one({"email_key": email_key})

    async def taken(self, *, email_key: str, username_key: str) -> str | None:
        """`email_taken` or `username_taken` when another user has them."""
        if await self.users.find_one({"email_key": email_key}, {"_id": 1}):
            return "email_taken"
        if await self.users.find_one({"username_key": username_key}, {"_id": 1}):
            return "username_taken"
        return None

    async def drop_expired_sign_ups(self, now: datetime, *, email_key: str, username_key: str) -> None:
        """Unconfirmed accounts whose link has expired hold their address and username no more.

        The TTL index removes them too, but only every minute or so (and not those created before
        it existed). The delete matches the digest read, so a link resent meanwhile keeps the account.
        """
        query = {"$or": [{"email_key": email_key}, {"username_key": username_key}], "status": "pending_confirmation"}
        async for user in self.users.find(query, {"confirmation_digest": 1, "confirmation_expires_at": 1}):
            expires_at = as_datetime(user.get("confirmation_expires_at"))
            if expires_at is not None and expires_at < now:
                await self.users.delete_one({"_id": user["_id"], "status": "pending_confirmation",
                                             "confirmation_digest": user.get("confirmation_digest")})

    async def insert_user(self, user: Document, events: Iterable[Event], command_id: str | None) -> None:
        """Raises DuplicateKeyError when the e-mail, username or id exists already."""
        fields = {key: value for key, value in user.items() if key != "_id"}
        await self.users.update_one({"_id": user["_id"], **not_applied(command_id)},
                                    with_events({"$set": fields}, events, command_id=command_id), upsert=True)

    async def change_user(self, match: Document, update: Document, events: Iterable[Event] = (),
                          command_id: str | None = None) -> Document | None:
        """Apply `update` to the user matching `match` (and not changed by this command yet); the new document."""
        return await self.users.find_one_and_update(
            {**match, **not_applied(command_id)}, with_events(update, events, command_id=command_id),
            return_document=ReturnDocument.AFTER)

    async def pending_verifications(self, skip: int, limit: int) -> tuple[list[Document], int]:
        query = {"status": "pending_verification"}
        total = await self.users.count_documents(query)
        cursor = self.users.find(query).sort("created_at", ASCENDING).skip(skip).limit(limit)
        return [user async for user in cursor], total

    # --- sessions ----------------------------------------------------------------------------

    async def add_session(self, session: Document) -> None:
        await self.sessions.insert_one(session)

    async def live_sessions(self, user_id: str, *, keep: str | None) -> list[Document]:
        """The user's sessions not revoked yet, but `keep`."""
        query = {"user_id": user_id, "revoked_at": None, "_id": {"$nin": [keep]}}
        return [session async for session in self.sessions.find(query, {"_id": 1, "expires_at": 1})]

    async def drop_session(self, session_id: str) -> None:
        await self.sessions.delete_one({"_id": session_id})

    async def has_password_hash(self, user_id: str, password_hash: str) -> bool:
        return await self.users.find_one({"_id": user_id, "password_hash": password_hash}, {"_id": 1}) is not None

    async def revoke_session(self, session_id: str, now: datetime, events: Iterable[Event]) -> bool:
        revoked = await self.sessions.update_one(
            {"_id": session_id, "revoked_at": None}, with_events({"$set": {"revoked_at": now}}, events))
        return bool(revoked.modified_count)

    # --- sign-in failures and mail requests ---------------------------------------------------

    async def count_attempt(self, key: str, now: datetime) -> Attempt:
        """Count a sign-in attempt under `key` in one atomic write; what it is within its window.

        Read-then-replace lost counts under concurrency (30 parallel guesses stored 2). Times
        are epoch milliseconds: nx-27017 turns dates `$set` on an existing document into
        strings. A window past its end (and past any lock) is removed first, so the upsert
        starts a fresh one; `expires_at` (a real date, set on insert) lets the TTL index
        clear forgotten windows.
        """
        now_ms = epoch_ms(now)
        await self.failures.delete_one({"_id": key, "stale_after_ms": {"$lte": now_ms}})
        window_end_ms = now_ms + epoch_ms_of(FAILURE_WINDOW)
        fresh = {"window_start_ms": now_ms, "stale_after_ms": window_end_ms, "locked_until_ms": 0,
                 "expires_at": now + FAILURE_WINDOW + LOCKOUT + timedelta(minutes=1)}
        update = {"$inc": {"attempts": 1}, "$setOnInsert": fresh}
        try:
            found = await self.failures.find_one_and_update({"_id": key}, update, upsert=True,
                                                            return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # two upserts raced to insert: the other one's document exists now
            found = await self.failures.find_one_and_update({"_id": key}, update, return_document=ReturnDocument.AFTER)
        assert found is not None
        locked_until_ms = int(found.get("locked_until_ms") or 0)
        return Attempt(int(found["attempts"]), from_epoch_ms(locked_until_ms) if locked_until_ms else None)

    async def lock(self, key: str, until: datetime) -> None:
        # $max: concurrent failures agree on the latest end whatever their order.
        until_ms = epoch_ms(until)
        await self.failures.update_one({"_id": key}, {"$max": {"locked_until_ms": until_ms,
                                                               "stale_after_ms": until_ms}})

    async def clear_failures(self, key: str) -> None:
        await self.failures.delete_one({"_id": key})

    async def count_mail_request(self, kind: str, email_key: str, now: datetime, window_end: datetime) -> int:
        """How many mails of this kind this address asked for in the current window, this one included."""
        key = f"{kind}:{email_key}"
        found = await self.mail_requests.find_one_and_update(
            {"_id": key}, {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": window_end}},
            upsert=True, return_document=ReturnDocument.AFTER)
        assert found is not None
        return int(found["count"])

    # --- customers, contacts, installed base ----------------------------------------------------

    async def customer(self, customer_number: str) -> Document | None:
        return await self.customers.find_one({"_id": customer_number})

    async def upsert_customer(self, customer_number: str, read: Document | None, fields: Document,
                              events: Iterable[Event], command_id: str | None) -> bool:
        """Set `fields` with `events` if the customer is still as `read` (its `version`, or none; `read` None: no
        such customer, inserted by this upsert); False if another write came first (see `handlers.provision_customer`,
        which reads again and retries)."""
        version: Document = {"version": {"$exists": False}} if read is None or "version" not in read \
            else {"version": read["version"]}
        try:
            result = await self.customers.update_one(
                {"_id": customer_number, **version, **not_applied(command_id)},
                with_events({"$set": fields}, events, command_id=command_id), upsert=read is None)
        except DuplicateKeyError:
            return False  # inserted by another write since it was read
        return result.matched_count == 1 or result.upserted_id is not None

    async def contacts_of(self, owner: str) -> list[Document]:
        return [contact async for contact in self.contacts.find({"owner": owner}).sort("name", ASCENDING)]

    async def add_contact(self, contact: Document) -> None:
        await self.contacts.update_one({"_id": contact["_id"]}, {"$setOnInsert": contact}, upsert=True)

    async def serial_owner(self, serial_number: str) -> str | None:
        device = await self.installed_base.find_one({"_id": serial_key(serial_number)})
        return str(device["customer_number"]) if device else None

    async def remember_device(self, serial_number: str, customer_number: str, version: int) -> None:
        key = serial_key(serial_number)
        known = await self.installed_base.find_one({"_id": key}, {"version": 1})
        if known is not None and known.get("version", 0) > version:
            return  # a newer copy arrived first
        await self.installed_base.update_one(
            {"_id": key}, {"$set": {"customer_number": customer_number, "version": version}}, upsert=True)


def serial_key(serial_number: str) -> str:
    return serial_number.strip().upper()


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    return (page - 1) * page_size, page_size


def without_private(user: Document) -> dict[str, Any]:
    return {key: value for key, value in user.items() if not key.endswith(("_digest", "_hash"))}


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def epoch_ms_of(span: timedelta) -> int:
    return round(span.total_seconds() * 1000)


def from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)
