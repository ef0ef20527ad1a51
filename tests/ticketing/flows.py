"""Steps many ticketing tests take: a customer with a device, a ticket's body, opening it, moving it along."""

from __future__ import annotations

import re
from typing import Any

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_id, token_for
from tests.readmodels import provision_device

NUMBER = re.compile(r"^(\d+)/(\d+)$")
# The OKI seed's machine and contact.
HANSAALLEE = {"name": "Kundenbüro", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf",
              "country": "DE", "building_location": "2. OG"}
CONTACT = {"name": "Thomas Lienert", "email": "t.lienert@example.com", "phone": "0211/5266-252"}
# The operator's path from a new ticket to each status.
PATH = {"to_be_scheduled": (), "dispatched": ("dispatched",), "en_route": ("dispatched", "en_route"),
        "on_site": ("dispatched", "en_route", "on_site"),
        "resolved": ("dispatched", "en_route", "on_site", "resolved"),
        "closed": ("dispatched", "en_route", "on_site", "resolved", "closed"), "cancelled": ("cancelled",)}


def operator(settings: Settings) -> str:
    return token_for(settings, Role.OPERATOR, customer_number=None)[0]


def parts(number: str) -> tuple[int, int]:
    """A ticket number's project number and the device's n-th ticket."""
    matched = NUMBER.match(number)
    assert matched, f"not a ticket number: {number!r}"
    return int(matched.group(1)), int(matched.group(2))


async def es5462(amqp_url: str, ticketing: ServiceInstance, customer: str | None = None,
                 **fields: Any) -> dict[str, Any]:
    """An ES5462 MFP at the Hansaallee of `customer` (a new one unless given); the event's body."""
    return await provision_device(amqp_url, ticketing, customer_number=customer or random_id("C-"),
                                  **{"model": "ES5462 MFP", "location": HANSAALLEE, "friendly_name": "FinalTest1",
                                     **fields})


def ticket(device: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"device_id": device["device_id"], "contact": CONTACT, "description": "Papierstau in Fach 2",
            **extra}


async def customer_device(amqp_url: str, ticketing: ServiceInstance, settings: Settings,
                          **fields: Any) -> tuple[str, dict[str, Any]]:
    """A token of a user of a new customer, and a device of that customer."""
    device = await es5462(amqp_url, ticketing, **fields)
    return token_for(settings, customer_number=device["customer_number"])[0], device


async def opened(portal: PortalClient, token: str, device: dict[str, Any], *, lang: str | None = None,
                 **extra: Any) -> str:
    """The number of a ticket opened for `device`."""
    reply = await portal.call("ticketing.open_ticket", ticket(device, **extra), token=token, lang=lang)
    assert reply["status"] == "to_be_scheduled"
    return str(reply["ticket_number"])


async def move(portal: PortalClient, settings: Settings, number: str, *statuses: str, **extra: Any) -> None:
    """The operator sets each status in turn (a technician and an ETA come with `dispatched`)."""
    for status in statuses:
        body: dict[str, Any] = {"ticket_number": number, "status": status, **extra}
        if status == "dispatched":
            body = {"technician": "Kari Nordmann", "eta": "2026-12-04T09:30:00+01:00", **body}
        assert await portal.call("ticketing.operator.set_status", body, token=operator(settings)) == {
            "status": status}


async def holder(ticketing: ServiceInstance, device: dict[str, Any]) -> str | None:
    """The number of the ticket holding the device's guard (`open_tickets`), None when it is free."""
    guard = await ticketing.db.open_tickets.find_one({"_id": device["device_id"]})
    if guard is None or guard.get("ticket_id") is None:
        return None
    held = await ticketing.db.tickets.find_one({"_id": guard["ticket_id"]}, {"ticket_number": 1})
    return str(held["ticket_number"]) if held else f"never stored: {guard['ticket_id']}"
