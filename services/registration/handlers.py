"""registration's handlers for the catalogue, the installed base and single devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts import registration as api
from contracts.accounts import TermsAccepted
from contracts.base import Page
from services.registration import domain
from services.registration.store import RegistrationStore
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document
from services.runtime.service import Router, ServiceInstance
from services.runtime.tokens import Claims, Role

router = Router()


def store_of(ctx: CommandContext | EventContext) -> RegistrationStore:
    return RegistrationStore(ctx.db)


def visible_to(claims: Claims) -> Document:
    """Every device of the caller's customer (only the contract's for a contract sign-in), their own, and those
    they claimed (services/registration/requests.py)."""
    claimed: Document = {f"claimants.{claims.user_id}": {"$exists": True}}
    if claims.contract_number:
        return {"$or": [{"customer_number": claims.customer_number, "contract_number": claims.contract_number},
                        claimed]}
    if claims.customer_number:
        return {"$or": [{"customer_number": claims.customer_number}, {"registered_by": claims.user_id}, claimed]}
    return {"$or": [{"registered_by": claims.user_id}, claimed]}


def device_view(device: Document) -> api.Device:
    return api.Device(
        device_id=device["_id"], serial_number=device["serial_number"], model=device["model"],
        article_number=device.get("article_number"), customer_number=device.get("customer_number"),
        contract_number=device.get("contract_number"), friendly_name=device.get("friendly_name"),
        location=api.Location(**(device.get("location") or {})), contact_name=device.get("contact_name"),
        counters=device.get("counters") or [], last_readings=[
            api.CounterReading(**reading) for reading in (device.get("last_readings") or {}).values()],
        warranty=api.Warranty(**device["warranty"]) if device.get("warranty") else None,
        reminders=bool(device.get("reminders", True)), reminder_email=device.get("reminder_email"),
        e_maintenance=bool(device.get("e_maintenance")), registered_at=device.get("registered_at"))


def device_state(device: Document, version: int) -> dict[str, Any]:
    """The fields of every device event, from the device as it reads after the change."""
    return {"device_id": device["_id"], "serial_number": device["serial_number"], "model": device["model"],
            "article_number": device.get("article_number"), "counters": device.get("counters") or [],
            "customer_number": device.get("customer_number"), "contract_number": device.get("contract_number"),
            "location": api.Location(**(device.get("location") or {})), "friendly_name": device.get("friendly_name"),
            "reminders": bool(device.get("reminders", True)), "reminder_email": device.get("reminder_email"),
            "e_maintenance": bool(device.get("e_maintenance")), "visible": bool(device.get("visible", True)),
            "version": version}


# --- the catalogue and the installed base -------------------------------------------------------------

@router.command("registration.operator.upsert_models", api.UpsertModels, access=Access.OPERATOR)
async def upsert_models(request: api.UpsertModels, ctx: CommandContext) -> dict[str, int]:
    problems = {f"models.{index}.serial_pattern": problem for index, model in enumerate(request.models)
                if (problem := domain.pattern_problem(model.serial_pattern))}
    if problems:
        raise CommandError("validation_failed", fields=problems)
    await store_of(ctx).upsert_models(request.models, [api.ModelsUpdated(models=request.models)])
    return {"count": len(request.models)}


@router.command("registration.operator.import_installed_base", api.ImportInstalledBase, access=Access.OPERATOR)
async def import_installed_base(request: api.ImportInstalledBase, ctx: CommandContext) -> api.Imported:
    """Upserts devices under contract from the vendor's ERP; each is judged on its own and can be re-imported."""
    store = store_of(ctx)
    models = {model.model: model for model in await store.all_models()}
    imported, rejected = 0, []
    for index, item in enumerate(request.devices):
        model = models.get(item.model)
        serial = domain.normalise_serial(item.serial_number)
        if model is None:
            rejected.append(api.Rejected(index=index, code="unknown_model"))
            continue
        existing = await store.device({"serial_number": serial})
        device_id = existing["_id"] if existing else uuid.uuid4().hex
        version = (existing or {}).get("version", 0) + 1
        fields: Document = {
            "serial_number": serial, "model": model.model, "article_number": model.article_number,
            "counters": model.counters, "customer_number": item.customer_number,
            "contract_number": item.contract_number, "location": item.location.model_dump(),
            "e_maintenance": item.e_maintenance, "visible": True, "version": version,
            "last_readings": {reading.name: reading.model_dump(mode="json") for reading in item.counters},
        }
        device = {"_id": device_id, **(existing or {}), **fields}
        event = api.DeviceProvisioned(**device_state(device, version))
        try:
            if existing:
                await store.change_device(device_id, {"$set": fields}, [event], None)
            else:
                await store.insert_device({"_id": device_id, "provisioned_at": datetime.now(UTC), **fields},
                                          [event], None)
        except DuplicateKeyError:  # the same serial twice in one import, or imported meanwhile
            rejected.append(api.Rejected(index=index, code="conflict"))
            continue
        imported += 1
    return api.Imported(imported=imported, rejected=rejected)


@router.command("registration.lookup_serial", api.LookupSerial, access=Access.AUTH, replay=Replay.RERUN)
async def lookup_serial(request: api.LookupSerial, ctx: CommandContext) -> dict[str, str]:
    model = domain.model_for_serial(await store_of(ctx).all_models(), domain.normalise_serial(request.serial_number))
    if model is None:
        raise CommandError("unknown_serial", fields={"serial_number": "unknown_serial"})
    return {"model": model.model, "article_number": model.article_number}


@router.command("registration.serial_hint", api.SerialHint, access=Access.ANYONE, replay=Replay.RERUN)
async def serial_hint(request: api.SerialHint, ctx: CommandContext) -> dict[str, str | None]:
    model = await store_of(ctx).model(request.model)
    if model is None:
        raise CommandError("not_found")
    return {"model": model.model, "hint": model.serial_hint}


# --- registering single devices -----------------------------------------------------------------------

@router.command("registration.register_device", api.RegisterDevice, access=Access.AUTH)
async def register_device(request: api.RegisterDevice, ctx: CommandContext) -> api.DeviceRegistered:
    try:
        proof = request.proof_of_purchase.content()
    except ValueError:
        raise CommandError("validation_failed", fields={"proof_of_purchase.content_base64": "not base64"}) from None
    device_id = uuid.uuid5(uuid.NAMESPACE_URL, f"registration.register_device:{ctx.message_id}").hex \
        if ctx.message_id else uuid.uuid4().hex
    return await register(ctx, request, device_id=device_id, proof=(request.proof_of_purchase.filename, proof))


@dataclass(frozen=True)
class Prefetched:
    """What a bulk upload reads once instead of once per row."""

    models: list[api.ProductModel]
    terms_accepted: bool


async def prefetch(ctx: CommandContext) -> Prefetched:
    store = store_of(ctx)
    return Prefetched(await store.all_models(), await store.accepted_terms(ctx.caller.user_id))


async def register(ctx: CommandContext, request: api.RegisterDevice, *, device_id: str,
                   proof: tuple[str, bytes] | None) -> api.DeviceRegistered:
    """Every rule of registering one device, its proof of purchase kept, and the device stored."""
    store = store_of(ctx)
    prepared = prepare(ctx.caller, ctx.language, request, device_id=device_id, known=await prefetch(ctx),
                       now=datetime.now(UTC))
    check = domain.check_proof(proof[1]) if proof else None
    if check is not None and check.problem:
        raise CommandError(check.problem, fields={"proof_of_purchase": check.problem})
    if await store.device({"serial_number": prepared.device["serial_number"]}) is not None:
        raise CommandError("already_registered", fields={"serial_number": "already_registered"})
    if proof is not None and check is not None:
        file_id = await store.store_proof(device_id, proof[0], check.content_type or "", proof[1])
        prepared.device["proof_of_purchase"] = {"file_id": file_id, "filename": proof[0],
                                                "content_type": check.content_type}
    try:
        await store.insert_device(prepared.device, [prepared.event], ctx.message_id)
    except DuplicateKeyError:
        raise CommandError("already_registered", fields={"serial_number": "already_registered"}) from None
    return prepared.reply


@dataclass(frozen=True)
class Prepared:
    """A registration that passed every rule: the device to store, its event, the reply."""

    device: Document
    event: api.DeviceRegisteredEvent
    reply: api.DeviceRegistered


def prepare(claims: Claims, language: str, request: api.RegisterDevice, *, device_id: str, known: Prefetched,
            now: datetime, upload_id: str | None = None) -> Prepared:
    """The rules that need no database: terms, warranty, serial and model, purchase date, end customer.

    Bulk rows are prepared in batches and stored in one write; whether the serial was
    registered before is decided by the unique index then.
    """
    if not known.terms_accepted:
        raise CommandError("terms_not_accepted")
    if not request.warranty_accepted:
        raise CommandError("warranty_not_accepted", fields={"warranty_accepted": "must be accepted"})
    serial = domain.normalise_serial(request.serial_number)
    model = domain.model_for_serial(known.models, serial)
    if model is None:
        raise CommandError("unknown_serial", fields={"serial_number": "unknown_serial"})
    if request.purchase_date > now.date():
        raise CommandError("invalid_purchase_date", fields={"purchase_date": "in the future"})
    if request.end_customer is not None and claims.role is not Role.DEALER:
        raise CommandError("forbidden", fields={"end_customer": "only dealers register for end customers"})

    warranty = domain.warranty_for(request.purchase_date, now.date())
    location = api.Location() if isinstance(request.location, api.SameAsContact) else request.location
    location = location.model_copy(update={"building_location": request.building_location
                                           or location.building_location})
    device: Document = {
        "_id": device_id, "serial_number": serial, "model": model.model, "article_number": model.article_number,
        "counters": model.counters, "customer_number": claims.customer_number, "contract_number": None,
        "registered_by": claims.user_id, "registered_at": now, "purchase_date": request.purchase_date.isoformat(),
        "warranty": warranty.model_dump(mode="json"), "location": location.model_dump(),
        "location_same_as_contact": isinstance(request.location, api.SameAsContact),
        "contact_name": request.contact_name, "friendly_name": request.friendly_name,
        "questionnaire": request.questionnaire.model_dump() if request.questionnaire else None,
        "end_customer": request.end_customer.model_dump() if request.end_customer else None,
        "proof_of_purchase": None,
        "reminders": True, "reminder_email": None, "e_maintenance": False, "visible": True, "version": 1,
    }
    event = api.DeviceRegisteredEvent(**device_state(device, 1), registered_by=claims.user_id,
                                      language=language, warranty=warranty, upload_id=upload_id)
    return Prepared(device, event, api.DeviceRegistered(device_id=device_id, model=model.model,
                                                        article_number=model.article_number, warranty=warranty))


# --- the caller's devices -------------------------------------------------------------------------------

@router.command("registration.list_devices", api.ListDevices, access=Access.AUTH, replay=Replay.RERUN)
async def list_devices(request: api.ListDevices, ctx: CommandContext) -> Page[api.Device]:
    devices, total = await store_of(ctx).find_devices(visible_to(ctx.caller), request)
    return Page[api.Device](items=[device_view(device) for device in devices], total=total, page=request.page,
                            page_size=request.page_size)


async def own_device(ctx: CommandContext, *, device_id: str | None = None, serial_number: str | None = None
                     ) -> Document:
    """The device if the caller may see it; `not_found` otherwise, also when it belongs to someone else."""
    if not (device_id or serial_number):
        raise CommandError("validation_failed", fields={"device_id": "device_id or serial_number is required"})
    query: Document = {"_id": device_id} if device_id else {"serial_number": domain.normalise_serial(serial_number
                                                                                                     or "")}
    device = await store_of(ctx).device({"$and": [query, visible_to(ctx.caller), {"visible": True}]})
    if device is None:
        raise CommandError("not_found")
    return device


@router.command("registration.get_device", api.GetDevice, access=Access.AUTH, replay=Replay.RERUN)
async def get_device(request: api.GetDevice, ctx: CommandContext) -> api.Device:
    return device_view(await own_device(ctx, device_id=request.device_id, serial_number=request.serial_number))


async def change_visible_device(ctx: CommandContext, device: Document, fields: Document,
                                event_type: type[api.DeviceState]) -> None:
    version = device.get("version", 1) + 1
    changed = {**device, **fields, "version": version}
    await store_of(ctx).change_device(device["_id"], {"$set": {**fields, "version": version}},
                                      [event_type(**device_state(changed, version))], ctx.message_id)


@router.command("registration.rename_device", api.RenameDevice, access=Access.AUTH)
async def rename_device(request: api.RenameDevice, ctx: CommandContext) -> None:
    device = await own_device(ctx, device_id=request.device_id)
    await change_visible_device(ctx, device, {"friendly_name": request.friendly_name}, api.DeviceUpdated)


@router.command("registration.set_reminders", api.SetReminders, access=Access.AUTH)
async def set_reminders(request: api.SetReminders, ctx: CommandContext) -> None:
    device = await own_device(ctx, device_id=request.device_id)
    await change_visible_device(ctx, device, {"reminders": request.reminders,
                                              "reminder_email": request.reminder_email}, api.DeviceUpdated)


@router.command("registration.deregister_devices", api.DeregisterDevices, access=Access.AUTH)
async def deregister_devices(request: api.DeregisterDevices, ctx: CommandContext) -> dict[str, int]:
    """Hidden from the caller's view and from reminders; contract and billing stay as they are."""
    count = 0
    for device_id in dict.fromkeys(request.device_ids):
        device = await own_device(ctx, device_id=device_id)
        await change_visible_device(ctx, device, {"visible": False, "reminders": False}, api.DeviceDeregistered)
        count += 1
    return {"count": count}


# --- events ------------------------------------------------------------------------------------------

@router.event(TermsAccepted)
async def remember_terms(event: TermsAccepted, ctx: EventContext) -> None:
    await store_of(ctx).remember_terms(event.user_id, event.terms_version, event.privacy_version)


async def create_indexes(instance: ServiceInstance) -> None:
    await RegistrationStore(instance.db).create_indexes()
