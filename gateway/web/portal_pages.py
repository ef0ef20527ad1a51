"""The signed-in customer's pages: the dashboard with its quick search, and the landings of the mails' links
that need no sign-in (the reminder's readings link, the reminder's unsubscribe). A service request's page is in
order_pages."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from contracts import accounts, metering, notifier, ordering, registration, ticketing
from contracts.client import PortalError
from contracts.errors import ErrorCode
from gateway.web.view import ACCOUNT_COOKIE, Page, Refusal, View, items_of_devices, page_number, refusal_errors

router = APIRouter(include_in_schema=False)
TICKET_NUMBER = re.compile(r"^\d+/\d+$")
ORDER_NUMBER = re.compile(r"^[A-Za-z]{1,10}-\d{4}-\d{6}$")  # `OR-2026-000001`, whatever the vendor's prefix
DEVICES_PER_PAGE = 50


@router.get("/")
async def dashboard(view: Page, q: str = "", page: str = "1") -> Response:
    if not view.session:
        return view.redirect("/sign-in")
    profile = await own_profile(view)
    if profile.get("role") == "operator":  # the brand's link home, for an operator: the back office
        return view.redirect("/office")
    if profile.get("terms_open"):  # OKI step 4: the terms come first
        return view.redirect("/terms?next=/")
    query = q.strip()[:200]
    number = bool(TICKET_NUMBER.match(query) or ORDER_NUMBER.match(query))
    if number:  # OneRicoh's quick search: a ticket or order number of the user's goes straight to it
        target = await numbered_page(view, query)
        if target:
            return view.redirect(target)
    listed = {**({"text": query} if query else {}), "page": page_number(page), "page_size": DEVICES_PER_PAGE}
    devices, due_count = await asyncio.gather(
        view.call(registration.ListDevices.routing_key, listed),
        view.call(metering.ListDue.routing_key, {"page_size": 1}))  # the fleet's count; the page's devices below
    if not devices["items"] and devices["total"]:  # a page past the last (an old link, devices removed): the last
        last = -(-int(devices["total"]) // DEVICES_PER_PAGE)
        devices = await view.call(registration.ListDevices.routing_key, {**listed, "page": last})
    if query and devices["total"] == 1 and devices["items"][0]["serial_number"].lower() == query.lower():
        return view.redirect(f"/devices/{devices['items'][0]['device_id']}")
    shown = [device["device_id"] for device in devices["items"]]
    due, tickets = await asyncio.gather(
        items_of_devices(view, metering.ListDue.routing_key, shown if due_count["total"] else []),
        # Open requests only, status by status (a device has one open at most): closed ones are many, shown nowhere.
        asyncio.gather(*(items_of_devices(view, ticketing.ListTickets.routing_key, shown, {"status": status})
                         for status in ticketing.OPEN_STATUSES)))
    due_ids = {device["device_id"] for device in due}
    open_tickets: dict[str, list[dict[str, Any]]] = {}
    for ticket in (ticket for found in tickets for ticket in found):
        open_tickets.setdefault(ticket["device"]["device_id"], []).append(ticket)
    return view.render("dashboard.html", profile=profile, devices=devices, due_ids=due_ids,
                       due_total=due_count["total"], open_tickets=open_tickets, query=query, number_unknown=number,
                       pages={"q": query} if query else {})


async def numbered_page(view: View, number: str) -> str | None:
    """The page of the user's ticket or order of this number; None when the user has none of that number (the
    dashboard says so, rather than a 404 page)."""
    if TICKET_NUMBER.match(number):
        command, payload, target = ticketing.GetTicket.routing_key, {"ticket_number": number}, f"/tickets/{number}"
    else:
        command, payload, target = (ordering.GetOrder.routing_key, {"order_number": number.upper()},
                                    f"/orders/{number.upper()}")
    try:
        await view.call(command, payload)
    except PortalError as error:
        # A number the contract refuses (longer than any ticket's) is no number of the user's either.
        if error.code in (ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN, ErrorCode.VALIDATION_FAILED):
            return None
        raise
    return target


async def own_profile(view: View) -> dict[str, Any]:
    """The user's profile; a contract's sign-in has none (it is no person), and no terms of its own to accept."""
    try:
        return await view.call(accounts.GetProfile.routing_key)
    except PortalError as error:
        if error.code == ErrorCode.NOT_FOUND:
            view.contract = True  # a contract's session, its cookie lost: the pages offer no profile from now on
            view.cookies[ACCOUNT_COOKIE] = "contract"
            return {}
        raise


@router.get("/unsubscribe")
async def unsubscribe_page(view: Page, token: str = "") -> Response:
    return view.render("unsubscribe.html", token=token)


@router.post("/unsubscribe")
async def unsubscribe(view: Page) -> Response:
    form = await view.form()
    try:
        await view.call(notifier.Unsubscribe.routing_key, {"token": form.get("token", "")}, anonymous=True)
    except Refusal as error:
        return view.render("unsubscribe.html", 400, token=form.get("token", ""), errors=refusal_errors(view, error))
    return view.redirect("/unsubscribe/done")


@router.get("/unsubscribe/done")
async def unsubscribed(view: Page) -> Response:
    return view.render("unsubscribed.html")


@router.get("/legal/{kind}")
async def legal(view: Page, kind: str) -> Response:
    if kind not in ("terms", "privacy"):
        return view.render("not_found.html", 404)
    return view.render("legal.html", kind=kind)
