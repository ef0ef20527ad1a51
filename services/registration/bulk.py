"""registration: bulk registration from Excel files, processed in the background.

`bulk_upload` stores the file (GridFS bucket `uploads`) and an `uploads` document and answers at
once with `queued`. A background loop on every replica claims queued uploads one at a time with
a lease (`find_one_and_update`), so two replicas never process the same upload, and users take turns
(`claim_next`): one user's hundred uploads delay another's by at most one upload each. One upload at a
time per replica, every part of it bounded before openpyxl reads it (`excel.py`), bounds the memory; one left
`processing` by a replica that died is taken over once its lease runs out. Each row's device_id
is derived from (upload_id, row number), so a row registered before the crash is recognised
(its device exists under that id) and counted as registered, not rejected, on the second run.

Status: `queued` → `processing` → `processed` | `failed` (the whole file refused, with `reason`).
`processed` = rows registered, `unprocessed` = rows rejected (the OKI upload list's columns).
The final update carries `registration.bulk_upload.completed` through the outbox.
`bulk_result`: `not_found` for another user's upload or a failed one (it has no result file),
`conflict` while the upload is still queued or processing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import FileExists
from pydantic import ValidationError
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts import registration as api
from contracts.base import FileObject, Page
from contracts.errors import message_for
from services.registration import domain, excel
from services.registration.handlers import Prefetched, Prepared, prefetch, prepare, terms_accepted
from services.registration.settings import FILE_PREFETCH, RegistrationSettings, registration_settings
from services.registration.store import UPLOADS, RegistrationStore
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.instance import Instance
from services.runtime.mongo import Database, Document, as_datetime
from services.runtime.outbox import with_events
from services.runtime.service import Router, ServiceInstance
from services.runtime.tokens import Claims, Role

log = logging.getLogger(__name__)
router = Router()


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# RabbitMQ's default max message size is 128 MB, but big messages hurt every consumer: the event carries the
# result file only when it is small (25 rows make ~10 KB); the rest is fetched with `bulk_result`.
MAX_EVENT_FILE_BYTES = 5 * 1024 * 1024
WAKE = "bulk_wake"
TURNS = "upload_turns"  # per user: when the bulk loop last took one of their uploads

def uploads_of(db: Database) -> AsyncCollection[Document]:
    return db[UPLOADS]


def files_of(db: Database) -> AsyncGridFSBucket:
    return AsyncGridFSBucket(db, bucket_name=UPLOADS)


def now_ms() -> int:
    return int(time.time() * 1000)


def wake_event(instance: Instance) -> asyncio.Event:
    event = instance.state.get(WAKE)
    if not isinstance(event, asyncio.Event):
        event = instance.state[WAKE] = asyncio.Event()
    return event


async def create_indexes(instance: ServiceInstance) -> None:
    uploads = uploads_of(instance.db)
    await uploads.create_index([("user_id", ASCENDING), ("uploaded_at", DESCENDING)])
    await uploads.create_index([("status", ASCENDING), ("uploaded_at", ASCENDING)])


# --- commands -------------------------------------------------------------------------------------------

@router.command("registration.bulk_template", api.BulkTemplate, access=Access.ANYONE, replay=Replay.RERUN)
async def bulk_template(request: api.BulkTemplate, ctx: CommandContext) -> FileObject:
    language = excel.language_of(request.language or ctx.language)
    max_rows = registration_settings(ctx.instance).bulk_max_rows
    content = await asyncio.to_thread(excel.bulk_template, language, max_rows=max_rows)
    return FileObject.from_bytes(f"device-bulk-upload-template-{language}.xlsx", XLSX, content)


def decoded_upload(file: FileObject, max_bytes: int) -> bytes:
    """The file's bytes, refused by its size before decoding, and again by its real size."""
    too_large = CommandError("file_too_large", fields={"file": f"larger than {max_bytes} bytes"})
    if len(file.content_base64) // 4 * 3 > max_bytes + 3:
        raise too_large
    try:
        content = base64.b64decode(file.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("validation_failed", fields={"file.content_base64": "not base64"}) from None
    if len(content) > max_bytes:
        raise too_large
    if not content:
        raise CommandError("validation_failed", fields={"file.content_base64": "empty"})
    return content


@router.command("registration.bulk_upload", api.BulkUpload, access=Access.AUTH, prefetch=FILE_PREFETCH)
async def bulk_upload(request: api.BulkUpload, ctx: CommandContext) -> api.BulkUploadQueued:
    """Answers `queued` at once; the rows are registered in the background (see `list_bulk_uploads`)."""
    settings = registration_settings(ctx.instance)
    content = decoded_upload(request.file, settings.bulk_max_file_bytes)
    claims = ctx.caller
    if not await terms_accepted(ctx):
        raise CommandError("terms_not_accepted")
    upload_id = uuid.uuid5(uuid.NAMESPACE_URL, f"registration.bulk_upload:{ctx.message_id}").hex \
        if ctx.message_id else uuid.uuid4().hex
    uploads = uploads_of(ctx.db)
    existing = await uploads.find_one({"_id": upload_id})
    if existing is not None:  # the same command again after a crash between storing and answering
        return api.BulkUploadQueued(upload_id=upload_id, status=existing["status"])
    filename = request.file.filename or "upload.xlsx"
    try:
        await files_of(ctx.db).upload_from_stream_with_id(upload_id, filename, content,
                                                          metadata={"user_id": claims.user_id})
    except (FileExists, DuplicateKeyError):
        pass
    document: Document = {
        "_id": upload_id, "user_id": claims.user_id, "role": claims.role.value,
        "customer_number": claims.customer_number, "contract_number": claims.contract_number,
        "language": ctx.language, "filename": filename, "file_id": upload_id, "size": len(content),
        "uploaded_at": datetime.now(UTC), "status": "queued", "total": 0, "processed": 0, "unprocessed": 0,
        "processed_at": None, "reason": None, "lease_until": 0, "lease_owner": None, "attempts": 0,
        "result_file_id": None, "warranty_accepted": request.warranty_accepted,
    }
    try:
        await uploads.insert_one(document)
    except DuplicateKeyError:
        pass
    wake_event(ctx.instance).set()
    return api.BulkUploadQueued(upload_id=upload_id, status="queued")


def summary(upload: Document, language: str) -> api.BulkUploadSummary:
    reason, limit = upload.get("reason"), upload.get("limit")
    uploaded_at = as_datetime(upload.get("uploaded_at"))
    assert uploaded_at is not None
    processed_at = upload.get("processed_at")
    return api.BulkUploadSummary(
        upload_id=upload["_id"], filename=upload["filename"], uploaded_at=uploaded_at, status=upload["status"],
        total=upload.get("total", 0), processed=upload.get("processed", 0),
        unprocessed=upload.get("unprocessed", 0),
        processed_at=datetime.fromtimestamp(processed_at / 1000, UTC) if isinstance(processed_at, int)
        else as_datetime(processed_at), reason=reason, limit=limit,
        message=message_for(reason, language, **({"limit": limit} if limit is not None else {})) if reason else None)


@router.command("registration.list_bulk_uploads", api.ListBulkUploads, access=Access.AUTH, replay=Replay.RERUN)
async def list_bulk_uploads(request: api.ListBulkUploads, ctx: CommandContext) -> Page[api.BulkUploadSummary]:
    """The caller's own uploads, newest first, with status and counts."""
    uploads = uploads_of(ctx.db)
    query = {"user_id": ctx.caller.user_id}
    total = await uploads.count_documents(query)
    cursor = uploads.find(query, {"outbox": 0}).sort([("uploaded_at", DESCENDING), ("_id", DESCENDING)]) \
        .skip((request.page - 1) * request.page_size).limit(request.page_size)
    items = [summary(upload, ctx.language) async for upload in cursor]
    return Page[api.BulkUploadSummary](items=items, total=total, page=request.page, page_size=request.page_size)


@router.command("registration.bulk_result", api.BulkResult, access=Access.AUTH, replay=Replay.RERUN)
async def bulk_result(request: api.BulkResult, ctx: CommandContext) -> FileObject:
    """The result xlsx: `not_found` for another user's or a failed upload, `conflict` while not yet processed."""
    upload = await uploads_of(ctx.db).find_one({"_id": request.upload_id, "user_id": ctx.caller.user_id},
                                               {"outbox": 0})
    if upload is None or upload["status"] == "failed" or (upload["status"] == "processed"
                                                          and not upload.get("result_file_id")):
        raise CommandError("not_found")
    if upload["status"] != "processed":
        raise CommandError("conflict", fields={"upload_id": f"still {upload['status']}"})
    content = await read_file(ctx.db, upload["result_file_id"])
    return FileObject.from_bytes(result_filename(upload["filename"]), XLSX, content)


def result_filename(filename: str) -> str:
    stem = re.sub(r"\.xls[xm]?$", "", filename, flags=re.IGNORECASE) or "upload"
    return f"{stem}_Results.xlsx"


async def read_file(db: Database, file_id: Any) -> bytes:
    stream = await files_of(db).open_download_stream(file_id)
    content: bytes = await stream.read()
    return content


# --- the background loop ------------------------------------------------------------------------------

async def process_uploads(instance: ServiceInstance) -> None:
    """Process queued uploads one by one (and those whose lease ran out), forever."""
    settings = registration_settings(instance)
    wake = wake_event(instance)
    owner = uuid.uuid4().hex
    while True:
        wake.clear()
        while (upload := await claim_next(instance.db, owner, settings)) is not None:
            try:
                await process(instance, upload, owner, settings)
            except Exception:
                # Left `processing`: the lease runs out and the upload is tried again (bulk_max_attempts).
                log.exception("bulk upload %s failed; tried again once its lease runs out", upload["_id"])
                break
        try:
            await asyncio.wait_for(wake.wait(), settings.bulk_poll_seconds)
        except TimeoutError:
            pass


async def claim_next(db: Database, owner: str, settings: RegistrationSettings) -> Document | None:
    """The next upload this replica processes: one whose replica died (its lease ran out) first, else the oldest
    queued upload of the user whose turn it is, so that one user's many uploads cannot starve everyone else's."""
    now = now_ms()
    take: Document = {"$set": {"status": "processing", "lease_until": now + int(settings.bulk_lease_seconds * 1000),
                               "lease_owner": owner}, "$inc": {"attempts": 1}}
    uploads = uploads_of(db)
    orphan: Document | None = await uploads.find_one_and_update(
        {"status": "processing", "lease_until": {"$lt": now}}, take, sort=[("uploaded_at", ASCENDING)],
        return_document=ReturnDocument.AFTER)
    if orphan is not None:
        return orphan
    for _ in range(3):  # another replica may take the chosen user's last upload first
        waiting = await uploads.distinct("user_id", {"status": "queued"})
        if not waiting:
            return None
        user_id = await next_turn(db, waiting)
        claimed: Document | None = await uploads.find_one_and_update(
            {"status": "queued", "user_id": user_id}, take, sort=[("uploaded_at", ASCENDING)],
            return_document=ReturnDocument.AFTER)
        if claimed is not None:
            await db[TURNS].update_one({"_id": user_id}, {"$set": {"served_at": now}}, upsert=True)
            return claimed
    return None


async def next_turn(db: Database, users: list[str]) -> str:
    """Round robin: of the users with queued uploads, the one served longest ago (never served: first)."""
    served = {turn["_id"]: turn.get("served_at", 0) async for turn in db[TURNS].find({"_id": {"$in": users}})}
    return min(users, key=lambda user_id: (served.get(user_id, 0), user_id))


def held(upload: Document, owner: str) -> Document:
    """Filter: the upload while this replica still holds it."""
    return {"_id": upload["_id"], "lease_owner": owner, "status": "processing"}


@dataclass(frozen=True)
class RowResult:
    cells: Sequence[object]
    result: str  # registered | rejected
    message: str


async def process(instance: ServiceInstance, upload: Document, owner: str, settings: RegistrationSettings) -> None:
    db, uploads = instance.db, uploads_of(instance.db)
    if upload.get("attempts", 1) > settings.bulk_max_attempts:
        await finish(instance, upload, owner, status="failed", reason="internal", rows=[])
        return
    content = await read_file(db, upload["file_id"])
    parsed = await asyncio.to_thread(excel.read_bulk_rows, content, max_rows=settings.bulk_max_rows,
                                     max_bytes=settings.bulk_max_file_bytes)
    if isinstance(parsed, excel.BulkFailure):
        log.info("bulk upload %s failed: %s %s", upload["_id"], parsed.reason, parsed.detail)
        limit = settings.bulk_max_rows if parsed.reason == "too_many_rows" else None
        await finish(instance, upload, owner, status="failed", reason=parsed.reason, rows=[], limit=limit)
        return
    ctx = uploader_context(instance, upload)
    known = await prefetch(ctx)
    total = len(parsed.rows)
    await uploads.update_one(held(upload, owner), {"$set": {"total": total}})
    results: list[RowResult] = []
    seen: dict[str, int] = {}
    batch_size = max(settings.bulk_batch_rows, 1)
    for start in range(0, total, batch_size):
        batch = parsed.rows[start:start + batch_size]
        # Uploads queued before rows could accept the warranty were only taken with it accepted for every row.
        outcomes = await register_rows(ctx, upload["_id"], batch, seen, known,
                                       warranty_for_all=bool(upload.get("warranty_accepted", True)))
        results.extend(RowResult(row.cells, result, message) for row, (result, message) in zip(batch, outcomes,
                                                                                                 strict=True))
        if len(results) < total:
            registered = sum(1 for item in results if item.result == "registered")
            renewed = await uploads.update_one(held(upload, owner), {"$set": {
                "processed": registered, "unprocessed": len(results) - registered,
                "lease_until": now_ms() + int(settings.bulk_lease_seconds * 1000)}})
            if not renewed.matched_count:
                log.warning("bulk upload %s was taken over by another replica; leaving it", upload["_id"])
                return
    await finish(instance, upload, owner, status="processed", reason=None, rows=results, header=parsed.header)


def uploader_context(instance: ServiceInstance, upload: Document) -> CommandContext:
    uploaded_at = as_datetime(upload.get("uploaded_at")) or datetime.now(UTC)
    claims = Claims(user_id=upload["user_id"], role=Role(upload["role"]), session_id=f"bulk:{upload['_id']}",
                    customer_number=upload.get("customer_number"), contract_number=upload.get("contract_number"),
                    issued_at=uploaded_at, expires_at=uploaded_at + timedelta(days=3650))
    return CommandContext(command="registration.bulk_upload", message_id=None, correlation_id=None,
                          language=upload.get("language") or "en", claims=claims, db=instance.db, instance=instance)


def row_device_id(upload_id: str, number: int) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"registration.bulk_upload:{upload_id}:{number}").hex


def rejected(code: str, language: str, detail: str = "") -> tuple[str, str]:
    """The result file's row message, in the uploader's language (the code stays for machines)."""
    return "rejected", f"{code}: {message_for(code, language)}{detail}"


async def register_rows(ctx: CommandContext, upload_id: str, rows: Sequence[excel.BulkRow],
                        seen: dict[str, int], known: Prefetched, *, warranty_for_all: bool) -> list[tuple[str, str]]:
    """`registered` or `rejected` and the result file's message, for each row; the accepted ones stored at once."""
    outcomes: list[tuple[str, str] | None] = []
    accepted: list[tuple[int, Prepared]] = []
    now = datetime.now(UTC)
    for row in rows:
        try:
            request = device_request(row.values, warranty_for_all=warranty_for_all)
        except RowProblem as problem:
            outcomes.append(rejected(problem.code, ctx.language, problem.detail))
            continue
        serial = domain.normalise_serial(request.serial_number)
        if serial in seen:
            outcomes.append(rejected("duplicate_serial", ctx.language, f" ({seen[serial]})"))
            continue
        seen[serial] = row.number
        try:
            prepared = prepare(ctx.caller, ctx.language, request, device_id=row_device_id(upload_id, row.number),
                               known=known, now=now, upload_id=upload_id)
        except CommandError as error:
            outcomes.append(rejected(error.code, ctx.language))
            continue
        accepted.append((len(outcomes), prepared))
        outcomes.append(None)
    store = RegistrationStore(ctx.db)
    stored = await store.insert_devices([(prepared.device, [prepared.event]) for _, prepared in accepted])
    for (index, prepared), inserted in zip(accepted, stored, strict=True):
        if inserted:
            warranty = prepared.reply.warranty
            outcomes[index] = ("registered", f"registered: {prepared.reply.model}, "
                                             f"warranty until {warranty.end_date.isoformat()}")
        elif await store.device({"_id": prepared.device["_id"]}):
            outcomes[index] = ("registered", "registered")  # this row, stored before a restart
        else:
            outcomes[index] = rejected("already_registered", ctx.language)
    return [outcome for outcome in outcomes if outcome is not None]


class RowProblem(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code, self.detail = code, detail


def text_of(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def purchase_date_of(value: object) -> date:
    if value is None:
        raise RowProblem("validation_failed", ": purchase date is required")
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        for pattern in ("%Y-%m-%d", "%d.%m.%Y"):
            try:
                return datetime.strptime(value.strip(), pattern).date()
            except ValueError:
                continue
    raise RowProblem("invalid_purchase_date")


def device_request(values: dict[str, object], *, warranty_for_all: bool) -> api.RegisterDevice:
    serial = text_of(values.get("serial_number"))
    if serial is None:
        raise RowProblem("validation_failed", ": serial number is required")
    purchase = purchase_date_of(values.get("purchase_date"))
    address = {key: text_of(values.get(key)) for key in ("street", "postal_code", "city", "country")}
    location: dict[str, Any] = address if any(address.values()) else {"same_as_contact": True}
    end_customer_name = text_of(values.get("end_customer_name"))
    body: dict[str, Any] = {
        "serial_number": serial, "purchase_date": purchase, "location": location,
        "warranty_accepted": warranty_for_all or excel.accepts(values.get("warranty_accepted")),
        # Rows carry no proof of purchase; `register` is called without one and never reads this.
        "proof_of_purchase": {"filename": "-", "content_type": "-", "content_base64": ""},
        "friendly_name": text_of(values.get("friendly_name")),
        "building_location": text_of(values.get("building_location")),
        "contact_name": text_of(values.get("contact_name")),
        "end_customer": {"name": end_customer_name, "email": text_of(values.get("end_customer_email"))}
        if end_customer_name else None,
    }
    try:
        return api.RegisterDevice.model_validate(body)
    except ValidationError as error:
        fields = sorted({str(item["loc"][0]) for item in error.errors(include_url=False, include_input=False)
                         if item["loc"]})
        raise RowProblem("validation_failed", f": {', '.join(fields)}") from None


async def finish(instance: ServiceInstance, upload: Document, owner: str, *, status: api.BulkStatus, reason: str | None,
                 rows: Sequence[RowResult], header: Sequence[str] = (), limit: int | None = None) -> None:
    """The final status, counts and result file, with the completed event, in one write."""
    db = instance.db
    registered = sum(1 for row in rows if row.result == "registered")
    result_file: FileObject | None = None
    result_id = None
    if status == "processed":
        content = await asyncio.to_thread(excel.result_workbook, header,
                                          [(row.cells, row.result, row.message) for row in rows])
        result_id = f"{upload['_id']}.result"
        bucket = files_of(db)
        if await db[f"{UPLOADS}.files"].find_one({"_id": result_id}, {"_id": 1}) is not None:
            await bucket.delete(result_id)  # left by a run that died before its final write
        await bucket.upload_from_stream_with_id(result_id, result_filename(upload["filename"]), content,
                                                metadata={"user_id": upload["user_id"], "upload_id": upload["_id"]})
        if len(content) <= MAX_EVENT_FILE_BYTES:
            result_file = FileObject.from_bytes(result_filename(upload["filename"]), XLSX, content)
    fields: Document = {"status": status, "reason": reason, "total": len(rows), "processed": registered,
                        "unprocessed": len(rows) - registered, "processed_at": now_ms(),
                        "result_file_id": result_id, "lease_until": 0, "lease_owner": None, "limit": limit}
    event = api.BulkUploadCompleted(
        upload_id=upload["_id"], user_id=upload["user_id"], filename=upload["filename"], status=status,
        total=len(rows), processed=registered, unprocessed=len(rows) - registered, reason=reason, limit=limit,
        language=upload.get("language") or "en", result_file=result_file)
    written = await uploads_of(db).update_one(held(upload, owner), with_events({"$set": fields}, [event]))
    if not written.matched_count:
        log.warning("bulk upload %s was taken over by another replica before it finished", upload["_id"])
    instance.relay.wake()
