"""Two customers of one vendor, a dealer and a contract sign-in, with devices, a reading, an order, a ticket, an
upload, a contact and an address-change request, all made through the services' own commands: the world the isolation
matrix and the fuzzing act on. Also what A's state is, through A's reads and in the databases.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bson import json_util

from contracts.client import PortalClient
from deploy.local.demo import OKI_CONSUMABLES, OKI_MODELS
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.accounts.flows import signed_in, signed_up
from tests.builders import device_registration, random_email, random_id, random_serial, token_for
from tests.registration.test_bulk import finished, row, upload_body, workbook
from tests.support import EventTap, eventually

HANSAALLEE = {"name": "Büro", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf",
              "country": "DE"}
KARL_JOHAN = {"name": "Kontor", "street": "Karl Johans gate 1", "postal_code": "0154", "city": "Oslo", "country": "NO"}
FRIEDRICHSTRASSE = {"name": "Zentrale", "street": "Friedrichstraße 100", "postal_code": "10117", "city": "Berlin",
                    "country": "DE"}
CONTACT = {"name": "Claudia Zimmermann", "email": "c.zimmermann@example.com", "phone": "0211 5266 252"}
TONER_K = "44973512"
PASSWORD = "correct horse battery staple"


@dataclass
class Device:
    device_id: str
    serial_number: str


@dataclass
class Customer:
    """A customer company, one of its users (signed in) and what that user made."""

    number: str
    contracts: list[str]
    user_id: str = ""
    email: str = ""
    username: str = ""
    token: str = ""
    devices: dict[str, Device] = field(default_factory=dict)
    reading_id: str = ""
    order_number: str = ""
    ticket_number: str = ""
    upload_id: str = ""
    contact_id: str = ""
    request_id: str = ""


@dataclass
class World:
    settings: Settings
    operator: str
    a: Customer
    b: Customer
    dealer: str  # a dealer of no customer, approved by an operator
    dealer_login: str
    contract: str  # A's sign-in with its second contract: it sees that contract's devices only
    callers: dict[str, str] = field(default_factory=dict)  # name -> token
    identities: dict[str, str] = field(default_factory=dict)  # name -> user id

    def token(self, caller: str) -> str:
        return self.callers[caller]

    def a_markers(self) -> list[str]:
        """Strings that name A's resources (and only A's): no reply to another caller may contain any of them."""
        a = self.a
        return [a.number, a.user_id, a.email, a.username, *a.contracts, *self.outside_contract_markers()]

    def outside_contract_markers(self) -> list[str]:
        """A's resources outside its second contract: what A's contract sign-in must not see either."""
        a = self.a
        devices = [a.devices["a1"], a.devices["a3"]]
        return [a.user_id, a.email, a.contracts[0], *(device.device_id for device in devices),
                *(device.serial_number for device in devices), a.reading_id, a.order_number, a.ticket_number,
                a.upload_id, a.contact_id, a.request_id]

    def hidden_from(self, caller: str) -> list[str]:
        return self.outside_contract_markers() if caller == "contract" else self.a_markers()


async def build_world(portal: PortalClient, settings: Settings, stack: dict[str, ServiceInstance],
                      amqp_url: str) -> World:
    operator = token_for(settings, Role.OPERATOR, customer_number=None)[0]
    await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
    for model, items in OKI_CONSUMABLES.items():
        await portal.call("ordering.operator.upsert_consumables", {"model": model, "items": items}, token=operator)
    a = Customer(random_id("CA-"), [random_id("KA1-"), random_id("KA2-")])
    b = Customer(random_id("CB-"), [random_id("KB1-")])
    await provision(portal, operator, a)
    await provision(portal, operator, b)
    a.devices = await import_devices(portal, settings, a, {"a1": ("ES5462 MFP", 0, HANSAALLEE),
                                                           "a2": ("ES5431dn", 1, KARL_JOHAN)})
    b.devices = await import_devices(portal, settings, b, {"b1": ("ES5462 MFP", 0, FRIEDRICHSTRASSE)})
    await known_to_every_service(stack, [*a.devices.values(), *b.devices.values()])

    async with EventTap(amqp_url, "accounts.user.registered") as tap:
        for customer, device in ((a, a.devices["a1"]), (b, b.devices["b1"])):
            await sign_up_to(portal, tap, customer, device)
        dealer_request, dealer_id, dealer_link = await signed_up(portal, tap, role="dealer", password=PASSWORD,
                                                                 password_confirm=PASSWORD)
        await portal.call("accounts.confirm_email", {"token": dealer_link})
        await portal.call("accounts.operator.decide_verification", {"user_id": dealer_id, "approve": True},
                          token=operator)
        dealer = await portal.call("accounts.login", {"login": dealer_request["email"], "password": PASSWORD})
    contract = await portal.call("accounts.contract_login", {"customer_number": a.number,
                                                             "contract_number": a.contracts[1]})
    world = World(settings, operator, a, b, dealer["access_token"], dealer_request["email"],
                  contract["access_token"])
    world.callers = {"a": a.token, "b": b.token, "dealer": world.dealer, "contract": world.contract,
                     "operator": operator}
    world.identities = {"a": a.user_id, "b": b.user_id, "dealer": dealer["user"]["id"],
                        "contract": contract["user"]["id"]}
    for caller in ("a", "b", "dealer"):
        await portal.call("accounts.accept_terms", {"terms_version": "1", "privacy_version": "1"},
                          token=world.token(caller))
    await eventually(lambda: terms_known(stack["registration"], [a.user_id, b.user_id]))
    await resources_of(portal, world, a, stack)
    await resources_of(portal, world, b, stack)
    return world


async def provision(portal: PortalClient, operator: str, customer: Customer) -> None:
    contracts = [{"contract_number": number, "type": "page_price", "start_date": "2010-01-01",
                  "billing_period": "quarterly", "includes_consumables": index == 0}
                 for index, number in enumerate(customer.contracts)]
    await portal.call("accounts.operator.provision_customer", {"customer_number": customer.number,
                                                                "name": f"{customer.number} GmbH",
                                                                "contracts": contracts}, token=operator)


SERIAL_PREFIX = {"ES5462 MFP": "AK5M", "ES5431dn": "AK5A", "C332": "AK6C"}


async def import_devices(portal: PortalClient, settings: Settings, customer: Customer,
                         devices: dict[str, tuple[str, int, dict[str, str]]]) -> dict[str, Device]:
    """The customer's installed base: name -> (model, index of its contract, location)."""
    operator = token_for(settings, Role.OPERATOR, customer_number=None)[0]
    anyone_of_the_customer = token_for(settings, customer_number=customer.number)[0]
    serials = {name: random_serial(SERIAL_PREFIX[model]) for name, (model, _, _) in devices.items()}
    await portal.call("registration.operator.import_installed_base", {"devices": [
        {"serial_number": serials[name], "model": model, "customer_number": customer.number,
         "contract_number": customer.contracts[contract], "location": location,
         "counters": [{"name": "mono", "value": 1000, "date": "2020-01-01"}]}
        for name, (model, contract, location) in devices.items()]}, token=operator)
    found = {}
    for name, serial in serials.items():
        device = await portal.call("registration.get_device", {"serial_number": serial},
                                  token=anyone_of_the_customer)
        found[name] = Device(device["device_id"], serial)
    return found


async def known_to_every_service(stack: dict[str, ServiceInstance], devices: list[Device]) -> None:
    """Every device in the read models of metering, ordering and ticketing, and its serial in accounts'."""
    async def known() -> bool:
        for name in ("metering", "ordering", "ticketing"):
            ids = [device.device_id for device in devices]
            if await stack[name].db.devices.count_documents({"_id": {"$in": ids}}) < len(ids):
                return False
        serials = [device.serial_number for device in devices]
        return await stack["accounts"].db.installed_base.count_documents({"_id": {"$in": serials}}) == len(serials)
    await eventually(known, timeout=30)


async def sign_up_to(portal: PortalClient, tap: EventTap, customer: Customer, device: Device) -> None:
    """A user who joins the customer with one of its serials, signed in."""
    request, token = await signed_in(portal, tap, customer_number=customer.number, serial_number=device.serial_number,
                                     password=PASSWORD, password_confirm=PASSWORD)
    profile = await portal.call("accounts.get_profile", token=token)
    assert profile["customer_number"] == customer.number and profile["status"] == "active"
    customer.user_id, customer.email, customer.username, customer.token = (
        profile["user_id"], request["email"], request["username"], token)


async def terms_known(registration: ServiceInstance, user_ids: list[str]) -> bool:
    return await registration.db.terms_accepted.count_documents({"_id": {"$in": user_ids}}) == len(user_ids)


async def resources_of(portal: PortalClient, world: World, customer: Customer,
                       stack: dict[str, ServiceInstance]) -> None:
    """A registered device, a processed upload, a reading, an order, a ticket, a contact and an address request."""
    token = customer.token
    first = customer.devices[next(iter(customer.devices))]
    registration = device_registration(serial_number=random_serial("AK6C"), friendly_name="Empfang")
    registered = await portal.call("registration.register_device", registration, token=token)
    customer.devices[f"{first_letter(customer)}3"] = Device(registered["device_id"], registration["serial_number"])
    content = workbook([row(random_serial("AK6C"), name="Lager")])
    customer.upload_id = (await portal.call("registration.bulk_upload", upload_body(content), token=token))["upload_id"]
    assert (await finished(portal, token, customer.upload_id))["status"] == "processed"
    await portal.call("registration.rename_device", {"device_id": first.device_id, "friendly_name": "Flur 2"},
                      token=token)
    customer.request_id = (await portal.call("registration.request_address_change", {
        "device_id": first.device_id, "address": KARL_JOHAN, "reason": "Umzug"}, token=token))["request_id"]
    customer.reading_id = (await portal.call("metering.submit_reading", reading_of(first), token=token))["reading_id"]
    customer.order_number = (await portal.call("ordering.place_order", {
        "lines": [{"device_id": first.device_id, "article_number": TONER_K, "quantity": 1}],
        "contact": {"name": CONTACT["name"], "email": CONTACT["email"]}}, token=token))["order_number"]
    customer.ticket_number = (await portal.call("ticketing.open_ticket", {
        "device_id": first.device_id, "contact": CONTACT, "description": "Papierstau in Fach 2"},
        token=token))["ticket_number"]
    contacts = await portal.call("accounts.add_contact", {"name": "Empfang", "email": random_email()}, token=token)
    customer.contact_id = contacts["items"][0]["contact_id"]


def first_letter(customer: Customer) -> str:
    return customer.number[1].lower()


def reading_of(device: Device, value: int = 2000) -> dict[str, Any]:
    """A reading of every counter of an ES5462 MFP (the model of each customer's first device)."""
    return {"device_id": device.device_id, "readings": [{"counter": counter, "value": value}
                                                        for counter in ("mono", "color", "scan")]}


# --- A's state ----------------------------------------------------------------------------------------------------

async def view_of_a(portal: PortalClient, world: World) -> dict[str, Any]:
    """Everything A's user and A's contract sign-in read about A: profile, contacts, contracts, devices, uploads,
    readings, orders, tickets; compared before and after others act."""
    a, token = world.a, world.a.token
    reads: dict[str, tuple[str, dict[str, Any], str]] = {
        "profile": ("accounts.get_profile", {}, token),
        "contacts": ("accounts.list_contacts", {}, token),
        "contracts": ("accounts.list_contracts", {}, token),
        "devices": ("registration.list_devices", {"page_size": 200}, token),
        "contract devices": ("registration.list_devices", {}, world.contract),
        "uploads": ("registration.list_bulk_uploads", {}, token),
        "result": ("registration.bulk_result", {"upload_id": a.upload_id}, token),
        "orders": ("ordering.list_orders", {}, token),
        "order": ("ordering.get_order", {"order_number": a.order_number}, token),
        "tickets": ("ticketing.list_tickets", {}, token),
        "ticket": ("ticketing.get_ticket", {"ticket_number": a.ticket_number}, token),
        "usage": ("metering.usage", {"from": "2000-01-01", "to": "2100-12-31"}, token),
        "requests": ("registration.operator.list_requests", {"page_size": 200}, world.operator),
    }
    for name, device in a.devices.items():
        reads[f"device {name}"] = ("registration.get_device", {"device_id": device.device_id}, token)
        reads[f"history {name}"] = ("metering.history", {"device_id": device.device_id}, token)
        reads[f"orderable {name}"] = ("ordering.list_orderable", {"device_id": device.device_id}, token)
    answers = await asyncio.gather(*(portal.call(command, body, token=caller) for command, body, caller in
                                     reads.values()))
    view: dict[str, Any] = dict(zip(reads, answers, strict=True))
    view["requests"] = [request for request in view["requests"]["items"] if request["requested_by"] == a.user_id]
    return view


# Collections that change whenever anyone sends a command, refused or not: idempotency claims, counters of failed
# sign-ins and claims (refusals that count), sessions and revocations of the intruders' own sign-ins, the bulk queue's
# turns and mail-request counters. Nothing in them is a customer's data.
BOOKKEEPING = {"message_claims", "login_failures", "claim_attempts", "sessions", "revocations", "mail_requests",
               "upload_turns"}
# Stored files (proofs of purchase, uploads): a plain find on a bucket's files never answers on nx-27017; A's files are
# compared through A's reads (the upload's result file).
GRIDFS = ("files", "chunks")
# Fields the outbox relay changes after the write that filled them.
RELAY_FIELDS = ("outbox", "outbox_pending")


async def database_state(stack: dict[str, ServiceInstance]) -> dict[str, str]:
    """Every document of every service's database but bookkeeping, as canonical JSON by `service/collection/_id`."""
    state: dict[str, str] = {}
    for name, instance in stack.items():
        for collection in sorted(await instance.db.list_collection_names()):
            if collection in BOOKKEEPING or collection.endswith(GRIDFS):
                continue
            async for document in instance.db[collection].find({}):
                for key in RELAY_FIELDS:
                    document.pop(key, None)
                state[f"{name}/{collection}/{document['_id']}"] = json_util.dumps(document, sort_keys=True)
    return state


async def settled_state(stack: dict[str, ServiceInstance], timeout: float = 20.0) -> dict[str, str]:
    """The databases once two readings a moment apart agree: the events of earlier commands are all handled."""
    previous = await database_state(stack)
    found: list[dict[str, str]] = []

    async def still() -> bool:
        nonlocal previous
        current = await database_state(stack)
        found[:] = [current]
        same, previous = current == previous, current
        return same
    await eventually(still, timeout=timeout, step=0.3)
    return found[0]


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {key: (before.get(key), after.get(key)) for key in sorted(before.keys() | after.keys())
            if before.get(key) != after.get(key)}


def trespassing(found: dict[str, tuple[str | None, str | None]], world: World, writers: set[str]) -> dict[str, Any]:
    """The changes that name something of A's that the writer may not touch: a document naming one writer is judged
    by what is hidden from that writer, any other by what is hidden from any of them."""
    hidden_from_any = sorted({marker for writer in writers for marker in world.hidden_from(writer)})
    bad = {}
    for key, change in found.items():
        text = "\n".join(version or "" for version in change)
        owners = [writer for writer in writers if world.identities[writer] in text]
        hidden = world.hidden_from(owners[0]) if len(owners) == 1 else hidden_from_any
        if any(marker and marker in text for marker in hidden):
            bad[key] = change
    return bad


def mentions(data: Any, markers: list[str]) -> list[str]:
    text = json.dumps(data, ensure_ascii=False)
    return [marker for marker in markers if marker and marker in text]


def today() -> date:
    return datetime.now(UTC).date()


def yesterday() -> str:
    return (today() - timedelta(days=1)).isoformat()
