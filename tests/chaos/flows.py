"""Realistic streams of commands and events for the fault tests, one per service, run against service processes.

Each flow prepares what its commands need, then runs a stream: commands sent by a few gateways at once, each
re-sent with the same `message_id` while it gets no reply (`send_until_answered`), and the events the service
consumes published between them; a fault (`Fault`) is injected once a third of the commands are answered. Then
the flow counts, in the databases and the mailbox, that every command answered `ok` took effect once, every event
was handled once and every due mail was sent once, and returns those counts (`Summary`) so runs can be compared.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aio_pika
import aiormq
from pymongo import AsyncMongoClient

from contracts.accounts import Contract, CustomerProvisioned, TermsAccepted, UserActivated
from contracts.client import PortalClient
from contracts.registration import CounterReading, DeviceProvisioned, DeviceUpdated, ReminderRecipient
from deploy.local.demo import OKI_CONSUMABLES, OKI_MODELS
from services.accounts.store import serial_key
from services.metering import periods
from services.runtime.mongo import Database, Document
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import (
    device_registration,
    publish_event,
    random_email,
    random_id,
    random_serial,
    sign_up,
    token_for,
)
from tests.support import Mailbox, ServiceProcesses, eventually, mails_by_recipient_and_subject, send_until_answered

Fault = Callable[[], Awaitable[None]]
Summary = dict[str, int]
# After every due mail arrived: room for a wrong second copy to arrive too (a second copy that comes later than this,
# such as one a killed notifier sends again once its 10 s lease ran out, goes unseen, which is allowed anyway).
SETTLE_SECONDS = 5.0
STREAM_SIZE = 10  # commands per flow: a few seconds of stream on 2 shared cores
OFFICE = {"name": "Zimmermann GmbH", "street": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin"}


@dataclass
class Command:
    name: str
    body: Mapping[str, Any]
    token: str | None = None
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class World:
    """What a flow works with: the service processes, a gateway's client, the databases, the SMTP server."""

    settings: Settings
    amqp_url: str
    portal: PortalClient
    mailbox: Mailbox
    processes: ServiceProcesses
    mongo: AsyncMongoClient[Document]
    # (recipient, subject) of mails a killed notifier had in flight (accepted by SMTP, or about to be, and not yet
    # recorded as sent): the one case where its README allows a second copy (see test_kills.py).
    may_repeat: set[tuple[str, str]] = field(default_factory=set)
    # How many commands of the stream were answered when the fault struck: proof it struck in the middle.
    answered_at_fault: int | None = None
    # Whether the gateways re-send a command answered `internal` (same message id), and how often they did.
    resend_internal: bool = False
    internal_replies: int = 0
    mails_doubled: int = 0  # mails that arrived twice (each one allowed by `may_repeat`)

    def db(self, service: str) -> Database:
        return self.mongo[self.settings.database_name(service)]

    @property
    def operator(self) -> str:
        return token_for(self.settings, Role.OPERATOR, customer_number=None)[0]


async def stream(world: World, commands: Sequence[Command], events: Sequence[tuple[str, Document]], *,
                 fault: Fault | None, gateways: int = 3) -> list[dict[str, Any]]:
    """The reply envelope of each command, in order, once every one is answered and every event published."""
    replies: list[dict[str, Any]] = [{} for _ in commands]
    answered, third = 0, asyncio.Event()
    pending = iter(enumerate(commands))  # shared by the gateways: each command is taken once

    async def gateway() -> None:
        nonlocal answered
        for index, command in pending:
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                replies[index] = await send_until_answered(world.portal, command.name, command.body,
                                                           token=command.token, message_id=command.message_id)
                if replies[index].get("ok") or replies[index]["error"]["code"] != "internal" \
                        or not world.resend_internal:
                    break
                world.internal_replies += 1  # the gateway tries again later, with the same message id
                assert asyncio.get_running_loop().time() < deadline, \
                    f"{command.name} ({command.message_id}) still answers `internal`: {replies[index]}"
                await asyncio.sleep(0.5)
            answered += 1
            if answered * 3 >= len(commands):
                third.set()

    async def publisher() -> None:
        for routing_key, body in events:
            await publish_until_confirmed(world.amqp_url, routing_key, body)
            await asyncio.sleep(0.1)

    async def injector() -> None:
        await third.wait()
        if fault is not None:
            world.answered_at_fault = answered
            await fault()

    await asyncio.gather(*(gateway() for _ in range(gateways)), publisher(), injector())
    if fault is not None:
        assert world.answered_at_fault is not None and world.answered_at_fault < len(commands), \
            "the fault struck after the stream was over"
    return replies


async def publish_until_confirmed(amqp_url: str, routing_key: str, body: Document, *,
                                  give_up_after: float = 120.0) -> None:
    """Publish an event, again with the same `message_id` while the broker is away (its consumers drop copies)."""
    message_id = uuid.uuid4().hex
    deadline = asyncio.get_running_loop().time() + give_up_after
    while True:
        try:
            await publish_event(amqp_url, routing_key, body, message_id=message_id)
            return
        except (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, ConnectionError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


def all_ok(replies: Sequence[Mapping[str, Any]]) -> None:
    refused = [reply for reply in replies if not reply.get("ok")]
    assert refused == [], f"commands refused: {refused}"


async def assert_mailed_once(world: World, expected: set[tuple[str, str]], *, timeout: float = 60.0) -> int:
    """Every (recipient, subject) of `expected` arrived exactly once, and nothing else to these recipients did; a
    second copy only of a mail the killed notifier had in flight (`World.may_repeat`). How many mails they got."""
    recipients = {recipient for recipient, _ in expected}

    def ours() -> Counter[tuple[str, str]]:
        return Counter({key: number for key, number in mails_by_recipient_and_subject(world.mailbox).items()
                        if key[0] in recipients})

    async def all_arrived() -> bool:
        return expected <= set(ours())
    await eventually(all_arrived, timeout=timeout, step=0.2)
    await asyncio.sleep(SETTLE_SECONDS)
    counts = ours()
    assert set(counts) == expected, f"unexpected mails: {set(counts) - expected}"
    doubled = {key: number for key, number in counts.items() if number != 1}
    world.mails_doubled += len(doubled)
    if not all(key in world.may_repeat and number == 2 for key, number in doubled.items()):
        deliveries = [{field: delivery.get(field) for field in ("_id", "status", "attempts", "created_at", "sent_at")}
                      async for delivery in world.db("notifier").deliveries.find(
                          {"subject": {"$in": [subject for _, subject in doubled]}})]
        raise AssertionError(f"mails sent more than once: {doubled} (in flight at the kill: {world.may_repeat}); "
                             f"their deliveries: {deliveries}")
    return sum(counts.values())


async def count(collection: Any, query: Document) -> int:
    return int(await collection.count_documents(query))


async def assert_outboxes_drained(db: Database, *collections: str) -> None:
    """Every event a stored change carries has been published: no document keeps an outbox."""
    async def drained() -> bool:
        return all([await count(db[name], {"outbox_pending": 1}) == 0 for name in collections])
    await eventually(drained, timeout=30, step=0.2)


# --- events the flows publish as the upstream services would ----------------------------------------------------

def provisioned_device(customer_number: str, *, model: str = "ES5431dn", contract_number: str = "K-1",
                       last_date: date | None = None) -> DeviceProvisioned:
    readings = [CounterReading(name=name, value=1000, date=last_date or today() - timedelta(days=400))
                for name in ("mono", "color")]
    return DeviceProvisioned(
        device_id=random_id("d"), serial_number=random_serial("AK5A"), model=model, counters=["mono", "color"],
        customer_number=customer_number, contract_number=contract_number, location=OFFICE, last_readings=readings,
        reminder_recipients=[ReminderRecipient(customer_number=customer_number)], version=1)


def renamed(device: DeviceProvisioned) -> tuple[str, Document]:
    """The device's next version, renamed: a read model keeps it once handled."""
    update = DeviceUpdated(**{**device.model_dump(), "friendly_name": f"Drucker {device.serial_number}",
                              "version": 2})
    return DeviceUpdated.routing_key, update.model_dump(mode="json")


def customer_provisioned(customer_number: str, billing_period: str, *,
                         includes_consumables: bool = False) -> CustomerProvisioned:
    contract = Contract(contract_number="K-1", type="page_price", billing_period=billing_period,
                        start_date=date(2010, 1, 1), includes_consumables=includes_consumables)
    return CustomerProvisioned(customer_number=customer_number, customer_name="Zimmermann GmbH", contracts=[contract],
                               version=1)


def user_activated(user_id: str, email: str, customer_number: str | None) -> UserActivated:
    return UserActivated(user_id=user_id, email=email, language="en", first_name="Clara", last_name="Zimmermann",
                         username=random_id("clara"), role="customer", customer_number=customer_number)


def today() -> date:
    return datetime.now(UTC).date()


async def publish_all(world: World, *events: Any) -> None:
    for event in events:
        await publish_until_confirmed(world.amqp_url, event.routing_key, event.model_dump(mode="json"))


async def wait_stored(collection: Any, ids: Sequence[str], *, version: int | None = None) -> None:
    """Until every one of `ids` is stored in `collection` (at `version` or later, if given)."""
    query: Document = {"_id": {"$in": list(ids)}}
    if version is not None:
        query["version"] = {"$gte": version}

    async def stored() -> bool:
        return await count(collection, query) == len(ids)
    await eventually(stored, timeout=30, step=0.2)


async def devices_known(world: World, service: str, devices: Sequence[DeviceProvisioned], *,
                        version: int = 1) -> None:
    await wait_stored(world.db(service).devices, [device.device_id for device in devices], version=version)


# --- the flows ------------------------------------------------------------------------------------------------

async def accounts_flow(world: World, fault: Fault | None) -> Summary:
    """Sign-ups (commands) while registration's installed base arrives (events); accounts' `user.registered` events
    become the notifier's confirmation mails."""
    requests = [sign_up() for _ in range(STREAM_SIZE)]
    serials = [random_serial("AK5A") for _ in range(STREAM_SIZE)]
    events = [(DeviceProvisioned.routing_key, DeviceProvisioned(
        device_id=random_id("d"), serial_number=serial, model="ES5431dn", customer_number=random_id("C-"),
        version=1).model_dump(mode="json")) for serial in serials]
    replies = await stream(world, [Command("accounts.register", request) for request in requests], events,
                           fault=fault)
    all_ok(replies)
    db = world.db("accounts")
    emails = [request["email"].lower() for request in requests]
    users = await count(db.users, {"email_key": {"$in": emails}})
    assert users == STREAM_SIZE
    assert len({reply["data"]["user_id"] for reply in replies}) == STREAM_SIZE
    await wait_stored(db.installed_base, [serial_key(serial) for serial in serials])
    await assert_outboxes_drained(db, "users")
    mails = await assert_mailed_once(world, {(email, "Please confirm your e-mail address") for email in emails})
    return {"users": users, "installed_base": await count(db.installed_base, {"_id": {"$in": [
        serial_key(serial) for serial in serials]}}), "account_mails": mails}


async def registration_flow(world: World, fault: Fault | None) -> Summary:
    """Device registrations (commands) while other users' acceptances of the terms arrive (events); registration's
    `device.registered` events become the notifier's registration mails."""
    customer = random_id("C-")
    users = [(random_id("u"), random_email()) for _ in range(2)]
    await send_until_answered(world.portal, "registration.operator.upsert_models", {"models": OKI_MODELS},
                              token=world.operator)
    await publish_all(world, *(TermsAccepted(user_id=user_id, customer_number=customer, terms_version="1",
                                             privacy_version="1", accepted_at=datetime.now(UTC))
                               for user_id, _ in users),
                      *(user_activated(user_id, email, customer) for user_id, email in users))
    await wait_stored(world.db("registration").terms_accepted, [user_id for user_id, _ in users])
    await wait_stored(world.db("notifier").recipients, [user_id for user_id, _ in users])
    tokens = [token_for(world.settings, user_id=user_id, customer_number=customer)[0] for user_id, _ in users]
    requests = [device_registration(serial_number=random_serial("AK6C")) for _ in range(STREAM_SIZE)]
    commands = [Command("registration.register_device", request, tokens[index % 2])
                for index, request in enumerate(requests)]
    others = [random_id("u") for _ in range(STREAM_SIZE)]
    events = [(TermsAccepted.routing_key, TermsAccepted(user_id=user_id, terms_version="1", privacy_version="1",
                                                        accepted_at=datetime.now(UTC)).model_dump(mode="json"))
              for user_id in others]
    replies = await stream(world, commands, events, fault=fault)
    all_ok(replies)
    db = world.db("registration")
    serials = [request["serial_number"] for request in requests]
    devices = await count(db.devices, {"serial_number": {"$in": serials}})
    assert devices == STREAM_SIZE
    assert len({reply["data"]["device_id"] for reply in replies}) == STREAM_SIZE
    await wait_stored(db.terms_accepted, others)
    await assert_outboxes_drained(db, "devices")
    mails = await assert_mailed_once(world, {(users[index % 2][1], f"Your device C332 ({serial}) has been registered")
                                             for index, serial in enumerate(serials)})
    return {"devices": devices, "terms_accepted": await count(db.terms_accepted, {"_id": {"$in": others}}),
            "registration_mails": mails}


def quiet_billing_period(catch_up_days: int) -> periods.BillingPeriod:
    """A billing period with no window open today nor on the days the scheduler catches up on: its scheduler then
    reminds nobody of this flow's devices, and only the operator's run does."""
    choices: tuple[periods.BillingPeriod, ...] = ("annual", "semiannual", "quarterly", "monthly")
    for billing in choices:
        days = (today() - timedelta(days=back) for back in range(catch_up_days + 1))
        if all(periods.window_on(day, billing) is None for day in days):
            return billing
    raise AssertionError("every billing period has a window open now")


async def metering_flow(world: World, fault: Fault | None) -> Summary:
    """Readings (commands) and an operator's reminder run while registration renames the devices (events); the run's
    `reminder.due` event becomes the notifier's reminder mail."""
    customer, user_id, email = random_id("C-"), random_id("u"), random_email()
    billing = quiet_billing_period(catch_up_days=14)
    devices = [provisioned_device(customer) for _ in range(STREAM_SIZE)]
    await publish_all(world, customer_provisioned(customer, billing), user_activated(user_id, email, customer),
                      *devices)
    await devices_known(world, "metering", devices)
    await wait_stored(world.db("metering").customers, [customer])
    await wait_stored(world.db("notifier").recipients, [user_id])
    token = token_for(world.settings, user_id=user_id, customer_number=customer)[0]
    commands = [Command("metering.submit_reading", {"device_id": device.device_id, "readings": [
        {"counter": "mono", "value": 1100}, {"counter": "color", "value": 1050}]}, token) for device in devices]
    # A window that closed before today: none of today's readings counts for it, so it reminds of every device.
    window = periods.closed_window_before(today(), billing)
    commands.insert(STREAM_SIZE // 2, Command("metering.operator.run_reminders", {"as_of": window.opens.isoformat()},
                                              world.operator))
    replies = await stream(world, commands, [renamed(device) for device in devices], fault=fault)
    all_ok(replies)
    db = world.db("metering")
    readings = {device.device_id: await count(db.readings, {"device_id": device.device_id}) for device in devices}
    assert readings == {device.device_id: 1 for device in devices}
    reminders = await count(db.reminders, {"recipient.customer_number": customer})
    assert reminders == 1
    await devices_known(world, "metering", devices, version=2)
    await assert_outboxes_drained(db, "readings", "reminders")
    subject = f"Please submit your meter readings (billing period ending {window.period_end.isoformat()})"
    mails = await assert_mailed_once(world, {(email, subject)})
    return {"readings": sum(readings.values()), "reminders": reminders, "reminder_mails": mails}


async def ordering_flow(world: World, fault: Fault | None) -> Summary:
    """Orders (commands) while registration renames the devices (events); `order.placed` events become the
    notifier's order confirmations to each order's contact."""
    customer = random_id("C-")
    devices = [provisioned_device(customer) for _ in range(STREAM_SIZE)]
    await publish_all(world, customer_provisioned(customer, "quarterly", includes_consumables=True), *devices)
    await send_until_answered(world.portal, "ordering.operator.upsert_consumables", {
        "model": "ES5431dn", "items": OKI_CONSUMABLES["ES5431dn"]}, token=world.operator)
    await devices_known(world, "ordering", devices)
    await wait_stored(world.db("ordering").customers, [customer])
    token = token_for(world.settings, customer_number=customer)[0]
    contacts = [random_email() for _ in devices]
    commands = [Command("ordering.place_order", {
        "lines": [{"device_id": device.device_id, "article_number": "44973512", "quantity": 1}],
        "contact": {"name": "Clara Zimmermann", "email": contact}, "reference": f"chaos {index}"}, token)
        for index, (device, contact) in enumerate(zip(devices, contacts, strict=True))]
    replies = await stream(world, commands, [renamed(device) for device in devices], fault=fault)
    all_ok(replies)
    db = world.db("ordering")
    numbers = [reply["data"]["order_number"] for reply in replies]
    orders = {command.body["reference"]: await count(db.orders, {"reference": command.body["reference"]})
              for command in commands}
    assert orders == {command.body["reference"]: 1 for command in commands}
    await devices_known(world, "ordering", devices, version=2)
    await assert_outboxes_drained(db, "orders")
    mails = await assert_mailed_once(world, {(contact, f"Order confirmation {number}")
                                             for contact, number in zip(contacts, numbers, strict=True)})
    return {"orders": sum(orders.values()), "order_mails": mails}


async def ticketing_flow(world: World, fault: Fault | None, *, list_deliveries: bool = False) -> Summary:
    """Tickets opened (commands) while registration renames the devices (events); `ticket.opened` events become the
    notifier's receipts to each ticket's contact. With `list_deliveries`, the operator's tool asks the notifier for
    its deliveries all along (the notifier's commands)."""
    customer = random_id("C-")
    devices = [provisioned_device(customer) for _ in range(STREAM_SIZE)]
    await publish_all(world, *devices)
    await devices_known(world, "ticketing", devices)
    token = token_for(world.settings, customer_number=customer)[0]
    contacts = [random_email() for _ in devices]
    commands = [Command("ticketing.open_ticket", {
        "device_id": device.device_id, "description": "Papierstau in Fach 2",
        "contact": {"name": "Clara Zimmermann", "email": contact}}, token)
        for device, contact in zip(devices, contacts, strict=True)]
    if list_deliveries:
        commands = [each for opening in commands for each in (
            opening, Command("notifier.operator.list_deliveries", {"page_size": 5}, world.operator))]
    replies = await stream(world, commands, [renamed(device) for device in devices], fault=fault)
    all_ok(replies)
    db = world.db("ticketing")
    numbers = [reply["data"]["ticket_number"] for command, reply in zip(commands, replies, strict=True)
               if command.name == "ticketing.open_ticket"]
    tickets = {contact: await count(db.tickets, {"contact.email": contact}) for contact in contacts}
    assert tickets == dict.fromkeys(contacts, 1)
    guards = await count(db.open_tickets, {"_id": {"$in": [device.device_id for device in devices]}})
    assert guards == STREAM_SIZE  # one per device, each holding its ticket
    await devices_known(world, "ticketing", devices, version=2)
    await assert_outboxes_drained(db, "tickets")
    mails = await assert_mailed_once(world, {(contact, f"Service request {number} received")
                                             for contact, number in zip(contacts, numbers, strict=True)})
    return {"tickets": sum(tickets.values()), "ticket_mails": mails}


async def notifier_flow(world: World, fault: Fault | None) -> Summary:
    return await ticketing_flow(world, fault, list_deliveries=True)


# The services each flow runs, and the flow that puts each service under a stream of its commands and events.
FLOWS: dict[str, tuple[tuple[str, ...], Callable[[World, Fault | None], Awaitable[Summary]]]] = {
    "accounts": (("accounts", "notifier"), accounts_flow),
    "registration": (("registration", "notifier"), registration_flow),
    "metering": (("metering", "notifier"), metering_flow),
    "ordering": (("ordering", "notifier"), ordering_flow),
    "ticketing": (("ticketing", "notifier"), ticketing_flow),
    "notifier": (("ticketing", "notifier"), notifier_flow),
}
