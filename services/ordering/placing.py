"""Placing an order once: every rule, a unique number, and no second order of an article that is not delivered yet.

Without multi-document transactions, the command claims its message id in the same ordered bulk write that enters the
order into its guards and inserts it (`claim_in_write`, `ctx.write_once`):

1. The order `o-<command>`, the devices, customers, consumables, saved defaults and guards are read. The order found,
   this command stored it before (its claim expired since, or its worker died before the stored reply): it answers
   with it and writes nothing else.
2. The rules are judged, and plain duplicates refused, before a number is spent; a revoked caller is refused before
   anything is written.
3. The number comes from a counter document (`$inc`), unique across replicas.
4. One round trip: the claim; each line's (device, article) guard, entered only while no other order holds it
   (`count: 0`; with `confirm_duplicate`, once per order), else the write collides on the guard's `_id` and nothing
   after it happens; the order with its `ordering.order.placed` (outbox); the stored reply. Of two identical orders at
   the same moment one is placed; the other takes back what its write entered, reads the guards again and is refused
   (`duplicate_order`, naming the order that holds them).

A worker that dies between the guards and the order (the database stopped mid-write) leaves guard entries of an order
that does not exist: its re-run takes them back and enters them again; an entry whose order never appears stops
counting after `PORTAL_ORDERING_GUARD_GRACE_SECONDS`, and one whose order is delivered (delivery died before releasing
it) at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from pymongo.errors import DuplicateKeyError

from contracts import ordering as api
from contracts.base import Contact
from contracts.ordering import model_key
from services.ordering import orders
from services.ordering.orders import guard_key
from services.ordering.settings import OrderingSettings
from services.ordering.store import OrderingStore
from services.runtime.commands import CommandContext, CommandError
from services.runtime.mongo import Document, parse_stamp, stamp
from services.runtime.readmodels import contract_key, record_viewers, sees
from services.runtime.tokens import Claims

# Rounds of entering the guards, after a write that collided with an order holding one that turned out stale.
MAX_ROUNDS = 5


async def place(ctx: CommandContext, store: OrderingStore, request: api.PlaceOrder, *, caller: Claims,
                command_id: str, language: str, settings: OrderingSettings) -> api.OrderPlacedReply:
    order_id = f"o-{command_id}"
    device_ids = sorted({line.device_id for line in request.lines})
    # Independent reads at once: the order's latency is its round trips.
    earlier, found = await asyncio.gather(store.order_by_id(order_id), store.devices_by_id(device_ids))
    if earlier is not None:  # this very command, stored before
        await ctx.ensure_signed_in()
        await save_defaults(store, request, earlier, caller)
        return placed_reply(earlier)

    devices = {device_id: device for device_id, device in found.items() if sees(caller, device)}
    first = devices.get(request.lines[0].device_id)
    keys = guard_keys(request, devices)
    customers, catalogues, defaults, guards = await asyncio.gather(
        store.customers_by_number(
            str(device["customer_number"]) for device in devices.values() if device.get("customer_number")),
        store.consumables_of(model_key(str(device.get("model") or "")) for device in devices.values()),
        saved_defaults(store, first, caller) if first is not None and request.delivery is None else _nothing(),
        store.guards_of([] if request.confirm_duplicate else keys))
    now = datetime.now(UTC)
    judged = orders.judge(request, devices, customers, catalogues, now.date(), defaults)
    await ctx.ensure_signed_in()  # before the first write: a stale guard healed, a number spent
    # Refuse what is plain before spending an order number; the guards' conditions in the write decide close races.
    await refuse_duplicates(store, keys, order_id, guards, settings, now)
    number = orders.order_number(settings.ordering_number_prefix, now.year, await store.next_number(now.year))
    order = order_document(order_id, number, request, judged, caller=caller, placed_at=now, language=language)
    event = api.OrderPlaced(**event_fields(order), reference=order["reference"], placed_at=now)
    reply = placed_reply(order)
    for _ in range(MAX_ROUNDS):
        # Each attempt's entries carry its own token: taking them back never touches another copy's.
        entry = {"order_number": number, "at": stamp(now), "attempt": uuid.uuid4().hex}
        try:
            await ctx.write_once([*(store.guard_entry(key, order_id, entry, exclusive=not request.confirm_duplicate)
                                    for key in sorted(set(keys))),
                                  store.order_insert(order, [event])], reply)
            break
        except DuplicateKeyError:
            stored = await store.order_by_id(order_id)
            if stored is not None:  # another copy of this command placed it meanwhile: its entries stay
                return placed_reply(stored)
            # A guard held by another order since it was read, or entries of this order that a copy which died
            # half-way left: what this attempt entered is taken back, and the guards read again.
            await store.release_guards(keys, order_id, entered=dict.fromkeys(keys, entry))
            guards = await store.guards_of(keys)
            await take_back_left_over(ctx, store, order_id, guards)
            if not request.confirm_duplicate:
                await refuse_duplicates(store, keys, order_id, guards, settings, datetime.now(UTC))
    else:
        raise CommandError("conflict")
    await save_defaults(store, request, order, caller)
    return reply


async def take_back_left_over(ctx: CommandContext, store: OrderingStore, order_id: str,
                              guards: Mapping[str, Document]) -> None:
    """Remove this order's entries a copy that died half-way left (the order never stored), as read in `guards`;
    not while another copy of the command holds its claim, or answered it: those may be that copy's."""
    left = {key: guard["open"][order_id] for key, guard in guards.items() if order_id in (guard.get("open") or {})}
    if left and not await ctx.copy_under_way():
        await store.release_guards(left, order_id, entered=left)


async def _nothing() -> None:
    return None


def guard_keys(request: api.PlaceOrder, devices: Mapping[str, Document]) -> list[str]:
    return [guard_key(devices.get(line.device_id, {}).get("customer_number"), line.device_id, line.article_number)
            for line in request.lines]


def order_document(order_id: str, number: str, request: api.PlaceOrder, judged: orders.Judged, *, caller: Claims,
                   placed_at: datetime, language: str) -> Document:
    customers = sorted({str(device["customer_number"]) for device in judged.devices if device.get("customer_number")})
    contracts = {(device.get("customer_number"), device.get("contract_number")) for device in judged.devices}
    (customer, contract), *_ = [(device.get("customer_number"), device.get("contract_number"))
                                for device in judged.devices]
    return {
        "_id": order_id, "order_number": number, "status": "placed",
        "customer_number": customer, "contract_number": contract if len(contracts) == 1 else None,
        # Who sees the order besides the devices' viewers: the users of each customer, and a contract sign-in when
        # every device is of its contract.
        "customer_numbers": customers,
        "contract_key": contract_key(customer, contract) if len(contracts) == 1 and customer and contract else None,
        "device_ids": [device["_id"] for device in judged.devices],
        "guard_keys": [guard_key(customer, line.device_id, line.article_number) for line in request.lines],
        "viewers": record_viewers(customer, caller.user_id),
        "placed_at": stamp(placed_at), "placed_by": caller.user_id, "language": language,
        "contact": request.contact.model_dump(), "delivery_address": judged.delivery_address.model_dump(),
        "reference": request.reference, "confirmed_duplicate": request.confirm_duplicate,
        "lines": [line.model_dump() for line in judged.lines], "tracking": None, "delivered_at": None,
    }


def event_fields(order: Document) -> dict[str, object]:
    """What every event of an order carries: whom to mail, in which language, what goes where."""
    return {"order_number": order["order_number"], "customer_number": order.get("customer_number"),
            "contact": Contact(**order["contact"]), "language": order.get("language") or "en",
            "delivery_address": api.DeliveryAddress(**order["delivery_address"]),
            "lines": [api.OrderedLine(**line) for line in order["lines"]]}


def placed_reply(order: Document) -> api.OrderPlacedReply:
    return api.OrderPlacedReply(order_number=order["order_number"],
                                delivery_address=api.DeliveryAddress(**order["delivery_address"]))


# --- delivery defaults ------------------------------------------------------------------------------------------

def defaults_view(caller: Claims, device: Mapping[str, object]) -> str:
    """Whose saved "z. Hd." and "Zusätzl. Info" the caller reads and writes: their customer's for a device of it,
    else their own (a claimant's choice never changes what the customer's users get, nor the other way round)."""
    customer = device.get("customer_number")
    return f"customer:{customer}" if customer and customer == caller.customer_number else f"user:{caller.user_id}"


async def saved_defaults(store: OrderingStore, device: Document, caller: Claims) -> Document | None:
    """The device's saved "z. Hd." and "Zusätzl. Info" in the caller's view, unless saved while it belonged to
    another customer."""
    defaults = await store.defaults_of(device["_id"], defaults_view(caller, device))
    if defaults is None or defaults.get("customer_number") != device.get("customer_number"):
        return None
    return defaults


async def save_defaults(store: OrderingStore, request: api.PlaceOrder, order: Document, caller: Claims) -> None:
    if request.delivery is None or not request.delivery.save_as_default:
        return
    devices = await store.devices_where({"_id": {"$in": list(order["device_ids"])}}, {"customer_number": 1})
    fields = {"attention": request.delivery.attention, "additional_info": request.delivery.additional_info}
    await store.save_defaults([(device["_id"], defaults_view(caller, device),
                                {**fields, "customer_number": device.get("customer_number")})
                               for device in devices], order["placed_at"])


# --- no second order of an article not delivered yet -----------------------------------------------------------

async def refuse_duplicates(store: OrderingStore, keys: Sequence[str], order_id: str, guards: Mapping[str, Document],
                            settings: OrderingSettings, now: datetime) -> None:
    """Refuse with `duplicate_order` naming, per line, the earliest other order holding its guard; entries of orders
    delivered, or never stored within the grace period, are removed on the way (the caller may try again)."""
    holders = {holder for guard in guards.values() for holder in (guard.get("open") or {}) if holder != order_id}
    if not holders:
        return
    stored = await store.orders_by_id(holders)
    grace = timedelta(seconds=settings.ordering_guard_grace_seconds)
    earliest: dict[str, str] = {}
    for key, guard in guards.items():
        live = []
        for holder, entry in (guard.get("open") or {}).items():
            if holder == order_id:
                continue
            order = stored.get(holder)
            stale = order["status"] == "delivered" if order is not None else \
                parse_stamp(str(entry.get("at"))) < now - grace
            if stale:
                await store.release_guards([key], holder)
            else:
                live.append((str(entry.get("at")), str(order["order_number"] if order else entry["order_number"])))
        if live:
            earliest[key] = min(live)[1]
    if earliest:
        fields = {f"lines.{index}.article_number": earliest[key] for index, key in enumerate(keys) if key in earliest}
        raise CommandError("duplicate_order", fields={"order_number": min(earliest.values()), **fields})
