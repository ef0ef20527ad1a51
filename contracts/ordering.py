"""ordering: consumables within the service contract, one delivery address per order (CATALOG §5)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, StrictInt

from contracts.base import Command, Contact, Event, Message, PageRequest, SingleLine
from contracts.registration import Location

ConsumableKind = Literal["toner", "drum", "fuser", "belt", "waste", "other"]
OrderStatus = Literal["placed", "shipped", "delivered"]
OrderNumber = Field(min_length=1, max_length=32, description="Human-readable and unique, e.g. `OR-2026-000042`.",
                    examples=["OR-2026-000042"])


def model_key(model: str) -> str:
    """The catalogue's key of a model: registration's `ES5462 MFP` and an operator's `es5462  mfp` are one model,
    with one list of consumables (`UpsertConsumables` replaces the list of the model's key). Here because ordering
    keys its lists by it and whoever sends lists (the operators' CLI, the back office) groups rows by it."""
    return " ".join(unicodedata.normalize("NFKC", model).casefold().split())


class Consumable(Message):
    article_number: str = Field(min_length=1, max_length=40, examples=["44973512"])
    description: SingleLine = Field(min_length=1, max_length=200, examples=["TONER-K-ES5431/3452/5462-7K"])
    kind: ConsumableKind
    color: SingleLine | None = Field(default=None, max_length=40, examples=["black"])
    included_in_contract: bool = Field(default=True, description="Included in a service contract that includes "
                                       "consumables (no charge for the customer).")


class UpsertConsumables(Command):
    """The consumables of one model (re-runnable: the list replaces the model's list)."""

    routing_key: ClassVar[str] = "ordering.operator.upsert_consumables"
    model: str = Field(min_length=1, max_length=80, examples=["ES5431dn"])
    items: list[Consumable] = Field(min_length=1, max_length=500)


class DeliveryDefaults(BaseModel):
    attention: str | None = Field(default=None, description="\"z. Hd.\"")
    additional_info: str | None = Field(default=None, description="\"Zusätzl. Info\"")


class ListOrderable(Command):
    """The consumables of the device's model: the customer never needs an article number."""

    routing_key: ClassVar[str] = "ordering.list_orderable"
    device_id: str = Field(min_length=1, max_length=64)


class Orderable(BaseModel):
    device_id: str
    serial_number: str
    model: str
    location: Location
    covered: bool = Field(description="Under an active contract that includes consumables: orders are possible.")
    delivery_defaults: DeliveryDefaults
    items: list[Consumable]


class OrderLine(Message):
    device_id: str = Field(min_length=1, max_length=64)
    article_number: str = Field(min_length=1, max_length=40)
    quantity: StrictInt = Field(ge=1, le=10)


class DeliveryChange(Message):
    """Only these may differ from the devices' location; `save_as_default` keeps them for each device of the order."""

    attention: SingleLine | None = Field(default=None, max_length=120)
    additional_info: SingleLine | None = Field(default=None, max_length=300)
    save_as_default: bool = False


class PlaceOrder(Command):
    routing_key: ClassVar[str] = "ordering.place_order"
    lines: list[OrderLine] = Field(min_length=1, max_length=50)
    contact: Contact
    delivery: DeliveryChange | None = None
    reference: SingleLine | None = Field(default=None, max_length=60, description="The customer's reference "
                                         "(\"Ihr Zeichen\").")
    confirm_duplicate: bool = Field(default=False, description="Order an article again for a device although an "
                                    "earlier order of it is not delivered yet (else `duplicate_order`).")


class DeliveryAddress(Location):
    attention: str | None = None
    additional_info: str | None = None


class OrderPlacedReply(BaseModel):
    order_number: str
    status: Literal["placed"] = "placed"
    delivery_address: DeliveryAddress


class GetOrder(Command):
    routing_key: ClassVar[str] = "ordering.get_order"
    order_number: str = OrderNumber


class OrderedLine(BaseModel):
    device_id: str
    serial_number: str
    model: str
    article_number: str
    description: str
    kind: ConsumableKind
    quantity: int
    included_in_contract: bool


class Tracking(BaseModel):
    carrier: str
    tracking_number: str
    tracking_url: str | None = None
    shipped_at: datetime


class Order(BaseModel):
    order_number: str
    status: OrderStatus
    customer_number: str | None
    contract_number: str | None
    placed_at: datetime
    placed_by: str
    contact: Contact
    delivery_address: DeliveryAddress
    reference: str | None = None
    lines: list[OrderedLine]
    tracking: Tracking | None = None
    delivered_at: datetime | None = None


class ListOrders(PageRequest, Command):
    """The caller's orders, newest first."""

    routing_key: ClassVar[str] = "ordering.list_orders"
    device_id: str | None = Field(default=None, max_length=64)
    status: OrderStatus | None = None
    order_number: str | None = Field(default=None, max_length=32, description="Quick search: part of the number.")


class OperatorListOrders(PageRequest, Command):
    """What the back office ships: orders by status, oldest first."""

    routing_key: ClassVar[str] = "ordering.operator.list_orders"
    status: OrderStatus | None = "placed"


class MarkShipped(Command):
    routing_key: ClassVar[str] = "ordering.operator.mark_shipped"
    order_number: str = OrderNumber
    carrier: SingleLine = Field(min_length=1, max_length=80, examples=["DHL"])
    tracking_number: SingleLine = Field(min_length=1, max_length=80)
    tracking_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://\S+$")


class MarkDelivered(Command):
    routing_key: ClassVar[str] = "ordering.operator.mark_delivered"
    order_number: str = OrderNumber


class StatusReply(BaseModel):
    status: OrderStatus


# --- events -------------------------------------------------------------------------------------------

class OrderEvent(Event):
    order_number: str
    customer_number: str | None = None
    contact: Contact = Field(description="Who gets the mails: the order's contact.")
    language: str = Field(default="en", description="The language of the user who placed the order.")
    delivery_address: DeliveryAddress
    lines: list[OrderedLine]


class OrderPlaced(OrderEvent):
    routing_key: ClassVar[str] = "ordering.order.placed"
    reference: str | None = None
    placed_at: datetime


class OrderShipped(OrderEvent):
    routing_key: ClassVar[str] = "ordering.order.shipped"
    tracking: Tracking


class OrderDelivered(OrderEvent):
    routing_key: ClassVar[str] = "ordering.order.delivered"
    delivered_at: datetime
