"""notifier: e-mail in the recipient's language, and what an operator sees of it (CATALOG §7)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from contracts.base import Command, Event, PageRequest
from contracts.registration import ReminderRecipient

DeliveryStatus = Literal["sent", "retrying", "failed"]


class ListDeliveries(PageRequest, Command):
    """The mails the notifier sent, is still trying to send, or gave up on; newest first."""

    routing_key: ClassVar[str] = "notifier.operator.list_deliveries"
    recipient: str | None = Field(default=None, min_length=1, max_length=254,
                                  description="Only mails to this address (case-insensitive).",
                                  examples=["c.zimmermann@example.com"])
    event: str | None = Field(default=None, min_length=1, max_length=200,
                              description="Only mails caused by this event (its routing key).",
                              examples=["accounts.password_reset.requested"])
    status: DeliveryStatus | None = Field(default=None, description="Only mails in this state.")


class Delivery(BaseModel):
    """One mail to one recipient, caused by one event. Its body is not shown: it may hold one-time links."""

    id: str = Field(description="`<event message_id>:<recipient>`: each pair is mailed at most once.")
    event: str = Field(examples=["accounts.user.registered"])
    event_message_id: str
    mail: str = Field(description="Which mail.", examples=["account_confirmation"])
    recipient: str = Field(examples=["c.zimmermann@example.com"])
    language: str = Field(examples=["de"])
    subject: str
    status: DeliveryStatus = Field(description="`retrying` until it is sent or given up on; also before "
                                               "the first attempt has finished.")
    attempts: int = Field(description="Attempts made so far.")
    next_attempt_at: datetime | None = Field(default=None, description="When `retrying`: the next attempt (UTC).")
    last_error: str | None = Field(default=None, description="The last SMTP error or reason for giving up.")
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None


class Unsubscribe(Command):
    """The one-click link of a reminder mail (RFC 8058): turns that device's reminders off for that address.

    A second click changes nothing and still answers ok."""

    routing_key: ClassVar[str] = "notifier.unsubscribe"
    token: str = Field(min_length=1, max_length=200)


class RemindersUnsubscribed(Event):
    """Someone followed a reminder's unsubscribe link; registration turns the device's reminders off for them."""

    routing_key: ClassVar[str] = "notifier.reminders.unsubscribed"
    device_id: str
    email: str = Field(description="The address the reminder went to.")
    recipient: ReminderRecipient = Field(description="Whose reminder it was, as `metering.reminder.due` named it: "
                                         "the customer's own setting, or a claimant's (`user_id`).")
    unsubscribed_at: datetime
