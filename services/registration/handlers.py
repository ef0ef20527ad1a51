"""registration's handlers for the catalogue, the installed base and single devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo.errors import DuplicateKeyError

from contracts import registration as api
from contracts.accounts import TermsAccepted
from contracts.base import Counted, Page
from contracts.notifier import RemindersUnsubscribed
from services.registration import domain, installed_base
from services.registration.devices import (
    apply_settings,
    change_device,
    device_state,
    device_view,
    is_member,
    reminders_off,
    sees,
    updated,
    visible_to,
)
from services.registration.settings import FILE_PREFETCH, registration_settings
from services.registration.store import RegistrationStore
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document
from services.runtime.service import Router, ServiceInstance
from services.runtime.tokens import Claims, Role

router = Router()


def store_of(ctx: CommandContext | EventContext) -> RegistrationStore:
    return RegistrationStore(ctx.db)


# --- the catalogue and the installed base -------------------------------------------------------------

@router.command("registration.operator.upsert_models", api.UpsertModels, access=Access.OPERATOR)
async def upsert_models(request: api.UpsertModels, ctx: CommandContext) -> Counted:
    problems = {f"models.{index}.serial_pattern": problem for index, model in enumerate(request.models)
                if (problem := domain.pattern_problem(model.serial_pattern))}
    if problems:
        raise CommandError("validation_failed", fields=problems)
    await store_of(ctx).upsert_models(request.models, [api.ModelsUpdated(models=request.models)])
    return Counted(count=len(request.models))


@router.command("registration.operator.import_installed_base", api.ImportInstalledBase, access=Access.OPERATOR,
                prefetch=FILE_PREFETCH)
async def import_installed_base(request: api.ImportInstalledBase, ctx: CommandContext) -> api.Imported:
    """Upserts devices under contract from the vendor's ERP, a batch per write; each is judged on its own and can be
    re-imported (see `installed_base.py`)."""
    batch_size = registration_settings(ctx.instance).import_batch_devices
    return await installed_base.import_devices(store_of(ctx), request.devices, batch_size=batch_size)


@router.command("registration.lookup_serial", api.LookupSerial, access=Access.AUTH, replay=Replay.RERUN)
async def lookup_serial(request: api.LookupSerial, ctx: CommandContext) -> api.KnownSerial:
    model = domain.model_for_serial(await store_of(ctx).all_models(), domain.normalise_serial(request.serial_number))
    if model is None:
        raise CommandError("unknown_serial", fields={"serial_number": "unknown_serial"})
    return api.KnownSerial(model=model.model, article_number=model.article_number)


@router.command("registration.serial_hint", api.SerialHint, access=Access.ANYONE, replay=Replay.RERUN)
async def serial_hint(request: api.SerialHint, ctx: CommandContext) -> api.SerialHintFound:
    model = await store_of(ctx).model(request.model)
    if model is None:
        raise CommandError("not_found")
    return api.SerialHintFound(model=model.model, hint=model.serial_hint)


@router.command("registration.list_models", api.ListModels, access=Access.AUTH, replay=Replay.RERUN)
async def list_models(request: api.ListModels, ctx: CommandContext) -> Page[api.ModelName]:
    names, total = await store_of(ctx).model_names(request.text, request.page, request.page_size)
    items = [api.ModelName(model=stored["_id"], has_serial_hint=bool(stored.get("serial_hint"))) for stored in names]
    return Page[api.ModelName](items=items, total=total, page=request.page, page_size=request.page_size)


# --- registering single devices -----------------------------------------------------------------------

@router.command("registration.register_device", api.RegisterDevice, access=Access.AUTH, prefetch=FILE_PREFETCH)
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
    return Prefetched(await store_of(ctx).all_models(), await terms_accepted(ctx))


async def terms_accepted(ctx: CommandContext) -> bool:
    """Whether the caller's latest acceptance is of the vendor's current terms and privacy versions (the settings):
    publishing a new version asks everyone again (CATALOG §2 `accounts.accept_terms`)."""
    settings = ctx.instance.settings
    return await store_of(ctx).accepted_terms(ctx.caller.user_id, settings.terms_version, settings.privacy_version)


async def register(ctx: CommandContext, request: api.RegisterDevice, *, device_id: str,
                   proof: tuple[str, bytes] | None) -> api.DeviceRegistered:
    """Every rule of registering one device, its proof of purchase kept, and the device stored."""
    store = store_of(ctx)
    prepared = prepare(ctx.caller, ctx.language, request, device_id=device_id, known=await prefetch(ctx),
                       now=datetime.now(UTC))
    check = domain.check_proof(proof[1]) if proof else None
    if check is not None and check.problem:
        raise CommandError(check.problem, fields={"proof_of_purchase": check.problem})
    existing = await store.device({"serial_number": prepared.device["serial_number"]})
    if existing is not None and existing["_id"] != device_id:  # else: this command's device, stored before a crash
        raise CommandError("already_registered", fields={"serial_number": "already_registered"})
    proof_id = f"{device_id}.proof"
    if proof is not None and check is not None:
        prepared.device["proof_of_purchase"] = {"file_id": proof_id, "filename": proof[0],
                                                "content_type": check.content_type}
    if existing is None:
        try:
            await store.insert_device(prepared.device, [prepared.event], ctx.message_id)
        except DuplicateKeyError:
            raise CommandError("already_registered", fields={"serial_number": "already_registered"}) from None
    # Stored only once its device is: a refused registration leaves no file behind. A crash in between is
    # completed by the re-sent command (same device id), which finds its device and stores the proof then.
    if proof is not None and check is not None:
        await store.store_proof(proof_id, device_id, proof[0], check.content_type or "", proof[1])
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
    event = api.DeviceRegisteredEvent(**device_state(device), language=language, warranty=warranty,
                                      upload_id=upload_id)
    return Prepared(device, event, api.DeviceRegistered(device_id=device_id, model=model.model,
                                                        article_number=model.article_number, warranty=warranty))


# --- the caller's devices -------------------------------------------------------------------------------

@router.command("registration.list_devices", api.ListDevices, access=Access.AUTH, replay=Replay.RERUN)
async def list_devices(request: api.ListDevices, ctx: CommandContext) -> Page[api.Device]:
    devices, total = await store_of(ctx).find_devices(visible_to(ctx.caller), request)
    return Page[api.Device](items=[device_view(device, ctx.caller) for device in devices], total=total,
                            page=request.page, page_size=request.page_size)


async def own_device(ctx: CommandContext, *, device_id: str | None = None, serial_number: str | None = None
                     ) -> Document:
    """The device if the caller may see it; `not_found` otherwise, also when it belongs to someone else."""
    if not (device_id or serial_number):
        raise CommandError("validation_failed", fields={"device_id": "device_id or serial_number is required"})
    query: Document = {"_id": device_id} if device_id else {"serial_number": domain.normalise_serial(serial_number
                                                                                                     or "")}
    device = await store_of(ctx).device(query)
    if device is None or not sees(ctx.caller, device):
        raise CommandError("not_found")
    return device


@router.command("registration.get_device", api.GetDevice, access=Access.AUTH, replay=Replay.RERUN)
async def get_device(request: api.GetDevice, ctx: CommandContext) -> api.Device:
    return device_view(await own_device(ctx, device_id=request.device_id, serial_number=request.serial_number),
                       ctx.caller)


async def change_own_device(ctx: CommandContext, device_id: str, settings: Document) -> None:
    """Change a device the caller sees (checked before), for everyone of its customer or in the caller's own view."""
    claims = ctx.caller

    def events(changed: Document) -> list[api.DeviceState]:
        hidden_for_customer = is_member(claims, changed) and not changed.get("visible", True)
        return [api.DeviceDeregistered(**device_state(changed))] if hidden_for_customer else updated(changed)
    await change_device(store_of(ctx), device_id, apply_settings(claims, settings), events,
                        command_id=ctx.message_id)


@router.command("registration.rename_device", api.RenameDevice, access=Access.AUTH)
async def rename_device(request: api.RenameDevice, ctx: CommandContext) -> None:
    device = await own_device(ctx, device_id=request.device_id)
    await change_own_device(ctx, device["_id"], {"friendly_name": request.friendly_name})


@router.command("registration.set_reminders", api.SetReminders, access=Access.AUTH)
async def set_reminders(request: api.SetReminders, ctx: CommandContext) -> None:
    device = await own_device(ctx, device_id=request.device_id)
    await change_own_device(ctx, device["_id"], {"reminders": request.reminders,
                                                 "reminder_email": request.reminder_email})


@router.command("registration.deregister_devices", api.DeregisterDevices, access=Access.AUTH)
async def deregister_devices(request: api.DeregisterDevices, ctx: CommandContext) -> Counted:
    """Hidden from the caller's view and from reminders; contract and billing stay as they are.

    Every device is checked before any changes, so a list naming one the caller may not see changes nothing.
    """
    device_ids = list(dict.fromkeys(request.device_ids))
    found = store_of(ctx).devices.find({"_id": {"$in": device_ids}})
    seen = {device["_id"] async for device in found if sees(ctx.caller, device)}
    missing = {f"device_ids.{index}": "not_found" for index, device_id in enumerate(request.device_ids)
               if device_id not in seen}
    if missing:
        raise CommandError("not_found", fields=missing)
    for device_id in device_ids:
        await change_own_device(ctx, device_id, {"visible": False, "reminders": False})
    return Counted(count=len(device_ids))


# --- events ------------------------------------------------------------------------------------------

@router.event(TermsAccepted)
async def remember_terms(event: TermsAccepted, ctx: EventContext) -> None:
    await store_of(ctx).remember_terms(event.user_id, event.terms_version, event.privacy_version, event.accepted_at)


@router.event(RemindersUnsubscribed)
async def unsubscribe_reminders(event: RemindersUnsubscribed, ctx: EventContext) -> None:
    """Reminders off for whoever the unsubscribed reminder was for (see `devices.reminders_off`), as a versioned
    change with its `device.updated`. A copy of the event, or reminders already off, changes nothing."""
    await change_device(store_of(ctx), event.device_id, reminders_off(event.recipient, event.email), updated,
                        command_id=ctx.message_id)


async def create_indexes(instance: ServiceInstance) -> None:
    await RegistrationStore(instance.db).create_indexes()
