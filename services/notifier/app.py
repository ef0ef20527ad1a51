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
from services.notifier import handlers, orders, reminders, tickets
from services.notifier.store import UNSUBSCRIBE_TOKENS
from services.runtime.commands import Access, Replay
from services.runtime.service import Service

service = Service("notifier", description="E-mail for every event above, in the recipient's language (CATALOG §7).",
                  outbox_collections=[UNSUBSCRIBE_TOKENS], emits=[RemindersUnsubscribed])

service.on_startup(handlers.create_indexes)
service.background(handlers.retry_due_deliveries)

service.command(ListDeliveries.routing_key, ListDeliveries, access=Access.OPERATOR,
                replay=Replay.RERUN)(handlers.list_deliveries)
service.command(Unsubscribe.routing_key, Unsubscribe, access=Access.ANYONE)(reminders.unsubscribe)

service.event(UserRegistered)(handlers.confirm_new_account)
service.event(EmailConfirmationRequested)(handlers.confirm_email)
service.event(PasswordResetRequested)(handlers.send_password_reset)
service.event(PasswordChanged)(handlers.send_password_changed)
service.event(EmailChangeRequested)(handlers.send_email_change_notice)
service.event(UsernameReminderRequested)(handlers.send_username_reminder)
service.event(VerificationDecided)(handlers.send_verification_decision)
service.event(UserActivated)(handlers.remember_activated_user)
service.event(ProfileUpdated)(handlers.remember_profile)
service.event(DeviceRegisteredEvent)(handlers.send_device_registration)
service.event(BulkUploadCompleted)(handlers.send_bulk_result)
service.event(RequestDecided)(handlers.send_request_decision)
service.event(ReminderDue)(reminders.send_reminder)
service.event(OrderPlaced)(orders.send_order_confirmation)
service.event(OrderShipped)(orders.send_shipping_notice)
service.event(TicketOpened)(tickets.send_ticket_receipt)
service.event(TicketStatusChanged)(tickets.send_status_change)
service.event(TicketUpdated)(tickets.notify_service_desk)
