"""registration: product models, installed base, devices, warranty (CATALOG §3)."""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from contracts.base import Command, Event, FileObject, Message, PageRequest

Serial = Field(min_length=3, max_length=40, description="As printed on the rating plate; case and spaces ignored.",
               examples=["AK6C004746"])


class ProductModel(Message):
    model: str = Field(min_length=1, max_length=80, examples=["ES5431dn"])
    article_number: str = Field(min_length=1, max_length=40, examples=["01332801"])
    serial_pattern: str = Field(min_length=1, max_length=200, description="A regular expression every serial of "
                                "this model matches in full.", examples=["^AK[0-9A-Z]{8}$"])
    counters: list[str] = Field(min_length=1, max_length=10, examples=[["mono", "color"]])
    serial_hint: str | None = Field(default=None, max_length=2000, description="Where to find the serial.")


class UpsertModels(Command):
    routing_key: ClassVar[str] = "registration.operator.upsert_models"
    models: list[ProductModel] = Field(min_length=1, max_length=2000)


class Location(Message):
    name: str | None = Field(default=None, max_length=200)
    street: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=20)
    city: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=100)
    building_location: str | None = Field(default=None, max_length=200, examples=["Reception"])


class CounterReading(Message):
    name: str = Field(min_length=1, max_length=40)
    value: int = Field(ge=0)
    date: date


class InstalledDevice(Message):
    serial_number: str = Serial
    model: str = Field(min_length=1, max_length=80)
    customer_number: str = Field(min_length=1, max_length=32)
    contract_number: str | None = Field(default=None, max_length=32)
    location: Location = Field(default_factory=Location)
    counters: list[CounterReading] = Field(default_factory=list, max_length=20)
    e_maintenance: bool = False


class ImportInstalledBase(Command):
    routing_key: ClassVar[str] = "registration.operator.import_installed_base"
    devices: list[InstalledDevice] = Field(min_length=1, max_length=10_000)


class Rejected(BaseModel):
    index: int
    code: str


class Imported(BaseModel):
    imported: int
    rejected: list[Rejected]


class LookupSerial(Command):
    routing_key: ClassVar[str] = "registration.lookup_serial"
    serial_number: str = Serial


class SerialHint(Command):
    routing_key: ClassVar[str] = "registration.serial_hint"
    model: str = Field(min_length=1, max_length=80)


class SameAsContact(Message):
    same_as_contact: Literal[True]


class Questionnaire(Message):
    purchase_reason: str | None = Field(default=None, max_length=200)
    intended_years: int | None = Field(default=None, ge=0, le=50)
    print_category: str | None = Field(default=None, max_length=100)
    print_application: str | None = Field(default=None, max_length=100)


class EndCustomer(Message):
    """The customer a dealer registers for."""

    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    customer_number: str | None = Field(default=None, max_length=32)


class RegisterDevice(Command):
    routing_key: ClassVar[str] = "registration.register_device"
    serial_number: str = Serial
    purchase_date: date
    proof_of_purchase: FileObject
    warranty_accepted: bool
    location: SameAsContact | Location
    building_location: str | None = Field(default=None, max_length=200)
    contact_name: str | None = Field(default=None, max_length=200)
    friendly_name: str | None = Field(default=None, max_length=100)
    questionnaire: Questionnaire | None = None
    end_customer: EndCustomer | None = None


class Warranty(BaseModel):
    start_date: date
    end_date: date
    months: int
    extended: bool = Field(description="Registered within 30 days of purchase: 36 months instead of 12.")


class DeviceRegistered(BaseModel):
    device_id: str
    model: str
    article_number: str
    warranty: Warranty


class DeviceFilter(PageRequest):
    model: str | None = Field(default=None, max_length=80)
    serial_number: str | None = Field(default=None, max_length=40)
    location: str | None = Field(default=None, max_length=200, description="Part of the location's name.")
    city: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    text: str | None = Field(default=None, max_length=200, description="Searched in serial, model, name, address.")


class ListDevices(DeviceFilter, Command):
    routing_key: ClassVar[str] = "registration.list_devices"


class GetDevice(Command):
    routing_key: ClassVar[str] = "registration.get_device"
    device_id: str | None = Field(default=None, max_length=64)
    serial_number: str | None = Field(default=None, max_length=40)


class Device(BaseModel):
    device_id: str
    serial_number: str
    model: str
    article_number: str | None = None
    customer_number: str | None = None
    contract_number: str | None = None
    friendly_name: str | None = None
    location: Location = Field(default_factory=Location)
    contact_name: str | None = None
    counters: list[str] = Field(default_factory=list)
    last_readings: list[CounterReading] = Field(default_factory=list)
    warranty: Warranty | None = None
    reminders: bool = True
    reminder_email: str | None = None
    e_maintenance: bool = False
    registered_at: datetime | None = None


class RenameDevice(Command):
    routing_key: ClassVar[str] = "registration.rename_device"
    device_id: str = Field(min_length=1, max_length=64)
    friendly_name: str | None = Field(max_length=100)


class SetReminders(Command):
    routing_key: ClassVar[str] = "registration.set_reminders"
    device_id: str = Field(min_length=1, max_length=64)
    reminders: bool
    reminder_email: str | None = Field(default=None, max_length=254)


class DeregisterDevices(Command):
    routing_key: ClassVar[str] = "registration.deregister_devices"
    device_ids: list[str] = Field(min_length=1, max_length=500)


# --- events -----------------------------------------------------------------------------------

class ModelsUpdated(Event):
    routing_key: ClassVar[str] = "registration.models.updated"
    models: list[ProductModel]


class DeviceState(Event):
    """What metering, ordering, ticketing and accounts keep of a device."""

    device_id: str
    serial_number: str
    model: str
    article_number: str | None = None
    counters: list[str] = Field(default_factory=list)
    customer_number: str | None = None
    contract_number: str | None = None
    location: Location = Field(default_factory=Location)
    friendly_name: str | None = None
    reminders: bool = True
    reminder_email: str | None = None
    e_maintenance: bool = False
    visible: bool = Field(default=True, description="False once deregistered: hidden from views and reminders.")
    version: int = Field(default=1, description="Grows with every change; older copies are ignored.")


class DeviceProvisioned(DeviceState):
    """A device of the installed base (from the vendor's ERP) and the customer it belongs to."""

    routing_key: ClassVar[str] = "registration.device.provisioned"
    customer_number: str | None = None


class DeviceRegisteredEvent(DeviceState):
    """A customer or dealer registered a device; the mail confirms it with its warranty."""

    routing_key: ClassVar[str] = "registration.device.registered"
    registered_by: str
    recipient_email: str | None = None
    language: str = "en"
    warranty: Warranty | None = None


class DeviceUpdated(DeviceState):
    routing_key: ClassVar[str] = "registration.device.updated"


class DeviceDeregistered(DeviceState):
    routing_key: ClassVar[str] = "registration.device.deregistered"
