"""metering: meter readings, billing periods, reminders (CATALOG §4)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from contracts.base import Command, Event, FileObject, Message, PageRequest
from contracts.registration import DeviceId, Location, ReminderRecipient

Source = Literal["customer", "estimate", "device"]
ReminderKind = Literal["opening", "second"]

# The columns of a readings sheet (xlsx or csv) `metering.submit_bulk` reads, in this order when it writes one:
# the reminder mail attaches such a sheet pre-filled with all but `value` (and `reading_date`, today when empty).
# A row whose `value` is empty is skipped, so a customer types in only what they read.
READING_SHEET_COLUMNS = ("serial_number", "counter", "last_value", "last_date", "value", "reading_date")
READING_SHEET_NAME = "readings"
# A window closes 10 days after its period's end (CATALOG §4): only then are its devices overdue.
WINDOW_CLOSES_AFTER = timedelta(days=10)


def last_closed_quarter(today: date) -> date:
    """The end of the latest quarter whose reading window has closed: the `period_end` an operator asks
    `metering.operator.overdue` about first (the back office's and the CLI's default)."""
    end = date(today.year, (today.month - 1) // 3 * 3 + 1, 1) - timedelta(days=1)
    while end + WINDOW_CLOSES_AFTER >= today:
        end = date(end.year, (end.month - 1) // 3 * 3 + 1, 1) - timedelta(days=1)
    return end

CounterName = Field(min_length=1, max_length=40, examples=["mono"])
MAX_COUNTER = 10**12
CounterValueField = Field(ge=0, le=MAX_COUNTER, description="The counter as the device shows it: an integer >= 0.",
                          examples=[8500])


class CounterValue(Message):
    counter: str = CounterName
    value: StrictInt = CounterValueField


class PreviewReading(Command):
    """What a reading would mean (printed pages per counter, warnings), with every check of a submit; stores nothing."""

    routing_key: ClassVar[str] = "metering.preview_reading"
    device_id: str = Field(min_length=1, max_length=64)
    readings: list[CounterValue] = Field(min_length=1, max_length=20)
    reading_date: date | None = Field(default=None, description="Today (UTC) when not given.")


class SubmitReading(PreviewReading):
    """One reading of every counter of a device ("Akzeptieren" after the preview)."""

    routing_key: ClassVar[str] = "metering.submit_reading"


class CounterPreview(BaseModel):
    counter: str
    last_date: date | None = Field(description="The date of the last reading (or of the ERP's last value).")
    last_value: int | None
    new_value: int
    printed_pages: int = Field(description="`new_value - last_value` (the new value when nothing was read before).")


class ReadingWarning(BaseModel):
    code: Literal["unusually_high"] = Field(description="The pages since the last reading are far above the "
                                            "device's own usual volume per day: check for a typo (an extra digit).")
    counter: str
    message: str


class ReadingPreview(BaseModel):
    device_id: str
    reading_date: date
    period_end: date = Field(description="The billing period this reading counts for.")
    counters: list[CounterPreview]
    warnings: list[ReadingWarning] = Field(default_factory=list, description="The reading is still accepted; a "
                                           "submitted one keeps the flag for the contract team.")


class SubmittedCounter(BaseModel):
    counter: str
    value: int
    printed_pages: int


class ReadingSubmittedReply(BaseModel):
    reading_id: str
    reading_date: date
    period_end: date
    counters: list[SubmittedCounter]
    warnings: list[ReadingWarning] = Field(default_factory=list)


class ListDue(PageRequest, Command):
    """The caller's devices whose reading for the current billing period is due (its window is open) and missing."""

    routing_key: ClassVar[str] = "metering.list_due"
    device_ids: list[DeviceId] | None = Field(default=None, max_length=200, description="Optional: only these of "
                                              "the caller's devices (a page's); others' ids find nothing.")


class DueCounter(BaseModel):
    counter: str
    last_date: date | None
    last_value: int | None
    period_end: date


class DueDevice(BaseModel):
    device_id: str
    serial_number: str
    model: str
    friendly_name: str | None = None
    location: Location = Field(default_factory=Location)
    period_end: date
    window_closes: date = Field(description="The last day a reading counts for this period.")
    counters: list[DueCounter]


class BulkReading(Message):
    serial_number: str = Field(min_length=3, max_length=40, examples=["AK6C004746"])
    counter: str = CounterName
    value: StrictInt = CounterValueField
    reading_date: date | None = Field(default=None, description="Today (UTC) when not given.")


class SubmitBulk(Command):
    """Readings of many devices at once: a list, or an xlsx or csv file with the columns of `READING_SHEET_COLUMNS`
    (the sheet the reminder mail attaches). Each device is judged on its own, with the rules of `submit_reading`."""

    routing_key: ClassVar[str] = "metering.submit_bulk"
    readings: list[BulkReading] | None = Field(default=None, min_length=1, max_length=10_000)
    file: FileObject | None = None

    @model_validator(mode="after")
    def one_source(self) -> SubmitBulk:
        if (self.readings is None) == (self.file is None):
            raise ValueError("give either readings or file")
        return self


class RejectedRow(BaseModel):
    row: int = Field(description="1-based: the list's index + 1, or the sheet's row number (the header is row 1).")
    serial_number: str | None = None
    code: str = Field(examples=["reading_lower_than_last"])
    message: str


class BulkOutcome(BaseModel):
    accepted: int = Field(description="Devices whose reading was stored.")
    rejected: list[RejectedRow]
    reading_ids: list[str] = Field(default_factory=list)


class LinkReading(Message):
    device_id: str = Field(min_length=1, max_length=64)
    counter: str = CounterName
    value: StrictInt = CounterValueField


class SubmitByLink(Command):
    """Readings through the personal link of a reminder mail, without signing in: for the devices it lists, until
    the window closes."""

    routing_key: ClassVar[str] = "metering.submit_by_link"
    token: str = Field(min_length=1, max_length=200)
    readings: list[LinkReading] = Field(min_length=1, max_length=2000)
    reading_date: date | None = Field(default=None, description="Today (UTC) when not given.")


class History(Command):
    routing_key: ClassVar[str] = "metering.history"
    device_id: str = Field(min_length=1, max_length=64)


class HistoryReading(BaseModel):
    reading_id: str
    reading_date: date
    period_end: date
    source: Source
    counters: list[SubmittedCounter]
    flagged: bool = Field(default=False, description="Submitted despite a plausibility warning.")


class PeriodPages(BaseModel):
    period_end: date
    printed_pages: dict[str, int] = Field(description="Per counter.")
    total: int


class DeviceHistory(BaseModel):
    device_id: str
    serial_number: str
    readings: list[HistoryReading] = Field(description="Newest first; `source` is `customer`, `estimate` or "
                                           "`device`.")
    periods: list[PeriodPages] = Field(description="Printed pages per billing period, newest first.")


class Usage(Command):
    """Pages per device per period for the caller's whole fleet, as JSON or as an xlsx with a chart."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    routing_key: ClassVar[str] = "metering.usage"
    from_: date = Field(alias="from", description="First period end included.")
    to: date = Field(description="Last period end included.")
    format: Literal["json", "xlsx"] = "json"

    @model_validator(mode="after")
    def ordered(self) -> Usage:
        if self.to < self.from_:
            raise ValueError("to is before from")
        return self


class UsageRow(BaseModel):
    device_id: str
    serial_number: str
    model: str
    friendly_name: str | None = None
    period_end: date
    printed_pages: dict[str, int]
    total: int


class UsageReport(BaseModel):
    items: list[UsageRow] = Field(description="One per device and period, by serial then period.")
    file: FileObject | None = Field(default=None, description="With `format: xlsx`: the same rows and a chart.")


class DeviceReport(Command):
    """A reading an e-maintenance device reported itself (through the vendor's remote service)."""

    routing_key: ClassVar[str] = "metering.device_report"
    serial_number: str = Field(min_length=3, max_length=40)
    readings: list[CounterValue] = Field(min_length=1, max_length=20)
    reading_date: date


class RecordEstimate(Command):
    """The contract team's estimate where no reading came; a later customer reading may not go below it."""

    routing_key: ClassVar[str] = "metering.operator.record_estimate"
    device_id: str = Field(min_length=1, max_length=64)
    readings: list[CounterValue] = Field(min_length=1, max_length=20)
    reading_date: date


class ReadingRecorded(BaseModel):
    reading_id: str


class RunReminders(Command):
    """Run the reminder schedule for that day now (also for past days); the built-in scheduler runs it daily."""

    routing_key: ClassVar[str] = "metering.operator.run_reminders"
    as_of: date


class RemindersRun(BaseModel):
    reminders: int = Field(description="Reminder mails this run asked for (`metering.reminder.due`).")
    overdue: int = Field(description="Devices this run found overdue (`metering.reading.overdue`).")


class ListOverdue(PageRequest, Command):
    routing_key: ClassVar[str] = "metering.operator.overdue"
    period_end: date


class OverdueDevice(BaseModel):
    device_id: str
    serial_number: str
    model: str
    customer_number: str | None = None
    contract_number: str | None = None
    period_end: date
    window_closed: date
    last_date: date | None = None


# --- events -------------------------------------------------------------------------------------------

class ReadingSubmitted(Event):
    routing_key: ClassVar[str] = "metering.reading.submitted"
    reading_id: str
    device_id: str
    serial_number: str
    customer_number: str | None = None
    contract_number: str | None = None
    reading_date: date
    period_end: date
    source: Source
    counters: list[SubmittedCounter]
    flagged: bool = False
    submitted_by: str | None = Field(default=None, description="The user, or None for a personal link or device.")


class ReminderCounter(BaseModel):
    counter: str
    last_value: int | None = None
    last_date: date | None = None


class LinkDevice(BaseModel):
    device_id: str
    serial_number: str
    model: str
    friendly_name: str | None = None
    location: Location = Field(default_factory=Location)
    counters: list[ReminderCounter] = Field(description="Each counter with its last value and date (the last "
                                            "reading, else the ERP's last value).")


class ReminderDevice(LinkDevice):
    recipient: ReminderRecipient | None = Field(
        default=None, description="The device's own entry among its reminder recipients that put it in this mail: "
        "one address may receive the devices of several customers, and an unsubscribe is for that entry.")


class LinkDevices(Command):
    """The devices of a reminder's personal link, for the page it opens without signing in: those it lists that
    still belong to the customer they belonged to (as `submit_by_link`), until the window closes."""

    routing_key: ClassVar[str] = "metering.link_devices"
    token: str = Field(min_length=1, max_length=200)


class LinkedDevices(BaseModel):
    period_end: date = Field(description="The billing period the reminder is for.")
    window_closes: date = Field(description="The last day the link works.")
    devices: list[LinkDevice] = Field(description="By serial number.")


class ReminderDue(Event):
    """One reminder mail: a recipient and all their devices whose reading for the period is missing."""

    routing_key: ClassVar[str] = "metering.reminder.due"
    reminder_id: str
    recipient: ReminderRecipient
    language: str | None = Field(default=None, description="Not known to metering: the notifier mails in the "
                                 "recipient's language when it knows the address, else in the customer's users'.")
    kind: ReminderKind = Field(description="`opening` when the window opens, `second` 3 days after the period end.")
    period_end: date
    window_closes: date
    devices: list[ReminderDevice]
    reading_url: str = Field(description="The personal link: `PORTAL_PUBLIC_URL/readings?token=<token>` for "
                             "`metering.submit_by_link`, valid until the window closes, for these devices only.")


class ReadingOverdue(Event):
    routing_key: ClassVar[str] = "metering.reading.overdue"
    device_id: str
    serial_number: str
    model: str
    customer_number: str | None = None
    contract_number: str | None = None
    period_end: date
    window_closed: date
    detected_at: datetime
