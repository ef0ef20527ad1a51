"""ordering's commands: the consumables catalogue, what a device can order, placing and finding orders, shipping and
delivery; and its read models of devices and contracts.

Who sees a device mirrors registration (`services.runtime.readmodels.sees`); a device the caller may not see is
`not_found`, also when it exists. Who sees an order: the users of the customer of its devices, a contract sign-in when
all its devices are of that contract, and whoever sees one of its devices outside their own customer (a claimant, the
registering user of a device of no customer). Operators see every order.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, date, datetime

from contracts import ordering as api
from contracts.accounts import CustomerProvisioned
from contracts.base import Contact, Counted, Page
from contracts.ordering import model_key
from contracts.registration import (
    DeviceState,
    Location,
)
from services.ordering import placing
from services.ordering.orders import covered
from services.ordering.settings import ordering_settings
from services.ordering.store import OrderingStore
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document, parse_stamp, stamp
from services.runtime.readmodels import (
    DEVICE_EVENTS,
    contracts_of,
    device_fields,
    may_see_record,
    sees,
    visible_records,
)
from services.runtime.service import Router, ServiceInstance

router = Router()


def store_of(ctx: CommandContext | EventContext) -> OrderingStore:
    return OrderingStore(ctx.db, ctx.instance.lookups)


def today() -> date:
    return datetime.now(UTC).date()


# --- the catalogue ------------------------------------------------------------------------------------------------

@router.command("ordering.operator.upsert_consumables", api.UpsertConsumables, access=Access.OPERATOR)
async def upsert_consumables(request: api.UpsertConsumables, ctx: CommandContext) -> Counted:
    """The consumables of one model; the list replaces the model's list, so sending it again changes nothing."""
    counts = Counter(item.article_number for item in request.items)
    repeated = {f"items.{index}.article_number": "given twice" for index, item in enumerate(request.items)
                if counts[item.article_number] > 1}
    if repeated:
        raise CommandError("validation_failed", fields=repeated)
    await store_of(ctx).replace_consumables(model_key(request.model), request.model,
                                            [item.model_dump() for item in request.items], stamp(datetime.now(UTC)))
    return Counted(count=len(request.items))


async def own_device(ctx: CommandContext, device_id: str) -> Document:
    found = await store_of(ctx).devices_where({"_id": device_id})
    if not found or not sees(ctx.caller, found[0]):
        raise CommandError("not_found", fields={"device_id": "not_found"})
    return found[0]


@router.command("ordering.list_orderable", api.ListOrderable, access=Access.AUTH, replay=Replay.RERUN)
async def list_orderable(request: api.ListOrderable, ctx: CommandContext) -> api.Orderable:
    """The consumables of the device's model with descriptions, whether its contract covers them today, and the
    "z. Hd." and "Zusätzl. Info" saved for it: the customer never needs an article number."""
    store = store_of(ctx)
    device = await own_device(ctx, request.device_id)
    customers = await store.customers_by_number([device["customer_number"]] if device.get("customer_number") else [])
    catalogue = (await store.consumables_of([model_key(str(device.get("model") or ""))])).values()
    defaults = await placing.saved_defaults(store, device, ctx.caller) or {}
    return api.Orderable(
        device_id=device["_id"], serial_number=device["serial_number"], model=device["model"],
        location=Location(**(device.get("location") or {})),
        covered=covered(device, customers.get(str(device.get("customer_number"))), today()),
        delivery_defaults=api.DeliveryDefaults(attention=defaults.get("attention"),
                                               additional_info=defaults.get("additional_info")),
        items=[api.Consumable(**item) for items in catalogue for item in items])


# --- placing and finding orders -------------------------------------------------------------------------------------

@router.command("ordering.place_order", api.PlaceOrder, access=Access.AUTH, claim_in_write=True)
async def place_order(request: api.PlaceOrder, ctx: CommandContext) -> api.OrderPlacedReply:
    """One order for one delivery address: the devices' location, with only "z. Hd." and "Zusätzl. Info" given;
    lines of consumables of each device's model under a contract that includes them; no second order of an article
    for a device while an earlier one is not delivered, unless `confirm_duplicate`. Placed orders cannot be
    cancelled."""
    assert ctx.message_id is not None, "a command that changes state always has its message id"
    return await placing.place(ctx, store_of(ctx), request, caller=ctx.caller, command_id=ctx.message_id,
                               language=ctx.language, settings=ordering_settings(ctx.instance))


def order_view(order: Document) -> api.Order:
    tracking = order.get("tracking")
    return api.Order(
        order_number=order["order_number"], status=order["status"], customer_number=order.get("customer_number"),
        contract_number=order.get("contract_number"), placed_at=parse_stamp(order["placed_at"]),
        placed_by=order["placed_by"], contact=Contact(**order["contact"]),
        delivery_address=api.DeliveryAddress(**order["delivery_address"]), reference=order.get("reference"),
        lines=[api.OrderedLine(**line) for line in order["lines"]],
        tracking=api.Tracking(**{**tracking, "shipped_at": parse_stamp(tracking["shipped_at"])}) if tracking else None,
        delivered_at=parse_stamp(order["delivered_at"]) if order.get("delivered_at") else None)


@router.command("ordering.get_order", api.GetOrder, access=Access.AUTH, replay=Replay.RERUN)
async def get_order(request: api.GetOrder, ctx: CommandContext) -> api.Order:
    """The order with its lines, status and, once shipped, its tracking; another customer's is `not_found`."""
    order = await store_of(ctx).order({"order_number": request.order_number})
    if order is None or not may_see_record(ctx.caller, order):
        raise CommandError("not_found", fields={"order_number": "not_found"})
    return order_view(order)


@router.command("ordering.list_orders", api.ListOrders, access=Access.AUTH, replay=Replay.RERUN)
async def list_orders(request: api.ListOrders, ctx: CommandContext) -> Page[api.Order]:
    """The caller's orders, newest first; by device, by status, and by part of the order number (quick search)."""
    visible = visible_records(ctx.caller)
    filters: Document = {}
    if request.device_id:
        filters["device_ids"] = {"$in": [request.device_id]}
    if request.status:
        filters["status"] = request.status
    if request.order_number and request.order_number.strip():
        filters["order_number"] = {"$regex": re.escape(request.order_number.strip()), "$options": "i"}
    query = {"$and": [visible, filters]} if visible.keys() & filters.keys() else {**visible, **filters}
    found, total = await store_of(ctx).orders_page(query, [("placed_at", -1), ("order_number", -1)],
                                                   request.page, request.page_size)
    return Page[api.Order](items=[order_view(order) for order in found], total=total, page=request.page,
                           page_size=request.page_size)


# --- the back office ------------------------------------------------------------------------------------------------

@router.command("ordering.operator.list_orders", api.OperatorListOrders, access=Access.OPERATOR, replay=Replay.RERUN)
async def operator_list_orders(request: api.OperatorListOrders, ctx: CommandContext) -> Page[api.Order]:
    """What to ship: orders of a status (`placed` unless asked otherwise; none: all), oldest first, each with its
    devices (serial, model) per line and its delivery address."""
    query: Document = {"status": request.status} if request.status else {}
    found, total = await store_of(ctx).orders_page(query, [("placed_at", 1), ("order_number", 1)], request.page,
                                                   request.page_size)
    return Page[api.Order](items=[order_view(order) for order in found], total=total, page=request.page,
                           page_size=request.page_size)


async def order_by_number(ctx: CommandContext, order_number: str) -> Document:
    order = await store_of(ctx).order({"order_number": order_number})
    if order is None:
        raise CommandError("not_found", fields={"order_number": "not_found"})
    return order


@router.command("ordering.operator.mark_shipped", api.MarkShipped, access=Access.OPERATOR)
async def mark_shipped(request: api.MarkShipped, ctx: CommandContext) -> api.StatusReply:
    """`placed` -> `shipped` with carrier, tracking number and link, announced for the shipping notice; sending the
    same again is answered `shipped`, anything else after `placed` is `invalid_transition`."""
    store = store_of(ctx)
    order = await order_by_number(ctx, request.order_number)
    tracking = {"carrier": request.carrier, "tracking_number": request.tracking_number,
                "tracking_url": request.tracking_url}
    if order["status"] == "placed":
        now = datetime.now(UTC)
        event = api.OrderShipped(**placing.event_fields(order), tracking=api.Tracking(**tracking, shipped_at=now))
        if await store.change_status(request.order_number, from_status="placed",
                                     fields={"status": "shipped", "tracking": {**tracking, "shipped_at": stamp(now)}},
                                     events=[event], command_id=ctx.message_id):
            return api.StatusReply(status="shipped")
        order = await order_by_number(ctx, request.order_number)
    shipped = order.get("tracking") or {}
    if order["status"] == "shipped" and all(shipped.get(key) == value for key, value in tracking.items()):
        return api.StatusReply(status="shipped")
    raise CommandError("invalid_transition", fields={"status": f"{order['status']}, not placed"})


@router.command("ordering.operator.mark_delivered", api.MarkDelivered, access=Access.OPERATOR)
async def mark_delivered(request: api.MarkDelivered, ctx: CommandContext) -> api.StatusReply:
    """`shipped` -> `delivered`, announced; its articles may then be ordered again for its devices without
    confirming. Sending it again is answered `delivered`; a `placed` order is `invalid_transition`."""
    store = store_of(ctx)
    order = await order_by_number(ctx, request.order_number)
    if order["status"] == "shipped":
        now = datetime.now(UTC)
        event = api.OrderDelivered(**placing.event_fields(order), delivered_at=now)
        if not await store.change_status(request.order_number, from_status="shipped",
                                         fields={"status": "delivered", "delivered_at": stamp(now)}, events=[event],
                                         command_id=ctx.message_id):
            order = await order_by_number(ctx, request.order_number)
        else:
            order = {**order, "status": "delivered"}
    if order["status"] != "delivered":
        raise CommandError("invalid_transition", fields={"status": f"{order['status']}, not shipped"})
    # After the status: a delivery that dies in between leaves entries the next order finds delivered and removes.
    await store.release_guards(order.get("guard_keys") or [], order["_id"])
    return api.StatusReply(status="delivered")


# --- read models ------------------------------------------------------------------------------------------------------

async def remember_device(event: DeviceState, ctx: EventContext) -> None:
    await store_of(ctx).remember_device(event.device_id, device_fields(event), event.version)


for _event in DEVICE_EVENTS:
    router.event(_event)(remember_device)


@router.event(CustomerProvisioned)
async def remember_customer(event: CustomerProvisioned, ctx: EventContext) -> None:
    await store_of(ctx).remember_customer(event.customer_number, contracts_of(event), event.version)


async def create_indexes(instance: ServiceInstance) -> None:
    await OrderingStore(instance.db).create_indexes()
