"""The collections of registration: models, devices, proofs of purchase (GridFS), terms accepted."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from gridfs import AsyncGridFSBucket
from gridfs.errors import FileExists, NoFile
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from contracts.base import Event
from contracts.registration import DeviceFilter, ProductModel
from services.runtime.mongo import Database, Document
from services.runtime.outbox import not_applied, with_events, with_outbox

MODELS, DEVICES, CATALOGUE = "models", "devices", "catalogue"
REQUESTS = "requests"  # claims of devices at one location and address changes, waiting for an operator
UPLOADS = "uploads"  # bulk uploads (services/registration/bulk.py), whose final update emits
CLAIM_ATTEMPTS = "claim_attempts"  # per user: the current window of claim attempts and how many it holds
OUTBOX_COLLECTIONS = (CATALOGUE, DEVICES, REQUESTS, UPLOADS)
GRIDFS_CHUNK_BYTES = 255 * 1024  # GridFS's default chunk size


class RegistrationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.models = db[MODELS]
        self.devices = db[DEVICES]
        self.terms = db["terms_accepted"]
        self.requests = db[REQUESTS]
        self.claim_attempts = db[CLAIM_ATTEMPTS]
        self.proofs = AsyncGridFSBucket(db, bucket_name="proofs")

    async def create_indexes(self) -> None:
        await self.devices.create_index("serial_number", unique=True)
        await self.devices.create_index([("customer_number", ASCENDING), ("visible", ASCENDING)])
        await self.devices.create_index("registered_by")
        await self.devices.create_index("location.postal_code")
        await self.requests.create_index([("status", ASCENDING), ("requested_at", ASCENDING)])
        await self.requests.create_index("device_id")

    async def all_models(self) -> list[ProductModel]:
        return [product_model(stored) async for stored in self.models.find({}).sort("_id", ASCENDING)]

    async def model_names(self, text: str | None, page: int, page_size: int) -> tuple[list[Document], int]:
        """The models by name (containing `text`, any case), one page of them, and how many there are."""
        query: Document = {"_id": {"$regex": re.escape(text), "$options": "i"}} if text else {}
        found = self.models.find(query, {"serial_hint": 1}).sort("_id", ASCENDING)
        names = [stored async for stored in found.skip((page - 1) * page_size).limit(page_size)]
        return names, await self.models.count_documents(query)

    async def model(self, name: str) -> ProductModel | None:
        stored = await self.models.find_one({"_id": name})
        return product_model(stored) if stored else None

    async def upsert_models(self, models: list[ProductModel], events: Iterable[Event]) -> None:
        for model in models:
            await self.models.update_one({"_id": model.model}, {"$set": model.model_dump()}, upsert=True)
        # The event rides on the one catalogue document, written once per upsert.
        await self.db[CATALOGUE].update_one({"_id": "catalogue"}, with_events({"$inc": {"upserts": 1}}, events),
                                            upsert=True)

    async def device(self, query: Document) -> Document | None:
        return await self.devices.find_one(query)

    async def insert_device(self, device: Document, events: Iterable[Event], command_id: str | None) -> None:
        """Raises DuplicateKeyError when the serial (or this command's device) exists."""
        fields = {key: value for key, value in device.items() if key != "_id"}
        await self.devices.update_one({"_id": device["_id"], **not_applied(command_id)},
                                      with_events({"$set": fields}, events, command_id=command_id), upsert=True)

    async def insert_devices(self, batch: Sequence[tuple[Document, Sequence[Event]]]) -> list[bool]:
        """Store new devices with their events in one round trip; False where the serial or id exists.

        Plain inserts (`insert_many`, unordered): nx-27017 handles them several times faster than upserts, and a
        device id stored before (the same row, processed again after a crash) collides on `_id` like a serial
        registered before collides on the unique serial index, so either is recognised instead of written twice.
        """
        if not batch:
            return []
        documents = [with_outbox(device, events) for device, events in batch]
        try:
            await self.devices.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            taken = {failure["index"] for failure in error.details["writeErrors"] if failure["code"] == 11000}
            if len(taken) < len(error.details["writeErrors"]):
                raise
            return [index not in taken for index in range(len(batch))]
        return [True] * len(batch)

    async def change_device(self, read: Document, fields: Document, events: Iterable[Event],
                            command_id: str | None) -> bool:
        """Set `fields` with `events` if the device is still at the version it was read at; False if it changed
        since (see `devices.change_device`, which retries)."""
        version: Document = {"version": read["version"]} if "version" in read else {"version": {"$exists": False}}
        result = await self.devices.update_one({"_id": read["_id"], **version, **not_applied(command_id)},
                                               with_events({"$set": fields}, events, command_id=command_id))
        return result.matched_count == 1

    async def find_devices(self, visible_to: Document, filters: DeviceFilter) -> tuple[list[Document], int]:
        conditions: list[Document] = [visible_to]
        for field, path in (("model", "model"), ("city", "location.city"), ("postal_code", "location.postal_code"),
                            ("location", "location.name")):
            value = getattr(filters, field)
            if value:
                conditions.append({path: {"$regex": re.escape(value), "$options": "i"}})
        if filters.serial_number:
            conditions.append({"serial_number": {"$regex": re.escape(filters.serial_number.replace(" ", "")),
                                                 "$options": "i"}})
        if filters.text:
            text = {"$regex": re.escape(filters.text), "$options": "i"}
            conditions.append({"$or": [{path: text} for path in (
                "serial_number", "model", "friendly_name", "location.name", "location.street", "location.city",
                "location.postal_code")]})
        query: Document = {"$and": conditions}
        total = await self.devices.count_documents(query)
        cursor = self.devices.find(query).sort("serial_number", ASCENDING) \
            .skip((filters.page - 1) * filters.page_size).limit(filters.page_size)
        return [device async for device in cursor], total

    async def accepted_terms(self, user_id: str, terms_version: str, privacy_version: str) -> bool:
        """Whether the user's latest acceptance is of these (the vendor's current) versions."""
        latest = await self.terms.find_one({"_id": user_id})
        return latest is not None and latest.get("terms_version") == terms_version \
            and latest.get("privacy_version") == privacy_version

    async def remember_terms(self, user_id: str, terms_version: str, privacy_version: str,
                             accepted_at: datetime | None) -> None:
        """Keep the user's latest acceptance: one that arrives late, after a newer one, changes nothing.

        The write is conditional on the stored acceptance being older (an upsert that finds it newer collides
        on `_id` and is dropped), so events handled in any order, twice or on two replicas at once end with
        the newest. `accepted_at` is kept in epoch milliseconds (nx-27017 would `$set` a date as a string);
        an acceptance without one (from before accounts sent it) counts as older than any dated one.
        """
        at_ms = int(accepted_at.timestamp() * 1000) if accepted_at is not None else 0
        older: Document = {"$or": [{"accepted_at_ms": {"$lt": at_ms} if at_ms else {"$lte": 0}},
                                   {"accepted_at_ms": {"$exists": False}}]}
        try:
            await self.terms.update_one({"_id": user_id, **older}, {"$set": {
                "terms_version": terms_version, "privacy_version": privacy_version, "accepted_at_ms": at_ms}},
                upsert=True)
        except DuplicateKeyError:
            pass  # a newer acceptance is stored already

    async def store_proof(self, file_id: str, device_id: str, filename: str, content_type: str,
                          content: bytes) -> None:
        """Under an id derived from the device, so a registration completed after a crash stores it once.

        GridFS writes the chunks first and the file document last: an earlier run of this registration stored it
        whole, or was cut off in between (the database went away), leaving chunks every later upload collides with
        (nx-27017 raises a plain OperationFailure there, not DuplicateKeyError). Either way it is written again."""
        async def upload() -> None:
            await self.proofs.upload_from_stream_with_id(
                file_id, filename, content, metadata={"device_id": device_id, "content_type": content_type})
        try:
            await upload()
        except (FileExists, OperationFailure):
            # A file document for the leftover, unless it has one, so that deleting it removes its chunks too:
            # nx-27017 refuses to delete chunks whose document never came ("File with id ... not found").
            with contextlib.suppress(OperationFailure):
                await self.db["proofs.files"].insert_one({
                    "_id": file_id, "length": 0, "chunkSize": GRIDFS_CHUNK_BYTES, "uploadDate": datetime.now(UTC),
                    "filename": filename, "metadata": {}})
            with contextlib.suppress(NoFile):
                await self.proofs.delete(file_id)
            await upload()

    # --- failed claims (services/registration/requests.py) ---

    async def take_claim_attempt(self, user_id: str, *, now_ms: int, window_ms: int, limit: int) -> int | None:
        """One of the user's `limit` claim attempts in the current window (which the first attempt opens); the
        window's start, or None when none is left. Atomic (`$inc`), so parallel attempts cannot get past it."""
        for _ in range(10):
            live = await self.claim_attempts.find_one_and_update(
                {"_id": user_id, "window_start": {"$gt": now_ms - window_ms}}, {"$inc": {"count": 1}},
                return_document=ReturnDocument.AFTER)
            if live is not None:
                return int(live["window_start"]) if live["count"] <= limit else None
            try:  # no live window: open one, unless another attempt opened it meanwhile
                opened = await self.claim_attempts.find_one_and_update(
                    {"_id": user_id, "window_start": {"$lte": now_ms - window_ms}},
                    {"$set": {"window_start": now_ms, "count": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:  # MongoDB; nx-27017 answers None instead
                continue
            if opened is not None:
                return now_ms
        return None

    async def give_back_claim_attempt(self, user_id: str, window_start: int) -> None:
        """An attempt that did not fail counts for nothing (if its window is still the current one)."""
        await self.claim_attempts.update_one({"_id": user_id, "window_start": window_start}, {"$inc": {"count": -1}})

    # --- requests (services/registration/requests.py) ---

    async def devices_with_postcode(self, postal_code: str) -> list[Document]:
        """Devices whose location has this postcode, whatever its spacing or case."""
        compact = re.sub(r"\s+", "", postal_code)
        if not compact:
            return []
        pattern = "^\\s*" + "\\s*".join(re.escape(char) for char in compact) + "\\s*$"
        return [device async for device in self.devices.find(
            {"location.postal_code": {"$regex": pattern, "$options": "i"}}).sort("serial_number", ASCENDING)]

    async def insert_request(self, request: Document) -> None:
        """Raises DuplicateKeyError when the request (this command's) exists."""
        await self.requests.insert_one(request)

    async def request(self, request_id: str) -> Document | None:
        return await self.requests.find_one({"_id": request_id})

    async def decide_request(self, request_id: str, fields: Document, events: Iterable[Event],
                             command_id: str | None) -> bool:
        """Marks a pending request decided, with its events; False when it was no longer pending."""
        result = await self.requests.update_one({"_id": request_id, "status": "pending_approval"},
                                                with_events({"$set": fields}, events, command_id=command_id))
        return bool(result.modified_count)

    async def pending_requests(self, kind: str | None, page: int, page_size: int) -> tuple[list[Document], int]:
        query: Document = {"status": "pending_approval", **({"kind": kind} if kind else {})}
        total = await self.requests.count_documents(query)
        cursor = self.requests.find(query).sort([("requested_at", ASCENDING), ("_id", ASCENDING)]) \
            .skip((page - 1) * page_size).limit(page_size)
        return [request async for request in cursor], total


def product_model(stored: Document) -> ProductModel:
    return ProductModel(**{key: value for key, value in stored.items() if key in ProductModel.model_fields})
