"""A reminder that turns into readings, end to end: registration, metering and the notifier running together, the
mail as the SMTP server received it. Its sheet filled in and uploaded, its personal link, its unsubscribe link."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts.accounts import Contract, CustomerProvisioned, UserActivated
from contracts.client import PortalClient
from deploy.local.demo import OKI_MODELS
from services.metering import periods
from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.notifier.app import service as notifier_service
from services.registration.app import service as registration_service
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import publish_event, random_email, random_id, random_serial, token_for
from tests.readmodels import today
from tests.support import EventTap, Mailbox, eventually, plain_text, running

pytestmark = pytest.mark.asyncio

PUBLIC_URL = "https://portal.example.test"
LINK = re.compile(r"https://portal\.example\.test/(readings|unsubscribe)\?token=([A-Za-z0-9_-]+)")


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[dict[str, ServiceInstance]]:
    shared = settings.model_copy(update={"public_url": PUBLIC_URL})
    metering_settings = MeteringSettings(**dict(shared), metering_scheduler_seconds=3600.0)
    async with running(registration_service, shared) as registration, \
            running(metering_service, metering_settings) as metering, \
            running(notifier_service, shared) as notifier:
        yield {"registration": registration, "metering": metering, "notifier": notifier}


def links(mail: EmailMessage, kind: str) -> list[str]:
    return [token for found, token in LINK.findall(plain_text(mail)) if found == kind]


def sheet_of(mail: EmailMessage) -> openpyxl.Workbook:
    (attachment,) = [part for part in mail.iter_attachments() if (part.get_filename() or "").endswith(".xlsx")]
    return openpyxl.load_workbook(io.BytesIO(attachment.get_content()))


async def test_a_reminder_mail_becomes_readings_through_its_sheet_and_its_link_and_unsubscribes_a_device(
        stack: dict[str, ServiceInstance], settings: Settings, portal: PortalClient, amqp_url: str,
        mailbox: Mailbox) -> None:
    customer, user_id, email = random_id("C-"), random_id("u"), random_email()
    operator, _ = token_for(settings, Role.OPERATOR, customer_number=None)
    await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
    await publish_event(amqp_url, UserActivated.routing_key, UserActivated(
        user_id=user_id, email=email, language="de", first_name="Clara", last_name="Zimmermann",
        username=random_id("clara"), role="customer", customer_number=customer).model_dump(mode="json"))
    contract = Contract(contract_number="K-1", type="page_price", billing_period="monthly",
                        start_date=today() - timedelta(days=800))
    await publish_event(amqp_url, CustomerProvisioned.routing_key, CustomerProvisioned(
        customer_number=customer, customer_name="Zimmermann GmbH", contracts=[contract],
        version=1).model_dump(mode="json"))
    last_date = (today() - timedelta(days=45)).isoformat()
    serials = [random_serial("AK6C") for _ in range(3)]
    imported = await portal.call("registration.operator.import_installed_base", {"devices": [
        {"serial_number": serial, "model": "C332", "customer_number": customer, "contract_number": "K-1",
         "location": {"name": "Zimmermann GmbH", "street": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin"},
         "counters": [{"name": "mono", "value": 4500, "date": last_date},
                      {"name": "color", "value": 5380, "date": last_date}]} for serial in serials]}, token=operator)
    assert imported["imported"] == 3
    metering = stack["metering"]

    async def metering_knows_everything() -> bool:
        devices = await metering.db.devices.count_documents({"customer_number": customer, "baseline.mono.value": 4500})
        return devices == 3 and await metering.db.customers.find_one({"_id": customer}) is not None
    await eventually(metering_knows_everything)

    window = periods.Window(periods.period_end(today(), "monthly"))
    ran = await portal.call("metering.operator.run_reminders", {"as_of": window.opens.isoformat()}, token=operator)
    assert ran["reminders"] == 1

    async def mailed() -> bool:
        return any(email in str(message["To"]) for message in mailbox.messages)
    await eventually(mailed, timeout=20)
    (mail,) = [message for message in mailbox.messages if email in str(message["To"])]
    assert "Zählerstände" in str(mail["Subject"]) or mail["Content-Language"] == "de"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    devices = {device["serial_number"]: device async for device in metering.db.devices.find({"customer_number":
                                                                                             customer})}
    by_sheet, by_link, unsubscribed = serials

    # The sheet: typed in for one device, uploaded as it is.
    workbook = sheet_of(mail)
    sheet = workbook.active
    header = [cell.value for cell in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        if row[header.index("serial_number")].value == by_sheet:
            row[header.index("value")].value = row[header.index("last_value")].value + 1000
    buffer = io.BytesIO()
    workbook.save(buffer)
    token, _ = token_for(settings, customer_number=customer, user_id=user_id)
    uploaded = await portal.call("metering.submit_bulk", {"file": {
        "filename": "zaehlerstaende.xlsx", "content_type": "application/octet-stream",
        "content_base64": base64.b64encode(buffer.getvalue()).decode()}}, token=token)
    assert (uploaded["accepted"], uploaded["rejected"]) == (1, [])

    # The personal link: no sign-in.
    (reading_token,) = links(mail, "readings")
    by_link_id = devices[by_link]["_id"]
    linked = await portal.call("metering.submit_by_link", {"token": reading_token, "readings": [
        {"device_id": by_link_id, "counter": "mono", "value": 4600},
        {"device_id": by_link_id, "counter": "color", "value": 5400}]})
    assert (linked["accepted"], linked["rejected"]) == (1, [])

    # The unsubscribe link of the third device: registration turns its reminders off, metering follows.
    unsubscribe_tokens = links(mail, "unsubscribe")
    assert len(unsubscribe_tokens) == 3
    text = plain_text(mail)
    position = text.index(unsubscribed)
    after = [match for match in LINK.finditer(text) if match.group(1) == "unsubscribe" and match.start() > position]
    await portal.call("notifier.unsubscribe", {"token": after[0].group(2)})
    unsubscribed_id = devices[unsubscribed]["_id"]

    async def reminders_off() -> bool:
        device = await metering.db.devices.find_one({"_id": unsubscribed_id})
        return device is not None and device.get("reminder_recipients") == []
    await eventually(reminders_off, timeout=20)
    registered = await portal.call("registration.get_device", {"device_id": unsubscribed_id}, token=token)
    assert registered["reminders"] is False

    # Readings dated today count for the window open today, which is not the one reminded of when this test runs
    # between two windows; what any later reminder must leave out is the device unsubscribed.
    async with EventTap(amqp_url, "metering.reminder.due") as tap:
        await portal.call("metering.operator.run_reminders", {"as_of": window.second_reminder.isoformat()},
                          token=operator)
        await asyncio.sleep(1.0)
    listed = {device["device_id"] for event in tap.named("metering.reminder.due") for device in event["devices"]}
    assert unsubscribed_id not in listed
