"""Every HTTP resource of the API and the catalogue command behind it: the one table to read or change.

A GET takes the command's fields as query parameters; other verbs take them as a JSON body (or, where the
command carries a file, as multipart form data: the file as a part, the other fields as the JSON part `data`).
Path parameters are fields of the command too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from contracts import accounts, metering, notifier, ordering, registration, ticketing
from contracts.base import Counted, Done, Page
from contracts.dead_letters import (
    DeadLetter,
    ListDeadLetters,
    ReplayDeadLetters,
    ReplayedDeadLetters,
    list_dead_letters_command,
    replay_dead_letters_command,
)

PREFIX = "/api/v1"


def same_names(params: Mapping[str, str]) -> dict[str, Any]:
    return dict(params)


def ticket_number(params: Mapping[str, str]) -> dict[str, Any]:
    # Ticket numbers hold a slash (`1484049/1`): two path segments rather than an encoded %2F, which proxies mangle.
    return {"ticket_number": f"{params['project']}/{params['sequence']}"}


def nothing(params: Mapping[str, str]) -> dict[str, Any]:
    return {}


# The commands CATALOG marks "anyone": sent without a token, so they need no CSRF check either.
ANONYMOUS = frozenset({
    "accounts.register", "accounts.confirm_email", "accounts.resend_confirmation", "accounts.login",
    "accounts.contract_login", "accounts.request_password_reset", "accounts.reset_password",
    "accounts.recover_username", "registration.serial_hint", "registration.bulk_template", "metering.submit_by_link",
    "metering.link_devices", "notifier.unsubscribe",
})


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    command: str  # may name path parameters: `{service}.operator.list_dead_letters`
    request: type[BaseModel]
    summary: str
    status: int = 200
    reply: type[BaseModel] | None = None  # documents the reply's `data`; None: a JSON object
    path_fields: Callable[[Mapping[str, str]], dict[str, Any]] = same_names
    fixed: Mapping[str, Any] = field(default_factory=dict)  # fields the route sets, whatever the client sends
    uploads: tuple[str, ...] = ()  # FileObject fields of the command, sent as multipart parts
    download: str | None = None  # where the reply's FileObject is: "" the data itself, else its field
    signs_in: bool = False  # sets the session cookies from the reply
    signs_out: bool = False  # clears them
    name: str | None = None  # the operation id, where one command has two routes

    @property
    def anonymous(self) -> bool:
        return self.command in ANONYMOUS

    @property
    def full_path(self) -> str:
        return PREFIX + self.path

    @property
    def operation_id(self) -> str:
        if self.name:
            return self.name
        return self.command.replace("{service}", "service").replace(".", "_") + (
            "_file" if self.uploads or self.download else "")

    @property
    def tag(self) -> str:
        return "operator" if "/operator/" in self.path else self.command.split(".")[0].replace("{service}", "operator")


T = "/tickets/{project}/{sequence}"

ROUTES: tuple[Route, ...] = (
    # accounts (CATALOG §2)
    Route("POST", "/users", "accounts.register", accounts.Register, "Sign up", 201, accounts.Registered),
    Route("POST", "/users/confirmation", "accounts.confirm_email", accounts.ConfirmEmail,
          "Confirm an e-mail address with the token of the mailed link", reply=accounts.Confirmed),
    Route("POST", "/users/confirmation-mails", "accounts.resend_confirmation", accounts.ResendConfirmation,
          "Mail the confirmation link again", 202, reply=Done),
    Route("POST", "/session", "accounts.login", accounts.Login,
          "Sign in: the access token in the reply, and as an HttpOnly cookie", reply=accounts.Session, signs_in=True),
    Route("POST", "/session/contract", "accounts.contract_login", accounts.ContractLogin,
          "Sign in with customer and contract number", reply=accounts.Session, signs_in=True),
    Route("DELETE", "/session", "accounts.logout", accounts.Logout,
          "Sign out: the session is revoked and the cookies cleared", signs_out=True, reply=Done),
    Route("POST", "/password-resets", "accounts.request_password_reset", accounts.RequestPasswordReset,
          "Mail a password reset link", 202, reply=Done),
    Route("POST", "/password-resets/confirmation", "accounts.reset_password", accounts.ResetPassword,
          "Set a new password with the token of the mailed link", reply=Done),
    Route("PUT", "/me/password", "accounts.change_password", accounts.ChangePassword, "Change the password",
          reply=Done),
    Route("POST", "/username-reminders", "accounts.recover_username", accounts.RecoverUsername,
          "Mail the username", 202, reply=Done),
    Route("GET", "/me", "accounts.get_profile", accounts.GetProfile, "The profile", reply=accounts.Profile),
    Route("PATCH", "/me", "accounts.update_profile", accounts.UpdateProfile, "Change the profile",
          reply=accounts.Profile),
    Route("POST", "/me/terms", "accounts.accept_terms", accounts.AcceptTerms, "Accept the terms and privacy notice",
          reply=Done),
    Route("GET", "/contacts", "accounts.list_contacts", accounts.ListContacts, "The contacts of the customer",
          reply=accounts.Contacts),
    Route("POST", "/contacts", "accounts.add_contact", accounts.AddContact, "Add a contact", 201,
          reply=accounts.Contacts),
    Route("GET", "/contracts", "accounts.list_contracts", accounts.ListContracts, "The contracts of the customer",
          reply=accounts.Contracts),
    Route("PUT", "/operator/customers/{customer_number}", "accounts.operator.provision_customer",
          accounts.ProvisionCustomer, "Load a customer and its contracts", reply=Done),
    Route("GET", "/operator/verifications", "accounts.operator.list_pending_verifications",
          accounts.ListPendingVerifications, "Sign-ups waiting for verification", reply=Page[accounts.Profile]),
    Route("POST", "/operator/verifications/{user_id}/decision", "accounts.operator.decide_verification",
          accounts.DecideVerification, "Approve or reject a sign-up", reply=accounts.Decided),
    # registration (CATALOG §3)
    Route("POST", "/operator/models", "registration.operator.upsert_models", registration.UpsertModels,
          "Add or change product models", reply=Counted),
    Route("POST", "/operator/installed-base", "registration.operator.import_installed_base",
          registration.ImportInstalledBase, "Import devices under contract", reply=registration.Imported),
    Route("GET", "/serials/{serial_number}", "registration.lookup_serial", registration.LookupSerial,
          "The model of a serial number", reply=registration.KnownSerial),
    Route("GET", "/serial-hints", "registration.serial_hint", registration.SerialHint,
          "Where to find the serial number on a model", reply=registration.SerialHintFound),
    Route("GET", "/models", "registration.list_models", registration.ListModels,
          "The product models by name (beyond the catalogue)", reply=Page[registration.ModelName]),
    Route("POST", "/devices", "registration.register_device", registration.RegisterDevice,
          "Register a device with its proof of purchase", 201, registration.DeviceRegistered,
          uploads=("proof_of_purchase",)),
    Route("POST", "/device-claims", "registration.claim_device", registration.ClaimDevice,
          "Claim an installed-base device by serial number and postcode", reply=registration.ClaimedDevice),
    Route("POST", "/same-location-claims", "registration.claim_same_location", registration.ClaimSameLocation,
          "Ask for more devices at a claimed device's address", 202, registration.PendingRequest),
    Route("GET", "/device-uploads/template", "registration.bulk_template", registration.BulkTemplate,
          "The Excel template for registering many devices", download=""),
    Route("POST", "/device-uploads", "registration.bulk_upload", registration.BulkUpload,
          "Register the devices of a filled-in template", 202, registration.BulkUploadQueued, uploads=("file",)),
    Route("GET", "/device-uploads", "registration.list_bulk_uploads", registration.ListBulkUploads,
          "The caller's uploads", reply=Page[registration.BulkUploadSummary]),
    Route("GET", "/device-uploads/{upload_id}/result", "registration.bulk_result", registration.BulkResult,
          "An upload's rows with their result", download=""),
    Route("GET", "/devices", "registration.list_devices", registration.ListDevices, "The devices the caller sees",
          reply=Page[registration.Device]),
    # `GetDevice` names a device by id or by serial: each route's path is its only name (the other fixed to none).
    Route("GET", "/devices/{device_id}", "registration.get_device", registration.GetDevice, "A device",
          reply=registration.Device, fixed={"serial_number": None}),
    Route("GET", "/devices/by-serial/{serial_number}", "registration.get_device", registration.GetDevice,
          "A device by its serial number", reply=registration.Device, fixed={"device_id": None},
          name="registration_get_device_by_serial"),
    Route("PUT", "/devices/{device_id}/name", "registration.rename_device", registration.RenameDevice,
          "Rename a device", reply=Done),
    Route("PUT", "/devices/{device_id}/reminders", "registration.set_reminders", registration.SetReminders,
          "Meter-reading reminders of a device", reply=Done),
    Route("POST", "/device-deregistrations", "registration.deregister_devices", registration.DeregisterDevices,
          "Hide devices from the caller's view and reminders", reply=Counted),
    Route("POST", "/devices/{device_id}/address-change-requests", "registration.request_address_change",
          registration.RequestAddressChange, "Ask for a device's new address", 202, registration.PendingRequest),
    Route("GET", "/operator/requests", "registration.operator.list_requests", registration.ListRequests,
          "Pending claims and address changes",
          reply=Page[registration.RequestView]),
    Route("POST", "/operator/requests/{request_id}/decision", "registration.operator.decide_request",
          registration.DecideRequest, "Approve or reject a claim or address change",
          reply=registration.Decision),
    # metering (CATALOG §4)
    # `device_ids` (a list) is the web pages' filter on the bus: a query string here takes one value a field.
    Route("GET", "/readings/due", "metering.list_due", metering.ListDue, "Devices with readings due",
          reply=Page[metering.DueDevice], fixed={"device_ids": None}),
    Route("POST", "/devices/{device_id}/reading-previews", "metering.preview_reading", metering.PreviewReading,
          "Check a reading without storing it", reply=metering.ReadingPreview),
    Route("POST", "/devices/{device_id}/readings", "metering.submit_reading", metering.SubmitReading,
          "Submit a reading", 201, metering.ReadingSubmittedReply),
    Route("POST", "/readings", "metering.submit_bulk", metering.SubmitBulk, "Submit readings of many devices",
          reply=metering.BulkOutcome),
    Route("POST", "/reading-files", "metering.submit_bulk", metering.SubmitBulk,
          "Submit readings of many devices as an xlsx or csv file", reply=metering.BulkOutcome, uploads=("file",)),
    Route("GET", "/devices/{device_id}/readings", "metering.history", metering.History,
          "A device's readings and printed pages", reply=metering.DeviceHistory),
    Route("GET", "/usage", "metering.usage", metering.Usage, "Printed pages of the fleet per period",
          reply=metering.UsageReport, fixed={"format": "json"}),
    Route("GET", "/usage/xlsx", "metering.usage", metering.Usage, "Printed pages of the fleet as an xlsx",
          fixed={"format": "xlsx"}, download="file"),
    Route("POST", "/operator/device-reports", "metering.device_report", metering.DeviceReport,
          "A reading an e-maintenance device reported", 201, metering.ReadingRecorded),
    Route("POST", "/operator/devices/{device_id}/estimates", "metering.operator.record_estimate",
          metering.RecordEstimate, "Record an estimated reading", 201, metering.ReadingRecorded),
    Route("POST", "/operator/reminder-runs", "metering.operator.run_reminders", metering.RunReminders,
          "Run the reminder schedule of a day now", reply=metering.RemindersRun),
    Route("GET", "/operator/overdue", "metering.operator.overdue", metering.ListOverdue,
          "Devices without a reading after the window closed", reply=Page[metering.OverdueDevice]),
    Route("POST", "/reading-links/readings", "metering.submit_by_link", metering.SubmitByLink,
          "Submit readings through a reminder's personal link", reply=metering.BulkOutcome),
    Route("GET", "/reading-links/devices", "metering.link_devices", metering.LinkDevices,
          "The devices of a reminder's personal link", reply=metering.LinkedDevices),
    # ordering (CATALOG §5)
    Route("POST", "/operator/consumables", "ordering.operator.upsert_consumables", ordering.UpsertConsumables,
          "Set the consumables of a model", reply=Counted),
    Route("GET", "/devices/{device_id}/consumables", "ordering.list_orderable", ordering.ListOrderable,
          "What can be ordered for a device", reply=ordering.Orderable),
    Route("POST", "/orders", "ordering.place_order", ordering.PlaceOrder, "Order consumables", 201,
          ordering.OrderPlacedReply),
    Route("GET", "/orders", "ordering.list_orders", ordering.ListOrders, "The caller's orders",
          reply=Page[ordering.Order]),
    Route("GET", "/orders/{order_number}", "ordering.get_order", ordering.GetOrder, "An order", reply=ordering.Order),
    Route("GET", "/operator/orders", "ordering.operator.list_orders", ordering.OperatorListOrders,
          "Orders to ship", reply=Page[ordering.Order]),
    Route("POST", "/operator/orders/{order_number}/shipment", "ordering.operator.mark_shipped", ordering.MarkShipped,
          "Mark an order shipped", reply=ordering.StatusReply),
    Route("POST", "/operator/orders/{order_number}/delivery", "ordering.operator.mark_delivered",
          ordering.MarkDelivered, "Mark an order delivered", reply=ordering.StatusReply),
    # ticketing (CATALOG §6)
    Route("POST", "/tickets", "ticketing.open_ticket", ticketing.OpenTicket, "Open a service request", 201,
          ticketing.OpenedReply),
    Route("POST", T + "/notes", "ticketing.add_note", ticketing.AddNote, "Add a note to a service request",
          path_fields=ticket_number, reply=Done),
    Route("POST", T + "/cancellation", "ticketing.cancel_ticket", ticketing.CancelTicket,
          "Cancel a service request", reply=ticketing.CancelledReply, path_fields=ticket_number),
    Route("GET", T, "ticketing.get_ticket", ticketing.GetTicket, "A service request with its history",
          reply=ticketing.Ticket, path_fields=ticket_number),
    Route("GET", "/tickets", "ticketing.list_tickets", ticketing.ListTickets, "The caller's service requests",
          reply=Page[ticketing.Ticket], fixed={"device_ids": None}),  # as `/readings/due`'s
    Route("GET", "/operator/tickets", "ticketing.operator.list_tickets", ticketing.OperatorListTickets,
          "The back office's queue", reply=Page[ticketing.Ticket]),
    Route("PUT", "/operator" + T + "/status", "ticketing.operator.set_status", ticketing.SetStatus,
          "Move a service request along its life cycle", reply=ticketing.StatusReply, path_fields=ticket_number),
    # notifier (CATALOG §7)
    Route("POST", "/reminder-unsubscriptions", "notifier.unsubscribe", notifier.Unsubscribe,
          "Turn a device's reminders off with the mail's unsubscribe token", reply=Done),
    Route("GET", "/operator/deliveries", "notifier.operator.list_deliveries", notifier.ListDeliveries,
          "The mails sent, retrying or failed", reply=Page[notifier.Delivery]),
    # every service's dead letters (README: Dead letters)
    Route("GET", "/operator/services/{service}/dead-letters", list_dead_letters_command("{service}"),
          ListDeadLetters, "A service's dead letters", reply=Page[DeadLetter], path_fields=nothing),
    Route("POST", "/operator/services/{service}/dead-letters/replay", replay_dead_letters_command("{service}"),
          ReplayDeadLetters,
          "Put dead letters back on their queue", reply=ReplayedDeadLetters, path_fields=nothing),
)
