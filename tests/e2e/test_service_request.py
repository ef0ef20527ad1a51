"""A service request end to end: registration, ticketing and the notifier running together, the mails as the SMTP
server received them. OneRicoh's FAQ: one open request per machine, more text until a technician is dispatched, a
permanent service address approved by the vendor; OKI's receipt with the project number."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import icalendar
import pytest

from contracts.client import PortalClient, PortalError
from deploy.local.demo import OKI_MODELS
from services.notifier.app import service as notifier_service
from services.registration.app import service as registration_service
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from services.ticketing.app import service as ticketing_service
from tests.builders import random_email, random_id, random_serial, token_for
from tests.support import Mailbox, eventually, outcome, plain_text, running

pytestmark = pytest.mark.asyncio

OFFICE = {"name": "Kontor", "street": "Karl Johans gate 1", "postal_code": "0154", "city": "Oslo"}
NEW_OFFICE = {"name": "Nytt kontor", "street": "Dronning Eufemias gate 16", "postal_code": "0191", "city": "Oslo"}


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[dict[str, ServiceInstance]]:
    async with running(registration_service, settings) as registration, \
            running(ticketing_service, settings) as ticketing, \
            running(notifier_service, settings) as notifier:
        yield {"registration": registration, "ticketing": ticketing, "notifier": notifier}


async def test_a_ticket_from_opening_to_closing_then_a_new_one_for_the_same_device(
        stack: dict[str, ServiceInstance], settings: Settings, portal: PortalClient, mailbox: Mailbox) -> None:
    customer, contact = random_id("C-"), random_email()
    operator = token_for(settings, Role.OPERATOR, customer_number=None)[0]
    await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
    serials = [random_serial("AK6C") for _ in range(2)]
    await portal.call("registration.operator.import_installed_base", {"devices": [
        {"serial_number": serial, "model": "C332", "customer_number": customer, "contract_number": "K-1",
         "location": OFFICE} for serial in serials]}, token=operator)
    owner = token_for(settings, customer_number=customer)[0]
    device = await portal.call("registration.get_device", {"serial_number": serials[0]}, token=owner)

    async def known_to_ticketing() -> bool:
        return await stack["ticketing"].db.devices.find_one({"_id": device["device_id"]}) is not None
    await eventually(known_to_ticketing)

    request = {"device_id": device["device_id"], "description": "Papirstopp i skuff 2",
               "contact": {"name": "Kari Nordmann", "email": contact, "phone": "+47 22 00 00 00"},
               "service_address": {"address": NEW_OFFICE, "permanent": True}}
    opened = await portal.call("ticketing.open_ticket", request, token=owner, lang="nb")
    number = opened["ticket_number"]
    assert re.fullmatch(r"\d+/1", number) and opened["status"] == "to_be_scheduled"
    with pytest.raises(PortalError) as refused:
        await portal.call("ticketing.open_ticket", request, token=owner)
    assert refused.value.code == "open_ticket_exists"
    assert refused.value.fields == {"ticket_number": number, "updatable": "true"}
    assert await portal.call("ticketing.add_note", {"ticket_number": number, "text": "Også skuff 3"},
                             token=owner) == {}

    # The permanent address waits in registration's queue, naming the ticket; approved, both devices move.
    async def filed() -> bool:
        pending = await portal.call("registration.operator.list_requests", {"kind": "address_change"},
                                    token=operator)
        return any(item.get("ticket_number") == number for item in pending["items"])
    await eventually(filed)
    pending = await portal.call("registration.operator.list_requests", {"kind": "address_change"}, token=operator)
    [change] = [item for item in pending["items"] if item.get("ticket_number") == number]
    assert sorted(moving["serial_number"] for moving in change["devices"]) == sorted(serials)
    await portal.call("registration.operator.decide_request", {"request_id": change["request_id"], "approve": True},
                      token=operator)
    moved = await portal.call("registration.get_device", {"serial_number": serials[1]}, token=owner)
    assert moved["location"]["street"] == NEW_OFFICE["street"]

    queue = await portal.call("ticketing.operator.list_tickets", {}, token=operator)
    assert number in [ticket["ticket_number"] for ticket in queue["items"]]
    eta = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    steps = [("dispatched", {"technician": "Ola Tekniker", "eta": eta.isoformat()}), ("en_route", {}),
             ("on_site", {}), ("resolved", {"note": "Valse byttet"}), ("closed", {})]
    for status, extra in steps[:1]:
        await portal.call("ticketing.operator.set_status", {"ticket_number": number, "status": status, **extra},
                          token=operator)
    assert await outcome(portal, "ticketing.add_note", {"ticket_number": number, "text": "Mer"},
                         owner) == "already_dispatched"
    assert await outcome(portal, "ticketing.cancel_ticket", {"ticket_number": number, "reason": "Fikset selv"},
                         owner) == "already_dispatched"
    for status, extra in steps[1:]:
        await portal.call("ticketing.operator.set_status", {"ticket_number": number, "status": status, **extra},
                          token=operator)
    ticket = await portal.call("ticketing.get_ticket", {"ticket_number": number}, token=owner)
    assert [step["status"] for step in ticket["history"]] == [
        "to_be_scheduled", "dispatched", "en_route", "on_site", "resolved", "closed"]
    assert ticket["service_address"]["street"] == NEW_OFFICE["street"] and len(ticket["notes"]) == 1

    again = await portal.call("ticketing.open_ticket", {**request, "service_address": None}, token=owner)
    assert again["ticket_number"].endswith("/2") and again["ticket_number"] != number

    # Receipt, dispatched, en route, on site, resolved for the first ticket, a receipt for the second: each once.
    async def all_mailed() -> bool:
        return len(mailbox.to(contact)) >= 6
    await eventually(all_mailed, timeout=30)
    mails = mailbox.to(contact)
    assert len(mails) == 6
    assert sum(number in plain_text(mail) for mail in mails) == 5
    assert all(mail["Auto-Submitted"] == "auto-generated" for mail in mails)
    [calendar] = [part for mail in mails for part in mail.iter_attachments()
                  if (part.get_filename() or "").endswith(".ics")]
    [visit] = icalendar.Calendar.from_ical(calendar.get_content()).walk("VEVENT")
    assert visit.decoded("DTSTART") == eta
