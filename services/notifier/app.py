"""notifier's composition root: the service declaration and what it answers, consumes and runs."""

from __future__ import annotations

from contracts.accounts import (
    EmailChangeRequested,
    EmailConfirmationRequested,
    PasswordChanged,
    PasswordResetRequested,
    ProfileUpdated,
    UserActivated,
    UsernameReminderRequested,
    UserRegistered,
    VerificationDecided,
)
from contracts.metering import ReminderDue
from contracts.notifier import ListDeliveries, RemindersUnsubscribed, Unsubscribe
from contracts.ordering import OrderPlaced, OrderShipped
from contracts.registration import BulkUploadCompleted, DeviceRegisteredEvent, RequestDecided
from contracts.ticketing import TicketOpened, TicketStatusChanged, TicketUpdated
from services.notifier import handlers, orders, reminders, tickets, waiting
from services.notifier.store import UNSUBSCRIBE_TOKENS
from services.runtime.commands import Access, Replay
from services.runtime.service import Service

service = Service("notifier", description="E-mail for every event above, in the recipient's language (CATALOG §7).",
                  outbox_collections=[UNSUBSCRIBE_TOKENS], emits=[RemindersUnsubscribed])

service.on_startup(handlers.create_indexes)
service.background(handlers.retry_due_deliveries)
service.background(waiting.sweep_waiting_mails)

# Every event goes through `late`, the one list of (event, handler): a handler that finds no recipient keeps the
# event waiting, and `late` runs the same handler again once the recipient is known.
late = waiting.LateRecipients(service)

service.command(ListDeliveries.routing_key, ListDeliveries, access=Access.OPERATOR,
                replay=Replay.RERUN)(handlers.list_deliveries)
service.command(Unsubscribe.routing_key, Unsubscribe, access=Access.ANYONE)(reminders.unsubscribe)

late.event(UserRegistered)(handlers.confirm_new_account)
late.event(EmailConfirmationRequested)(handlers.confirm_email)
late.event(PasswordResetRequested)(handlers.send_password_reset)
late.event(PasswordChanged)(handlers.send_password_changed)
late.event(EmailChangeRequested)(handlers.send_email_change_notice)
late.event(UsernameReminderRequested)(handlers.send_username_reminder)
late.event(VerificationDecided)(handlers.send_verification_decision)
late.event(UserActivated)(handlers.remember_activated_user)
late.event(ProfileUpdated)(handlers.remember_profile)
late.event(DeviceRegisteredEvent)(handlers.send_device_registration)
late.event(BulkUploadCompleted)(handlers.send_bulk_result)
late.event(RequestDecided)(handlers.send_request_decision)
late.event(ReminderDue)(reminders.send_reminder)
late.event(OrderPlaced)(orders.send_order_confirmation)
late.event(OrderShipped)(orders.send_shipping_notice)
late.event(TicketOpened)(tickets.send_ticket_receipt)
late.event(TicketStatusChanged)(tickets.send_status_change)
late.event(TicketUpdated)(tickets.notify_service_desk)
