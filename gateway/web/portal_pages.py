"""The signed-in customer's pages: the dashboard with its quick search, and the landings of the mails' links
that need no sign-in (the reminder's readings link, the reminder's unsubscribe). A service request's page is in
order_pages."""

from __future__ import annotations

import asyncio
import re
from datetime import date
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from contracts import accounts, metering, notifier, registration, ticketing
from contracts.client import PortalError
from contracts.errors import ErrorCode
from gateway.web.view import ACCOUNT_COOKIE, Page, Refusal, View, refusal_errors

router = APIRouter(include_in_schema=False)
TICKET_NUMBER = re.compile(r"^\d+/\d+$")
ORDER_NUMBER = re.compile(r"^[A-Za-z]{1,10}-\d{4}-\d{6}$")  # `OR-2026-000001`, whatever the vendor's prefix


@router.get("/")
async def dashboard(view: Page, q: str = "") -> Response:
    if not view.session:
        return view.redirect("/sign-in")
    profile = await own_profile(view)
    if profile.get("role") == "operator":  # the brand's link home, for an operator: the back office
        return view.redirect("/office")
    if profile.get("terms_open"):  # OKI step 4: the terms come first
        return view.redirect("/terms?next=/")
    query = q.strip()[:200]
    if TICKET_NUMBER.match(query):  # OneRicoh's quick search: a ticket number goes straight to its ticket
        return view.redirect(f"/tickets/{query}")
    if ORDER_NUMBER.match(query):  # and an order number to its order
        return view.redirect(f"/orders/{query.upper()}")
    devices, due, tickets = await asyncio.gather(
        view.call(registration.ListDevices.routing_key, {"text": query or None, "page_size": 200}
                  if query else {"page_size": 200}),
        view.call(metering.ListDue.routing_key, {"page_size": 200}),
        view.call(ticketing.ListTickets.routing_key, {"page_size": 200}))
    if query and devices["total"] == 1 and devices["items"][0]["serial_number"].lower() == query.lower():
        return view.redirect(f"/devices/{devices['items'][0]['device_id']}")
    due_ids = {device["device_id"] for device in due["items"]}
    open_tickets: dict[str, list[dict[str, Any]]] = {}
    for ticket in tickets["items"]:
        if ticket["status"] in ticketing.OPEN_STATUSES:
            open_tickets.setdefault(ticket["device"]["device_id"], []).append(ticket)
    return view.render("dashboard.html", profile=profile, devices=devices, due_ids=due_ids,
                       open_tickets=open_tickets, query=query, today=date.today())


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
