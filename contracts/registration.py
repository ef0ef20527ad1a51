"""registration: product models, installed base, devices, warranty (CATALOG §3)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, StringConstraints

from contracts.base import Command, Event, FileObject, Message, PageRequest, SingleLine


def normalise_serial(serial: str) -> str:
    """Serials are compared without case or spaces: `ak6c 004746` is `AK6C004746` (every service that looks one up)."""
    return "".join(serial.split()).upper()


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


class ListModels(PageRequest, Command):
    """Beyond the catalogue: the product models by name, for a form that offers them (the register page's list)."""

    routing_key: ClassVar[str] = "registration.list_models"
    text: str | None = Field(default=None, max_length=80, description="Part of the model's name, any case.")


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
    building_location: SingleLine | None = Field(default=None, max_length=200)
    contact_name: SingleLine | None = Field(default=None, max_length=200)
    friendly_name: SingleLine | None = Field(default=None, max_length=100)
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
    friendly_name: SingleLine | None = Field(max_length=100)


class SetReminders(Command):
    routing_key: ClassVar[str] = "registration.set_reminders"
    device_id: str = Field(min_length=1, max_length=64)
    reminders: bool
    reminder_email: SingleLine | None = Field(default=None, max_length=254)


class DeregisterDevices(Command):
    routing_key: ClassVar[str] = "registration.deregister_devices"
    device_ids: list[str] = Field(min_length=1, max_length=500)


# --- events -----------------------------------------------------------------------------------

class ModelsUpdated(Event):
    routing_key: ClassVar[str] = "registration.models.updated"
    models: list[ProductModel]


class ReminderRecipient(BaseModel):
    """One recipient of a device's meter-reading reminders."""

    customer_number: str | None = Field(default=None, description="Set for the customer's own reminders (with "
                                        "`email`, else the customer's contacts).")
    user_id: str | None = Field(default=None, description="Set for a claimant outside the customer who turned "
                                "reminders on for themselves, and for the registering user of a device of no "
                                "customer (with `email`, else their account's address).")
    email: str | None = None


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
    version: int = Field(default=1, description="Grows with every change; older copies are ignored. Each version "
                         "is issued once, and the event with the highest one is the stored state.")
    reminder_recipients: list[ReminderRecipient] = Field(
        default_factory=list, description="Who gets meter-reading reminders for this device: the customer where "
        "its reminders are on and it is visible, plus each claimant outside the customer who turned them on for "
        "themselves. `reminders`/`reminder_email` stay the customer's own settings.")
    last_readings: list[CounterReading] = Field(
        default_factory=list, description="The last value of each counter the vendor's ERP knew (installed base), "
        "where metering starts from.")
    registered_by: str | None = Field(default=None, description="The user who registered it (who alone sees a "
                                      "device of no customer).")
    claimants: list[str] = Field(default_factory=list, description="Users outside the device's customer who claimed "
                                 "it and see it (not hidden by them).")


class DeviceProvisioned(DeviceState):
    """A device of the installed base (from the vendor's ERP) and the customer it belongs to."""

    routing_key: ClassVar[str] = "registration.device.provisioned"
    customer_number: str | None = None


class DeviceRegisteredEvent(DeviceState):
    """A customer or dealer registered a device; the mail confirms it with its warranty."""

    routing_key: ClassVar[str] = "registration.device.registered"
    registered_by: str
    language: str = "en"
    warranty: Warranty | None = None
    upload_id: str | None = Field(default=None, description="Set for a row of a bulk upload: its one result mail "
                                                             "covers the device, so no mail goes out per device.")


class DeviceUpdated(DeviceState):
    routing_key: ClassVar[str] = "registration.device.updated"


class DeviceDeregistered(DeviceState):
    routing_key: ClassVar[str] = "registration.device.deregistered"


# === claims of installed-base devices and address changes (services/registration/requests.py) ================

RequestKind = Literal["same_location_claim", "address_change"]


class ClaimDevice(Command):
    """Adds an installed-base device to the caller's view: its serial and the postcode where it stands."""

    routing_key: ClassVar[str] = "registration.claim_device"
    serial_number: str = Serial
    postal_code: str = Field(min_length=1, max_length=20, description="Of the device's location; case and spaces "
                             "ignored.", examples=["0150"])


class SameLocationDevice(BaseModel):
    device_id: str
    serial_number: str
    model: str


class ClaimedDevice(BaseModel):
    device_id: str
    same_location: list[SameLocationDevice] = Field(description="Other devices of the same customer at the same "
                                                    "address that the caller does not see yet; ask for them with "
                                                    "`claim_same_location`. Empty unless the claim was granted at "
                                                    "once.")
    status: Literal["claimed", "pending_approval"] = Field(
        default="claimed", description="`pending_approval`: the device belongs to another customer than the "
        "caller's (or the caller already claimed one of that customer at that address); an operator decides.")
    request_id: str | None = Field(default=None, description="The request an operator decides, when pending.")


DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SameLocationItem(Message):
    """One device of `claim_same_location`, with the settings it gets once approved (unset: left as they are)."""

    device_id: str = Field(min_length=1, max_length=64)
    friendly_name: SingleLine | None = Field(default=None, max_length=100)
    reminder_email: SingleLine | None = Field(default=None, max_length=254)
    reminders: bool | None = None


class ClaimSameLocation(Command):
    """Asks for more devices at the address of a device the caller claimed; an operator approves.

    Name the devices in `device_ids` (CATALOG §3), in `devices` with the settings each gets once approved, or
    both (a device in both gets the settings of `devices`); at least one device in all, else `validation_failed`.
    """

    routing_key: ClassVar[str] = "registration.claim_same_location"
    device_ids: list[DeviceId] = Field(default_factory=list, max_length=200, description="The devices asked for (the "
                                  "`same_location` of `claim_device`).", examples=[["3f2a9c..."]])
    devices: list[SameLocationItem] = Field(default_factory=list, max_length=200, description="Optional: devices "
                                            "with the settings they get in the caller's view once approved.")


class PendingRequest(BaseModel):
    request_id: str
    status: Literal["pending_approval"] = "pending_approval"


class RequestAddressChange(Command):
    """A permanent change of a device's address; once approved it applies to every device at that address."""

    routing_key: ClassVar[str] = "registration.request_address_change"
    device_id: str = Field(min_length=1, max_length=64)
    address: Location
    reason: str = Field(min_length=1, max_length=2000)


class ListRequests(PageRequest, Command):
    routing_key: ClassVar[str] = "registration.operator.list_requests"
    kind: RequestKind | None = None


class RequestDevice(BaseModel):
    """A device a request concerns, as it reads now, with the settings a claim asks for."""

    device_id: str
    serial_number: str
    model: str
    customer_number: str | None = None
    contract_number: str | None = None
    location: Location = Field(default_factory=Location)
    friendly_name: str | None = None
    reminder_email: str | None = None
    reminders: bool | None = None


class RequestView(BaseModel):
    request_id: str
    kind: RequestKind
    status: str
    requested_by: str
    customer_number: str | None = None
    requested_at: datetime | None = None
    reason: str | None = None
    location: Location = Field(default_factory=Location, description="The address the request is about.")
    address: Location | None = Field(default=None, description="The new address (address changes).")
    devices: list[RequestDevice] = Field(description="Claims: the devices asked for. Address changes: every device "
                                         "at the old address, all of which move.")
    ticket_number: str | None = Field(default=None, description="An address change given as permanent with this "
                                      "service request (ticketing).")


class DecideRequest(Command):
    routing_key: ClassVar[str] = "registration.operator.decide_request"
    request_id: str = Field(min_length=1, max_length=64)
    approve: bool
    reason: str | None = Field(default=None, max_length=2000)


class Decision(BaseModel):
    status: Literal["approved", "rejected"]


class DeviceClaimed(DeviceState):
    """A user added the device to their view (by serial and postcode, or by an approved same-location claim)."""

    routing_key: ClassVar[str] = "registration.device.claimed"
    claimed_by: str


class RequestDecided(Event):
    """An operator decided a claim or an address change; the notifier mails the requester."""

    routing_key: ClassVar[str] = "registration.request.decided"
    request_id: str
    kind: str
    approved: bool
    reason: str | None = None
    user_id: str = Field(description="Who asked.")
    device_ids: list[str] = Field(default_factory=list, description="The devices claimed or moved.")
    language: str = "en"


# --- bulk registration from Excel files ---------------------------------------------------------------

BulkStatus = Literal["queued", "processing", "processed", "failed"]


class BulkTemplate(Command):
    """The xlsx to fill in: one row per device, the columns of `register_device`, an instructions sheet."""

    routing_key: ClassVar[str] = "registration.bulk_template"
    language: str | None = Field(default=None, max_length=16, description="`de`, `en` or `nb`; else the "
                                 "request's `accept-language`.", examples=["de"])


class BulkUpload(Command):
    """An xlsx of at most 25 devices (PORTAL_BULK_MAX_ROWS, `too_many_rows` beyond), registered in the
    background."""

    routing_key: ClassVar[str] = "registration.bulk_upload"
    file: FileObject
    warranty_accepted: bool = Field(default=False, description="Optional: true accepts the warranty statement for "
                                    "every row of the file. Otherwise each row accepts it in the template's column "
                                    "\"Warranty statement accepted\" (yes/ja, TRUE, 1 or x); a row with neither is "
                                    "rejected as `warranty_not_accepted`.")


class BulkUploadQueued(BaseModel):
    upload_id: str
    status: BulkStatus


class ListBulkUploads(PageRequest, Command):
    """The caller's own uploads, newest first."""

    routing_key: ClassVar[str] = "registration.list_bulk_uploads"


class BulkUploadSummary(BaseModel):
    upload_id: str
    filename: str
    uploaded_at: datetime
    status: BulkStatus
    total: int = Field(description="Device rows in the file.")
    processed: int = Field(description="Rows registered.")
    unprocessed: int = Field(description="Rows rejected.")
    processed_at: datetime | None = None
    reason: str | None = Field(default=None, description="Why a `failed` upload was refused as a whole.",
                               examples=["too_many_rows"])
    limit: int | None = Field(default=None, description="With `too_many_rows`: the most device rows one upload may "
                              "hold (PORTAL_BULK_MAX_ROWS when the upload was processed).", examples=[25])
    message: str | None = Field(default=None, description="`reason` in words, in the caller's language, naming "
                                "`limit` where there is one.")


class BulkResult(Command):
    """The result xlsx of a processed upload: `not_found` for another user's or a failed upload, `conflict`
    while it is still queued or processing."""

    routing_key: ClassVar[str] = "registration.bulk_result"
    upload_id: str = Field(min_length=1, max_length=64)


class BulkUploadCompleted(Event):
    """A bulk upload was processed (each row registered or rejected) or failed as a whole."""

    routing_key: ClassVar[str] = "registration.bulk_upload.completed"
    upload_id: str
    user_id: str
    filename: str
    status: BulkStatus
    total: int
    processed: int
    unprocessed: int
    reason: str | None = None
    limit: int | None = Field(default=None, description="With `too_many_rows`: the most device rows one upload may "
                              "hold (PORTAL_BULK_MAX_ROWS), for the mail to name it.", examples=[25])
    language: str = "en"
    result_file: FileObject | None = Field(default=None, description="The result xlsx; left out when over ~5 MB "
                                           "(fetch it with `registration.bulk_result`).")


class KnownSerial(BaseModel):
    """The reply of `lookup_serial`: the model a serial number belongs to."""

    model: str
    article_number: str


class ModelName(BaseModel):
    """An item of `list_models`: a model and whether it has a hint where its serial is."""

    model: str
    has_serial_hint: bool


class SerialHintFound(BaseModel):
    """The reply of `serial_hint`: where to find the serial number on the model (none known: null)."""

    model: str
    hint: str | None = None
