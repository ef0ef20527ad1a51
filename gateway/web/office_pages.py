"""The operator's back office under /office: the queues the vendor's staff work through (sign-ups to verify, claims
and address changes, orders to ship, service requests to dispatch, dead letters and mail deliveries).

Every page is one or more operator commands: the services decide who may, and a customer who opens a page here
is refused by them (`forbidden`), which shows the not-allowed page. Each queue's rows carry their own small form;
a refused one comes back with its message next to that row's field.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from contracts import accounts, loads, metering, notifier, ordering, registration, ticketing
from contracts import uploads as sheets
from contracts.client import NotDelivered, PortalError
from contracts.dead_letters import list_dead_letters_command, replay_dead_letters_command
from contracts.errors import ErrorCode, message_for
from contracts.topology import SERVICES
from gateway.web.i18n import N_
from gateway.web.view import (
    FIELD_MESSAGES,
    INVALID,
    Errors,
    Page,
    Refusal,
    View,
    page_number,
    refusal_errors,
    validation_errors,
)

router = APIRouter(prefix="/office", include_in_schema=False)
PAGE_SIZE = 50
# The zones an operator states a technician's arrival in, besides the portal's own (PORTAL_TIME_ZONE), which the
# form suggests: the zone the pages show times in.
TIME_ZONES = ("Europe/Berlin", "Europe/Oslo", "Europe/London", "UTC")
ORDER_STATUSES = ("placed", "shipped", "delivered")
DELIVERY_STATUSES = ("sent", "retrying", "failed")
DECIDED = {"approved": N_("Approved."), "rejected": N_("Rejected."), "active": N_("Approved."),
           "shipped": N_("Marked as shipped."), "delivered": N_("Marked as delivered."),
           "status": N_("The service request's status is changed."), "replayed": N_("Put back on the queue."),
           "estimate": N_("The estimate is recorded.")}


def eta_zones(view: View) -> tuple[str, ...]:
    """The zones the arrival's picker offers, the portal's own first."""
    return tuple(dict.fromkeys((view.settings.time_zone, *TIME_ZONES)))


def key(text: str) -> str:
    """A row's id in the page (`1484049/1` → `1484049-1`): the ids of its fields and of its error messages."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


async def gathered(*calls: Awaitable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several reads at once; the first refusal is raised once all have answered (none is left running)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]


def done_notice(view: View, done: str | None) -> str | None:
    return view.gettext(DECIDED[done]) if done in DECIDED else None


# --- the overview: how long each queue is ---------------------------------------------------------------------

@router.get("")
async def overview(view: Page) -> Response:
    one = {"page_size": 1}
    verifications, requests, orders, tickets = await gathered(
        view.call(accounts.ListPendingVerifications.routing_key, one),
        view.call(registration.ListRequests.routing_key, one),
        view.call(ordering.OperatorListOrders.routing_key, {**one, "status": "placed"}),
        view.call(ticketing.OperatorListTickets.routing_key, {**one, "status": "to_be_scheduled"}))
    return view.render("office.html", counts={
        "verifications": verifications["total"], "requests": requests["total"], "orders": orders["total"],
        "tickets": tickets["total"]})


# --- 1. sign-ups to verify -------------------------------------------------------------------------------------

async def verifications_page(view: View, page: str = "1", http_status: int = 200, errors: Errors | None = None,
                             values: dict[str, str] | None = None, done: str | None = None) -> Response:
    pending = await view.call(accounts.ListPendingVerifications.routing_key,
                              {"page": page_number(page), "page_size": PAGE_SIZE})
    return view.render("office_verifications.html", http_status, pending=pending, errors=errors,
                       values=values or {}, notice=done_notice(view, done), key=key)


@router.get("/verifications")
async def verifications(view: Page, page: str = "1", done: str | None = None) -> Response:
    return await verifications_page(view, page, done=done)


@router.post("/verifications/{user_id}")
async def decide_verification(view: Page, user_id: str) -> Response:
    form = await view.form()
    approve, reason, field = form.get("decision") == "approve", form.get("reason") or None, f"reason-{key(user_id)}"
    values = {field: form.get("reason", "")}
    if not approve and not reason:  # the person is mailed the decision: a rejection says why
        message = view.gettext("Please give the reason for the rejection: the person is told it.")
        return await verifications_page(view, "1", 400, Errors(message, {field: message}), values)
    try:
        request = accounts.DecideVerification(user_id=user_id, approve=approve, reason=reason)
        decided = await view.call(accounts.DecideVerification.routing_key, request)
    except ValidationError as error:
        return await verifications_page(view, "1", 400, validation_errors(view, error, {"reason": field}), values)
    except Refusal as error:
        return await verifications_page(view, "1", 400, row_refusal(view, error, field), values)
    return view.redirect(f"/office/verifications?done={decided['status'] if approve else 'rejected'}")


def row_refusal(view: View, error: PortalError | NotDelivered | TimeoutError, field: str) -> Errors:
    """A service's refusal of one row's form: its message above the page and beside that row's field."""
    errors = refusal_errors(view, error)
    return Errors(errors.summary, {field: errors.summary or ""})


# --- 2. claims of devices and address changes -------------------------------------------------------------------

async def requests_page(view: View, kind: str | None = None, page: str = "1", http_status: int = 200,
                        errors: Errors | None = None, values: dict[str, str] | None = None,
                        done: str | None = None) -> Response:
    chosen = kind if kind in ("same_location_claim", "address_change") else None
    waiting = await view.call(registration.ListRequests.routing_key,
                              {"page": page_number(page), "page_size": PAGE_SIZE, "kind": chosen})
    return view.render("office_requests.html", http_status, waiting=waiting, kind=chosen or "", errors=errors,
                       values=values or {}, notice=done_notice(view, done), key=key)


@router.get("/requests")
async def requests(view: Page, kind: str | None = None, page: str = "1", done: str | None = None) -> Response:
    return await requests_page(view, kind, page, done=done)


@router.post("/requests/{request_id}")
async def decide_request(view: Page, request_id: str) -> Response:
    form = await view.form()
    approve, reason, field = form.get("decision") == "approve", form.get("reason") or None, f"reason-{key(request_id)}"
    values = {field: form.get("reason", "")}
    if not approve and not reason:
        message = view.gettext("Please give the reason for the rejection: the person is told it.")
        return await requests_page(view, http_status=400, errors=Errors(message, {field: message}), values=values)
    try:
        request = registration.DecideRequest(request_id=request_id, approve=approve, reason=reason)
        decided = await view.call(registration.DecideRequest.routing_key, request)
    except ValidationError as error:
        return await requests_page(view, http_status=400, values=values,
                                   errors=validation_errors(view, error, {"reason": field}))
    except Refusal as error:
        return await requests_page(view, http_status=400, errors=row_refusal(view, error, field), values=values)
    return view.redirect(f"/office/requests?done={decided['status']}")


# --- 3. orders to ship ----------------------------------------------------------------------------------------

async def orders_page(view: View, status: str = "placed", page: str = "1", http_status: int = 200,
                      errors: Errors | None = None, values: dict[str, str] | None = None,
                      done: str | None = None) -> Response:
    chosen = status if status in ORDER_STATUSES else "placed"
    orders = await view.call(ordering.OperatorListOrders.routing_key,
                             {"page": page_number(page), "page_size": PAGE_SIZE, "status": chosen})
    return view.render("office_orders.html", http_status, orders=orders, status=chosen, statuses=ORDER_STATUSES,
                       errors=errors, values=values or {}, notice=done_notice(view, done), key=key)


@router.get("/orders")
async def orders(view: Page, status: str = "placed", page: str = "1", done: str | None = None) -> Response:
    return await orders_page(view, status, page, done=done)


@router.post("/orders/{order_number}/shipped")
async def mark_shipped(view: Page, order_number: str) -> Response:
    form = await view.form()
    row = key(order_number)
    names = {name: f"{name}-{row}" for name in ("carrier", "tracking_number", "tracking_url")}
    values = {field: form.get(name, "") for name, field in names.items()}
    missing = {names[name]: view.gettext(FIELD_MESSAGES["missing"]) for name in ("carrier", "tracking_number")
               if not form.get(name)}
    if missing:  # the customer's shipping notice names both
        return await orders_page(view, http_status=400, values=values,
                                 errors=Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language), missing))
    try:
        request = ordering.MarkShipped(order_number=order_number, carrier=form.get("carrier", ""),
                                       tracking_number=form.get("tracking_number", ""),
                                       tracking_url=form.get("tracking_url") or None)
        await view.call(ordering.MarkShipped.routing_key, request)
    except ValidationError as error:
        return await orders_page(view, http_status=400, errors=validation_errors(view, error, names), values=values)
    except Refusal as error:
        return await orders_page(view, http_status=400, errors=row_refusal(view, error, names["carrier"]),
                                 values=values)
    return view.redirect("/office/orders?done=shipped")


@router.post("/orders/{order_number}/delivered")
async def mark_delivered(view: Page, order_number: str) -> Response:
    await view.form()
    try:
        await view.call(ordering.MarkDelivered.routing_key, {"order_number": order_number})
    except Refusal as error:
        return await orders_page(view, "shipped", http_status=400, errors=refusal_errors(view, error))
    return view.redirect("/office/orders?status=shipped&done=delivered")


# --- 4. service requests through their statuses ------------------------------------------------------------------

async def tickets_page(view: View, status: str = "to_be_scheduled", page: str = "1", http_status: int = 200,
                       errors: Errors | None = None, values: dict[str, str] | None = None,
                       done: str | None = None) -> Response:
    chosen = status if status in ticketing.TRANSITIONS else "to_be_scheduled"
    tickets = await view.call(ticketing.OperatorListTickets.routing_key,
                              {"page": page_number(page), "page_size": PAGE_SIZE, "status": chosen})
    return view.render("office_tickets.html", http_status, tickets=tickets, status=chosen,
                       statuses=tuple(ticketing.TRANSITIONS), transitions=ticketing.TRANSITIONS,
                       zone_options=[(zone, zone) for zone in eta_zones(view)],
                       zone=view.settings.time_zone, errors=errors, values=values or {},
                       notice=done_notice(view, done), key=key)


@router.get("/tickets")
async def tickets(view: Page, status: str = "to_be_scheduled", page: str = "1", done: str | None = None) -> Response:
    return await tickets_page(view, status, page, done=done)


@router.post("/tickets/{project}/{sequence}")
async def set_ticket_status(view: Page, project: str, sequence: str) -> Response:
    form = await view.form()
    number = f"{project}/{sequence}"
    row = key(number)
    names = {name: f"{name}-{row}" for name in ("status", "technician", "eta", "zone", "note")}
    values = {field: form.get(name, "") for name, field in names.items()}
    back = form.get("from", "")
    back = back if back in ticketing.TRANSITIONS else "to_be_scheduled"

    def refused(errors: Errors) -> Awaitable[Response]:
        return tickets_page(view, back, http_status=400, errors=errors, values=values)

    status = form.get("status", "")
    if status == "dispatched" and not form.get("technician"):  # the customer's mail names who comes
        message = view.gettext("Please name the technician who goes.")
        return await refused(Errors(message, {names["technician"]: message}))
    eta: datetime | None = None
    if form.get("eta"):
        try:
            zone = ZoneInfo(form["zone"] if form.get("zone") in eta_zones(view) else view.settings.time_zone)
            eta = datetime.fromisoformat(form["eta"]).replace(tzinfo=zone)
        except ValueError:
            message = view.gettext("Please enter a date and a time.")
            return await refused(Errors(message, {names["eta"]: message}))
    try:
        request = ticketing.SetStatus(ticket_number=number, status=status,
                                      technician=form.get("technician") or None, eta=eta,
                                      note=form.get("note") or None)
        await view.call(ticketing.SetStatus.routing_key, request)
    except ValidationError as error:
        return await refused(validation_errors(view, error, names))
    except Refusal as error:  # `invalid_transition` above all: another operator moved it meanwhile
        return await refused(row_refusal(view, error, names["status"]))
    return view.redirect(f"/office/tickets?{urlencode({'status': back, 'done': 'status'})}")


# --- 5. dead letters and mail deliveries ---------------------------------------------------------------------------

@router.get("/dead-letters")
async def dead_letters(view: Page, service: str | None = None, done: str | None = None) -> Response:
    shown = [service] if service in SERVICES else list(SERVICES)
    pages = await gathered(*(view.call(list_dead_letters_command(name), {"page_size": PAGE_SIZE})
                             for name in shown))
    return view.render("office_dead_letters.html", services=SERVICES, service=service if service in SERVICES else "",
                       letters=dict(zip(shown, pages, strict=True)), notice=done_notice(view, done))


@router.post("/dead-letters/{service}")
async def replay_dead_letters(view: Page, service: str) -> Response:
    form = await view.form()
    if service not in SERVICES:
        return view.render("not_found.html", 404)
    request: dict[str, Any] = {"queue": form.get("queue", "")}
    if form.get("message_id"):
        request["message_id"] = form["message_id"]
    else:
        request["all"] = True
    try:
        await view.call(replay_dead_letters_command(service), request)
    except PortalError as error:
        if error.code != ErrorCode.NOT_FOUND:  # not found: replayed meanwhile, by another operator
            raise
    return view.redirect(f"/office/dead-letters?{urlencode({'service': service, 'done': 'replayed'})}")


@router.get("/mail")
async def mail(view: Page, recipient: str = "", status: str = "", page: str = "1") -> Response:
    query: dict[str, Any] = {"page": page_number(page), "page_size": PAGE_SIZE}
    if recipient.strip():
        query["recipient"] = recipient.strip()[:254]
    if status in DELIVERY_STATUSES:
        query["status"] = status
    deliveries = await view.call(notifier.ListDeliveries.routing_key, query)
    return view.render("office_mail.html", deliveries=deliveries, statuses=DELIVERY_STATUSES,
                       values={"recipient": recipient, "status": status if status in DELIVERY_STATUSES else ""})


# --- 6. overdue meter readings, estimates, the reminder run --------------------------------------------------------

def counters_of(text: str) -> list[dict[str, Any]] | None:
    """`mono=13250, color=3710` as the readings of a command; None when a part is no `name=value`."""
    parts = [part for part in re.split(r"[,;\n]", text) if part.strip()]
    found = [sheets.COUNTER.match(part) for part in parts]
    if not parts or not all(found):
        return None
    return [{"counter": match.group(1), "value": int(match.group(2))} for match in found if match]


async def readings_page(view: View, period_end: str | None = None, page: str = "1", http_status: int = 200,
                        errors: Errors | None = None, values: dict[str, str] | None = None,
                        done: str | None = None, run: dict[str, str] | None = None) -> Response:
    try:
        end = date.fromisoformat(period_end) if period_end else metering.last_closed_quarter(view.today)
    except ValueError:
        end = metering.last_closed_quarter(view.today)
    overdue = await view.call(metering.ListOverdue.routing_key, {"period_end": end.isoformat(),
                                                                 "page": page_number(page), "page_size": PAGE_SIZE})
    return view.render("office_readings.html", http_status, overdue=overdue, period_end=end.isoformat(),
                       today=view.today.isoformat(), errors=errors, values=values or {},
                       notice=done_notice(view, done), run=run, key=key)


@router.get("/readings")
async def readings(view: Page, period_end: str | None = None, page: str = "1", done: str | None = None,
                   reminders: str | None = None, overdue: str | None = None) -> Response:
    # The counts of the run just made, carried in the address of the page after it: shown only as numbers.
    numbers = [given for given in (reminders, overdue) if given is not None and re.fullmatch(r"[0-9]{1,9}", given)]
    run = {"reminders": numbers[0], "overdue": numbers[1]} if len(numbers) == 2 else None
    return await readings_page(view, period_end, page, done=done, run=run)


@router.post("/readings/reminders")
async def run_reminders(view: Page) -> Response:
    form = await view.form()
    values = {"as_of": form.get("as_of", "")}
    try:
        request = metering.RunReminders(as_of=form.get("as_of", ""))
        ran = await view.call(metering.RunReminders.routing_key, request)
    except ValidationError as error:
        return await readings_page(view, form.get("period_end"), http_status=400, values=values,
                                   errors=validation_errors(view, error))
    except Refusal as error:
        return await readings_page(view, form.get("period_end"), http_status=400, values=values,
                                   errors=refusal_errors(view, error))
    query = {"period_end": form.get("period_end", ""), "reminders": ran["reminders"], "overdue": ran["overdue"]}
    return view.redirect(f"/office/readings?{urlencode(query)}")


@router.post("/readings/{device_id}/estimate")
async def record_estimate(view: Page, device_id: str) -> Response:
    form = await view.form()
    row = key(device_id)
    names = {"readings": f"readings-{row}", "reading_date": f"reading_date-{row}"}
    values = {field: form.get(name, "") for name, field in names.items()}
    period_end = form.get("period_end")

    def refused(errors: Errors) -> Awaitable[Response]:
        return readings_page(view, period_end, http_status=400, errors=errors, values=values)

    counters = counters_of(form.get("readings", ""))
    if counters is None:
        message = view.gettext("Please write each counter as name=value, for example mono=12500, color=3400.")
        return await refused(Errors(message, {names["readings"]: message}))
    try:
        request = metering.RecordEstimate(device_id=device_id, readings=counters,
                                          reading_date=form.get("reading_date", ""))
        await view.call(metering.RecordEstimate.routing_key, request)
    except ValidationError as error:
        return await refused(validation_errors(view, error, names))
    except Refusal as error:
        field = names["reading_date"] if isinstance(error, PortalError) and error.code == "invalid_reading_date" \
            else names["readings"]
        return await refused(row_refusal(view, error, field))
    return view.redirect(f"/office/readings?{urlencode({'period_end': period_end or '', 'done': 'estimate'})}")


# --- 7. the catalogue, consumables and installed base from a file ---------------------------------------------------

UPLOAD_KINDS = {"models": N_("Product models"), "consumables": N_("Consumables"),
                "installed_base": N_("Installed base")}
UPLOAD_COLUMNS = sheets.COLUMNS
# A column's problem in a load (`contracts.loads`) beside pydantic's error types, which FIELD_MESSAGES says.
LOAD_PROBLEMS = {loads.GIVEN_TWICE: N_("Given twice for this model (in rows %(rows)s)."),
                 loads.TOO_MANY: N_("This model has more than %(most)s consumables."),
                 loads.SERVICE_SAYS: INVALID}


def uploads_page(view: View, http_status: int = 200, kind: str = "models", errors: Errors | None = None,
                 results: list[loads.RowResult] | None = None) -> Response:
    return view.render("office_uploads.html", http_status, kinds=[(name, view.gettext(text))
                                                                  for name, text in UPLOAD_KINDS.items()],
                       columns=UPLOAD_COLUMNS, values={"kind": kind}, errors=errors,
                       results=None if results is None else [(result, row_message(view, result))
                                                             for result in results])


@router.get("/uploads")
async def uploads(view: Page) -> Response:
    await view.call(accounts.ListPendingVerifications.routing_key, {"page_size": 1})  # operators only, as below
    return uploads_page(view)


@router.post("/uploads")
async def upload(view: Page) -> Response:
    form = await view.form()
    # Only an operator's file is read: the services refuse anyone else before a byte of it is parsed.
    await view.call(accounts.ListPendingVerifications.routing_key, {"page_size": 1})
    kind: loads.Kind = "consumables" if form.get("kind") == "consumables" else \
        "installed_base" if form.get("kind") == "installed_base" else "models"
    upload = (await view.request.form()).get("file")
    content = await upload.read(sheets.MAX_FILE_BYTES + 1) if isinstance(upload, UploadFile) else b""
    if not content:
        message = view.gettext("Please choose a csv or xlsx file.")
        return uploads_page(view, 400, kind, Errors(message, {"file": message}))
    try:
        # Off the event loop: a 2 MB xlsx takes a while to read, and every other request waits on the loop meanwhile.
        rows = await asyncio.to_thread(sheets.numbered_rows, upload.filename or "" if isinstance(upload, UploadFile)
                                       else "", content, kind)
    except sheets.UnknownColumns as error:  # a column dropped would leave every row's value at its default
        message = view.gettext("This file has columns that this kind of file does not have: %(columns)s. Please "
                               "rename or remove them: the columns of each kind are listed above. Nothing was saved.",
                               columns=", ".join(error.columns))
        return uploads_page(view, 400, kind, Errors(message, {"file": message}))
    except sheets.RepeatedColumns as error:
        message = view.gettext("The first row of this file names a column twice: %(columns)s. Please keep one of "
                               "them. Nothing was saved.", columns=", ".join(error.columns))
        return uploads_page(view, 400, kind, Errors(message, {"file": message}))
    except sheets.UnnamedColumns as error:
        message = view.gettext("This file has values in columns without a name in the first row: column "
                               "%(positions)s, counted from the left. Please name these columns or remove their "
                               "values: the columns of each kind are listed above. Nothing was saved.",
                               positions=", ".join(str(at) for at in error.positions))
        return uploads_page(view, 400, kind, Errors(message, {"file": message}))
    except sheets.Unreadable:
        message = view.gettext("This file cannot be read: please send a csv or xlsx file of at most 2 MB and "
                               "%(rows)s rows, its column names in the first row.", rows=sheets.MAX_ROWS)
        return uploads_page(view, 400, kind, Errors(message, {"file": message}))
    results, batches = loads.plan(kind, rows)
    try:
        await loads.send(batches, view.call)
    except loads.CallRefused as stopped:  # the rows not sent say so; why, above them
        refusal = stopped.error
        said = refusal.message or message_for(refusal.code, view.language) if isinstance(refusal, PortalError) else \
            view.gettext("The upload stopped, as the portal is not answering right now. Each row's result is below; "
                         "please upload the file again in a moment.")
        return uploads_page(view, 200, kind, Errors(said), results)
    return uploads_page(view, 200, kind, results=results)


def row_message(view: View, result: loads.RowResult) -> str | None:
    """Why a row is not saved, in the page's language (`customer_number: This field is required.`)."""
    if result.ok:
        return None
    if result.problems:
        return " ".join(f"{problem.column}: {problem_text(view, problem)}" for problem in result.problems)
    if result.withheld_for is not None:
        return view.gettext("Not sent: another row of %(model)s was refused, and its list of consumables is replaced "
                            "as a whole.", model=result.withheld_for)
    if result.code == loads.NOT_SENT:
        return view.gettext("Not sent: the upload stopped.")
    if result.code == loads.NO_REPLY:
        return view.gettext("Sent, but no reply came in time: it may still be saved. Upload the file again to be "
                            "sure.")
    if result.sent_with:
        return view.gettext("Not saved: sent together with refused row %(rows)s.",
                            rows=", ".join(str(row) for row in result.sent_with))
    return result.said or message_for(result.code or "", view.language)


def problem_text(view: View, problem: loads.Problem) -> str:
    if problem.code == loads.GIVEN_TWICE:
        return view.gettext(LOAD_PROBLEMS[problem.code], rows=", ".join(str(row) for row in problem.rows))
    if problem.code == loads.TOO_MANY:
        return view.gettext(LOAD_PROBLEMS[problem.code], most=loads.MAX_CONSUMABLES_PER_MODEL)
    return view.gettext(LOAD_PROBLEMS.get(problem.code) or FIELD_MESSAGES.get(problem.code, INVALID))
