"""The isolation matrix (ARCHITECTURE "Security"): every command of a signed-in user, sent by another customer's user, a
dealer and A's contract sign-in against customer A's resources, is `not_found` (or the rule's own code) and changes
nothing; what they read names nothing of A; every operator command refuses customers, dealers and contract sign-ins
with `forbidden`. The list of commands comes from the services themselves: a command added without a row fails
`test_every_command_has_a_row_or_an_exemption`.

"Changes nothing" is checked twice per row: A's own reads (user and contract sign-in) are what they were when the world
was built, and no document in any service's database changed (bookkeeping aside), or, where an intruder did something
for itself, none that names A.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from contracts.client import PortalClient, PortalError
from services.runtime.commands import Access, CommandSpec, Replay
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import device_registration, random_email
from tests.isolation.conftest import SERVICES
from tests.isolation.examples import NEW_PASSWORD, example_bodies
from tests.isolation.world import (
    HANSAALLEE,
    PASSWORD,
    TONER_K,
    Device,
    World,
    build_world,
    changes,
    database_state,
    mentions,
    reading_of,
    settled_state,
    today,
    trespassing,
    view_of_a,
)
from tests.registration.test_bulk import finished, result_rows, row, upload_body, workbook

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMMANDS: dict[str, CommandSpec] = {spec.name: spec for service in SERVICES for spec in service.commands}
CUSTOMER_COMMANDS = sorted(name for name, spec in COMMANDS.items() if spec.access is Access.AUTH)
OPERATOR_COMMANDS = sorted(name for name, spec in COMMANDS.items() if spec.access is Access.OPERATOR)
# Another customer's user, a dealer of no customer, and A's sign-in with A's second contract (outside its contract).
INTRUDERS = ("b", "dealer", "contract")

# Open to anyone: no signed-in caller, so no customer to cross. Each says why the matrix has no row for it.
EXEMPT = {
    "accounts.health": "answers the same to everyone, names no one",
    "registration.health": "answers the same to everyone, names no one",
    "metering.health": "answers the same to everyone, names no one",
    "ordering.health": "answers the same to everyone, names no one",
    "ticketing.health": "answers the same to everyone, names no one",
    "notifier.health": "answers the same to everyone, names no one",
    "accounts.register": "creates a new user; joining a customer needs its serial (tests/accounts/test_sign_up.py)",
    "accounts.confirm_email": "acts on whoever holds the single-use link, no caller",
    "accounts.resend_confirmation": "always ok, whether the address exists or not (no enumeration)",
    "accounts.login": "the password is the credential; lockout is tests/accounts/test_sign_in.py",
    "accounts.contract_login": "the contract number is the credential; counted like sign-ins",
    "accounts.request_password_reset": "always ok; the link goes to the account's own address",
    "accounts.reset_password": "acts on whoever holds the single-use link, no caller",
    "accounts.recover_username": "always ok; mails only the account's own address",
    "registration.serial_hint": "the public product catalogue",
    "registration.bulk_template": "the same empty template for everyone",
    "metering.submit_by_link": "the link's devices only (tests/metering/test_reminders.py, test_edges.py); no caller",
    "metering.link_devices": "the link's devices only, as submit_by_link (tests/metering/test_reminders.py); no caller",
    "notifier.unsubscribe": "acts on whoever holds the reminder's link, for that reminder's device only",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(stack: dict[str, ServiceInstance], portal: PortalClient, settings: Settings, amqp_url: str) -> World:
    return await build_world(portal, settings, stack, amqp_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def a_as_built(world: World, portal: PortalClient, stack: dict[str, ServiceInstance]) -> dict[str, Any]:
    """A's view once the world's events are all handled."""
    await settled_state(stack)
    return await view_of_a(portal, world)


class Trial:
    """One row being run: the intruders' commands and their replies."""

    def __init__(self, portal: PortalClient, world: World) -> None:
        self.portal, self.world = portal, world
        self.writers: set[str] = set()  # callers who changed something of their own

    async def send(self, caller: str, command: str, body: dict[str, Any], token: str | None = None
                   ) -> tuple[str, dict[str, Any]]:
        try:
            return "ok", await self.portal.call(command, body, token=token or self.world.token(caller))
        except PortalError as error:
            return error.code, {"fields": error.fields, "message": error.message}

    async def refused(self, caller: str, command: str, body: dict[str, Any], code: str = "not_found") -> None:
        answer, data = await self.send(caller, command, body)
        assert answer == code, f"{caller} sent {command} {body}: {answer} {data}"
        self.hides(caller, command, body, data)

    async def reads(self, caller: str, command: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """An answer that names nothing of A the caller may not see."""
        answer, data = await self.send(caller, command, body or {})
        assert answer == "ok", f"{caller} sent {command} {body}: {answer} {data}"
        self.hides(caller, command, body, data)
        return data

    async def acts(self, caller: str, command: str, body: dict[str, Any], token: str | None = None
                   ) -> dict[str, Any]:
        """A command the caller may send for itself: ok, its answer names nothing of A, it changes nothing of A."""
        self.writers.add(caller)
        answer, data = await self.send(caller, command, body, token)
        assert answer == "ok", f"{caller} sent {command} {body}: {answer} {data}"
        self.hides(caller, command, body, data)
        return data

    def hides(self, caller: str, command: str, body: dict[str, Any] | None, data: dict[str, Any]) -> None:
        """The answer names nothing of A hidden from the caller, except what the caller sent itself (echoed)."""
        hidden = [marker for marker in self.world.hidden_from(caller) if not mentions(body, [marker])]
        assert mentions(data, hidden) == [], f"{caller}'s {command} names A: {data}"

    async def fresh_session(self, caller: str) -> str:
        """Another sign-in of the caller, for commands that end it."""
        world = self.world
        if caller == "contract":
            body = {"customer_number": world.a.number, "contract_number": world.a.contracts[1]}
            return str((await self.portal.call("accounts.contract_login", body))["access_token"])
        login = world.b.email if caller == "b" else world.dealer_login
        return str((await self.portal.call("accounts.login", {"login": login, "password": PASSWORD}))["access_token"])


Row = Callable[[Trial, World], Awaitable[None]]
ROWS: dict[str, Row] = {}


def row_for(command: str) -> Callable[[Row], Row]:
    def register(function: Row) -> Row:
        assert command not in ROWS, f"two rows for {command}"
        ROWS[command] = function
        return function
    return register


def outside(world: World) -> list[Device]:
    """A's devices outside A's second contract: every intruder's targets (A's contract sign-in sees only a2)."""
    return [world.a.devices["a1"], world.a.devices["a3"]]


# --- accounts -------------------------------------------------------------------------------------------------------

@row_for("accounts.logout")
async def logout_ends_only_the_callers_own_session(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.acts(caller, "accounts.logout", {}, token=await trial.fresh_session(caller))


@row_for("accounts.change_password")
async def change_password_needs_the_callers_own_password(trial: Trial, world: World) -> None:
    # A's password is no one else's current password; a contract sign-in has no password to change.
    body = {"current_password": PASSWORD.upper(), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    for caller in ("b", "dealer"):
        await trial.refused(caller, "accounts.change_password", body, "invalid_credentials")
    await trial.refused("contract", "accounts.change_password", body)


@row_for("accounts.get_profile")
async def a_profile_is_the_callers_own(trial: Trial, world: World) -> None:
    for caller in ("b", "dealer"):
        assert (await trial.reads(caller, "accounts.get_profile"))["email"] != world.a.email
    await trial.refused("contract", "accounts.get_profile", {})


@row_for("accounts.update_profile")
async def update_profile_changes_the_callers_own(trial: Trial, world: World) -> None:
    body = example_bodies(world)["accounts.update_profile"]
    for caller in ("b", "dealer"):
        await trial.acts(caller, "accounts.update_profile", body)
    await trial.refused("contract", "accounts.update_profile", body)


@row_for("accounts.accept_terms")
async def accepting_terms_is_for_the_caller(trial: Trial, world: World) -> None:
    for caller in ("b", "dealer"):
        await trial.acts(caller, "accounts.accept_terms", {"terms_version": "1", "privacy_version": "1"})
    await trial.refused("contract", "accounts.accept_terms", {"terms_version": "1", "privacy_version": "1"})


@row_for("accounts.list_contacts")
async def contacts_are_the_callers_customers(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.reads(caller, "accounts.list_contacts")


@row_for("accounts.add_contact")
async def a_new_contact_is_the_callers_customers(trial: Trial, world: World) -> None:
    # The contract sign-in's contact is the contract's: A's users do not get it (A's view is compared afterwards).
    for caller in INTRUDERS:
        await trial.acts(caller, "accounts.add_contact", {"name": "Pforte", "email": random_email()})


@row_for("accounts.list_contracts")
async def contracts_are_the_callers_customers(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.reads(caller, "accounts.list_contracts")
    assert [item["contract_number"] for item in (await trial.reads("contract", "accounts.list_contracts"))[
        "items"]] == [world.a.contracts[1]]


# --- registration ---------------------------------------------------------------------------------------------------

@row_for("registration.lookup_serial")
async def a_serial_tells_its_model_only(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.reads(caller, "registration.lookup_serial", {"serial_number": device.serial_number})


@row_for("registration.list_models")
async def the_model_list_is_the_same_catalogue_for_everyone(trial: Trial, world: World) -> None:
    lists = [await trial.reads(caller, "registration.list_models", {"text": "C"}) for caller in INTRUDERS]
    assert lists[0]["total"] > 0 and all(listed == lists[0] for listed in lists)


@row_for("registration.register_device")
async def a_registered_serial_cannot_be_registered_again(trial: Trial, world: World) -> None:
    for caller in ("b", "dealer"):
        for device in outside(world):
            await trial.refused(caller, "registration.register_device",
                                device_registration(serial_number=device.serial_number), "already_registered")
    # The contract sign-in never accepted the terms (it has no user); it gets no further.
    await trial.refused("contract", "registration.register_device",
                        device_registration(serial_number=world.a.devices["a1"].serial_number), "terms_not_accepted")


@row_for("registration.list_devices")
async def the_device_list_is_the_callers(trial: Trial, world: World) -> None:
    a1 = world.a.devices["a1"]
    for caller in INTRUDERS:
        for body in ({"page_size": 200}, {"text": "Flur"}, {"serial_number": a1.serial_number},
                     {"city": HANSAALLEE["city"]}, {"postal_code": HANSAALLEE["postal_code"]}):
            await trial.reads(caller, "registration.list_devices", body)


@row_for("registration.get_device")
async def another_customers_device_is_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "registration.get_device", {"device_id": device.device_id})
            await trial.refused(caller, "registration.get_device", {"serial_number": device.serial_number})


@row_for("registration.rename_device")
async def another_customers_device_cannot_be_renamed(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "registration.rename_device",
                                {"device_id": device.device_id, "friendly_name": "Gekapert"})


@row_for("registration.set_reminders")
async def another_customers_reminders_cannot_be_set(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "registration.set_reminders", {
                "device_id": device.device_id, "reminders": False, "reminder_email": "intruder@example.com"})


@row_for("registration.deregister_devices")
async def a_list_naming_another_customers_device_changes_nothing(trial: Trial, world: World) -> None:
    # With one of the caller's own devices in the list: refused as a whole, the caller's device stays too.
    own = {"b": [world.b.devices["b1"].device_id], "dealer": [], "contract": [world.a.devices["a2"].device_id]}
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "registration.deregister_devices",
                                {"device_ids": [*own[caller], device.device_id]})


@row_for("registration.bulk_upload")
async def a_file_naming_another_customers_serials_registers_none_of_them(trial: Trial, world: World) -> None:
    content = workbook([row(device.serial_number) for device in outside(world)])
    for caller in ("b", "dealer"):
        upload_id = (await trial.acts(caller, "registration.bulk_upload", upload_body(content)))["upload_id"]
        assert (await finished(trial.portal, world.token(caller), upload_id))["processed"] == 0
        rows = await result_rows(trial.portal, world.token(caller), upload_id)
        assert [str(values[-1]).split(":")[0] for values in rows[1:]] == ["already_registered"] * 2
    await trial.refused("contract", "registration.bulk_upload", upload_body(content), "terms_not_accepted")


@row_for("registration.list_bulk_uploads")
async def uploads_are_the_callers_own(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.reads(caller, "registration.list_bulk_uploads", {"page_size": 200})


@row_for("registration.bulk_result")
async def another_users_result_file_is_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.refused(caller, "registration.bulk_result", {"upload_id": world.a.upload_id})


@row_for("registration.claim_device")
async def a_claim_needs_the_postcode_and_a_contract_sign_in_claims_nothing_outside_its_contract(
        trial: Trial, world: World) -> None:
    for caller in ("b", "dealer"):
        for device in outside(world):
            await trial.refused(caller, "registration.claim_device",
                                {"serial_number": device.serial_number, "postal_code": "99999"},
                                "serial_or_postcode_mismatch")
    await trial.refused("contract", "registration.claim_device", {
        "serial_number": world.a.devices["a1"].serial_number, "postal_code": HANSAALLEE["postal_code"]},
        "serial_or_postcode_mismatch")


@row_for("registration.claim_same_location")
async def devices_at_an_address_the_caller_never_claimed_are_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "registration.claim_same_location", {"device_ids": [device.device_id]})
            await trial.refused(caller, "registration.claim_same_location", {
                "devices": [{"device_id": device.device_id, "friendly_name": "Meins", "reminders": True}]})


@row_for("registration.request_address_change")
async def another_customers_device_cannot_be_moved(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "registration.request_address_change", {
                "device_id": device.device_id, "address": {"street": "Irgendwo 1", "postal_code": "12345",
                                                           "city": "Berlin"}, "reason": "Umzug"})


# --- metering -------------------------------------------------------------------------------------------------------

@row_for("metering.preview_reading")
async def another_customers_reading_cannot_be_previewed(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "metering.preview_reading", reading_of(device, 5000))


@row_for("metering.submit_reading")
async def another_customers_reading_cannot_be_submitted(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "metering.submit_reading", reading_of(device, 5000))


@row_for("metering.submit_bulk")
async def bulk_rows_for_another_customers_serials_are_each_not_found(trial: Trial, world: World) -> None:
    rows = [{"serial_number": device.serial_number, "counter": counter, "value": 5000,
             "reading_date": today().isoformat()} for device in outside(world) for counter in ("mono", "color")]
    for caller in INTRUDERS:
        outcome = await trial.reads(caller, "metering.submit_bulk", {"readings": rows})
        assert outcome["accepted"] == 0
        assert [rejected["code"] for rejected in outcome["rejected"]] == ["not_found"] * len(rows)


@row_for("metering.history")
async def another_customers_history_is_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "metering.history", {"device_id": device.device_id})


@row_for("metering.usage")
async def usage_covers_the_callers_fleet_only(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for fmt in ("json", "xlsx"):
            await trial.reads(caller, "metering.usage", {"from": "2000-01-01", "to": "2100-12-31", "format": fmt})


@row_for("metering.list_due")
async def due_devices_are_the_callers(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.reads(caller, "metering.list_due", {"page_size": 200})


# --- ordering -------------------------------------------------------------------------------------------------------

@row_for("ordering.list_orderable")
async def another_customers_consumables_are_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "ordering.list_orderable", {"device_id": device.device_id})


@row_for("ordering.place_order")
async def an_order_naming_another_customers_device_is_not_found(trial: Trial, world: World) -> None:
    own = {"b": [world.b.devices["b1"]], "dealer": [], "contract": [world.a.devices["a2"]]}
    contact = {"name": "Intruder", "email": "intruder@example.com"}
    for caller in INTRUDERS:
        for device in outside(world):
            lines = [{"device_id": line.device_id, "article_number": TONER_K, "quantity": 1}
                     for line in [*own[caller], device]]
            await trial.refused(caller, "ordering.place_order", {"lines": lines, "contact": contact,
                                                                 "confirm_duplicate": True})


@row_for("ordering.get_order")
async def another_customers_order_is_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.refused(caller, "ordering.get_order", {"order_number": world.a.order_number})


@row_for("ordering.list_orders")
async def orders_are_the_callers(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for body in ({}, {"device_id": world.a.devices["a1"].device_id}, {"order_number": world.a.order_number},
                     {"status": "placed", "page_size": 200}):
            await trial.reads(caller, "ordering.list_orders", body)


# --- ticketing ------------------------------------------------------------------------------------------------------

@row_for("ticketing.open_ticket")
async def a_ticket_for_another_customers_device_is_not_found_even_while_one_is_open(
        trial: Trial, world: World) -> None:
    # a1 has an open ticket: `open_ticket_exists` would tell the device exists.
    contact = {"name": "Intruder", "email": "intruder@example.com"}
    for caller in INTRUDERS:
        for device in outside(world):
            await trial.refused(caller, "ticketing.open_ticket", {"device_id": device.device_id, "contact": contact,
                                                                  "description": "Geht nicht"})


@row_for("ticketing.add_note")
async def another_customers_ticket_takes_no_note(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.refused(caller, "ticketing.add_note", {"ticket_number": world.a.ticket_number, "text": "Hallo"})


@row_for("ticketing.cancel_ticket")
async def another_customers_ticket_cannot_be_cancelled(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.refused(caller, "ticketing.cancel_ticket", {"ticket_number": world.a.ticket_number,
                                                                "reason": "Weg damit"})


@row_for("ticketing.get_ticket")
async def another_customers_ticket_is_not_found(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        await trial.refused(caller, "ticketing.get_ticket", {"ticket_number": world.a.ticket_number})


@row_for("ticketing.list_tickets")
async def tickets_are_the_callers(trial: Trial, world: World) -> None:
    for caller in INTRUDERS:
        for body in ({}, {"device_id": world.a.devices["a1"].device_id}, {"ticket_number": world.a.ticket_number},
                     {"status": "to_be_scheduled", "page_size": 200}):
            await trial.reads(caller, "ticketing.list_tickets", body)


# --- the tests ------------------------------------------------------------------------------------------------------

async def test_every_command_has_a_row_or_an_exemption() -> None:
    anyone = {name for name, spec in COMMANDS.items() if spec.access is Access.ANYONE}
    assert sorted(ROWS) == CUSTOMER_COMMANDS, "each command of a signed-in user needs a row"
    assert sorted(EXEMPT) == sorted(anyone), "each command open to anyone needs a row or a reason"
    assert len(COMMANDS) == len(CUSTOMER_COMMANDS) + len(OPERATOR_COMMANDS) + len(anyone)


async def test_every_command_has_an_example_body(world: World) -> None:
    assert sorted(example_bodies(world)) == sorted(COMMANDS)


async def unchanged(trial: Trial, before: dict[str, str], stack: dict[str, ServiceInstance], portal: PortalClient,
                    world: World, a_as_built: dict[str, Any]) -> None:
    found = changes(before, await database_state(stack))
    if trial.writers:  # the intruders' own changes are theirs: none of them may name what is A's
        found = trespassing(found, world, trial.writers)
    assert found == {}
    assert await view_of_a(portal, world) == a_as_built


@pytest.mark.parametrize("command", CUSTOMER_COMMANDS)
async def test_a_customer_command_sent_by_others_against_a_changes_nothing_and_shows_nothing(
        command: str, world: World, a_as_built: dict[str, Any], stack: dict[str, ServiceInstance],
        portal: PortalClient) -> None:
    before = await settled_state(stack)
    trial = Trial(portal, world)
    await ROWS[command](trial, world)
    await unchanged(trial, before, stack, portal, world, a_as_built)


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
async def test_an_operator_command_refuses_customers_dealers_and_contract_sign_ins(
        command: str, world: World, a_as_built: dict[str, Any], stack: dict[str, ServiceInstance],
        portal: PortalClient) -> None:
    before = await settled_state(stack)
    trial = Trial(portal, world)
    for caller in ("a", *INTRUDERS):
        await trial.refused(caller, command, example_bodies(world)[command], "forbidden")
    await unchanged(trial, before, stack, portal, world, a_as_built)


async def test_a_message_id_of_a_is_no_key_to_as_replies(world: World, portal: PortalClient) -> None:
    """B re-sending a command under A's message id gets no reply of A's: reads are never stored, and a stored reply
    answers only its own sender with the same body (services/runtime/commands.py)."""
    a = world.a
    read = ("registration.get_device", {"device_id": a.devices["a1"].device_id})
    write = ("ticketing.add_note", {"ticket_number": a.ticket_number, "text": "Bitte vormittags"})
    assert COMMANDS[read[0]].replay is Replay.RERUN and COMMANDS[write[0]].replay is Replay.STORED
    for (command, body), code in ((read, "not_found"), (write, "conflict")):
        message_id = f"{command}-{a.user_id}"
        answer = await portal.call(command, body, token=a.token, message_id=message_id)
        with pytest.raises(PortalError) as refused:
            await portal.call(command, body, token=world.b.token, message_id=message_id)
        assert refused.value.code == code
        assert mentions({"fields": refused.value.fields, "message": refused.value.message}, world.a_markers()) == []
        assert await portal.call(command, body, token=a.token, message_id=message_id) == answer
