"""Claiming installed-base devices, claims at the same location and address changes (CATALOG §3, OneRicoh FAQ)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from contracts.client import PortalClient
from contracts.registration import Location
from contracts.ticketing import TicketContact, TicketDevice, TicketOpened
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import operator_token, publish_event, token_for
from tests.registration.flows import event_handled
from tests.support import EventTap, eventually, outcome

OFFICE = {"name": "Kontor", "street": "Karl Johans gate 1", "postal_code": "0154", "city": "Oslo"}
FLEET: list[dict[str, Any]] = [
    {"serial_number": "AK5A100001", "model": "ES5431dn", "customer_number": "C-7", "contract_number": "K-7",
     "location": {**OFFICE, "building_location": "Resepsjon"}},
    {"serial_number": "AK5M100002", "model": "ES5462 MFP", "customer_number": "C-7", "contract_number": "K-7",
     "location": {**OFFICE, "street": "karl  johans GATE 1", "city": "OSLO", "postal_code": "01 54"}},
    {"serial_number": "AK6C100003", "model": "C332", "customer_number": "C-8", "contract_number": "K-8",
     "location": OFFICE},
    # the same postcode, another street; and another town
    {"serial_number": "AK5A100004", "model": "ES5431dn", "customer_number": "C-7", "contract_number": "K-7",
     "location": {**OFFICE, "street": "Torggata 5"}},
    {"serial_number": "AK5A100005", "model": "ES5431dn", "customer_number": "C-7", "contract_number": "K-7",
     "location": {"name": "Lager", "street": "Bryggen 1", "postal_code": "5003", "city": "Bergen"}},
]
MISMATCH = "serial_or_postcode_mismatch"
NEW_ADDRESS = {"name": "Nytt kontor", "street": "Dronning Eufemias gate 16", "postal_code": "0191", "city": "Oslo"}


async def import_fleet(portal: PortalClient, settings: Settings) -> dict[str, str]:
    """The fleet imported; device ids by serial."""
    operator = operator_token(settings)
    await portal.call("registration.operator.import_installed_base", {"devices": FLEET}, token=operator)
    ids = {}
    for device in FLEET:
        stored = await portal.call("registration.get_device", {"serial_number": device["serial_number"]},
                                   token=token_for(settings, customer_number=device["customer_number"])[0])
        ids[device["serial_number"]] = stored["device_id"]
    return ids


async def visible_serials(portal: PortalClient, token: str) -> list[str]:
    page = await portal.call("registration.list_devices", {}, token=token)
    return [device["serial_number"] for device in page["items"]]


async def claimant_of_the_first_device(portal: PortalClient, settings: Settings) -> str:
    """A user of no customer yet who claimed AK5A100001 by serial and postcode; their token."""
    token = token_for(settings, customer_number=None)[0]
    await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                      token=token)
    return token


async def claim_and_request(portal: PortalClient, settings: Settings, token: str, ids: dict[str, str],
                            **settings_of_second: Any) -> str:
    await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                      token=token)
    reply = await portal.call("registration.claim_same_location", {"devices": [
        {"device_id": ids["AK5M100002"], **settings_of_second}]}, token=token)
    assert reply["status"] == "pending_approval"
    request_id: str = reply["request_id"]
    return request_id


async def test_a_device_claimed_with_its_postcode_in_any_spacing_or_case_joins_the_callers_view(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    token, claims = token_for(settings, customer_number=None)
    assert await visible_serials(portal, token) == []
    async with EventTap(amqp_url, "registration.device.claimed") as tap:
        reply = await portal.call("registration.claim_device", {"serial_number": "ak5a 100001",
                                                                "postal_code": " 01 54 "}, token=token)
        event = await tap.next("registration.device.claimed")
    assert reply["device_id"] == ids["AK5A100001"]
    assert (event["device_id"], event["claimed_by"], event["version"]) == (ids["AK5A100001"], claims.user_id, 2)
    assert await visible_serials(portal, token) == ["AK5A100001"]
    device = await portal.call("registration.get_device", {"device_id": ids["AK5A100001"]}, token=token)
    assert device["location"]["building_location"] == "Resepsjon"


async def test_a_wrong_postcode_and_an_unknown_serial_are_refused_alike(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    token = token_for(settings, customer_number=None)[0]
    wrong_postcode = await outcome(portal, "registration.claim_device",
                                   {"serial_number": "AK5A100001", "postal_code": "5003"}, token)
    unknown_serial = await outcome(portal, "registration.claim_device",
                                   {"serial_number": "AK5A999999", "postal_code": "0154"}, token)
    assert wrong_postcode == unknown_serial == "serial_or_postcode_mismatch"
    assert await visible_serials(portal, token) == []


async def test_the_claim_lists_the_other_devices_of_that_customer_at_that_address_and_none_elsewhere(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = token_for(settings, customer_number=None)[0]
    reply = await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                              token=token)
    # AK6C100003 stands at the same address but belongs to another customer (C-8): not offered.
    assert reply["status"] == "claimed"
    assert [(item["serial_number"], item["device_id"], item["model"]) for item in reply["same_location"]] == [
        ("AK5M100002", ids["AK5M100002"], "ES5462 MFP")]


async def test_a_same_location_claim_waits_for_approval_then_brings_the_devices_with_their_settings(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    token, claims = token_for(settings, customer_number=None)
    request_id = await claim_and_request(portal, settings, token, ids, friendly_name="2. etasje",
                                         reminder_email="meter@example.com", reminders=True)
    assert await visible_serials(portal, token) == ["AK5A100001"]
    pending = await portal.call("registration.operator.list_requests", {"kind": "same_location_claim"},
                                token=operator_token(settings))
    [listed] = [item for item in pending["items"] if item["request_id"] == request_id]
    assert (listed["requested_by"], listed["location"]["postal_code"]) == (claims.user_id, "0154")
    assert [(device["serial_number"], device["friendly_name"]) for device in listed["devices"]] == [
        ("AK5M100002", "2. etasje")]

    async with EventTap(amqp_url, "registration.#") as tap:
        decision = await portal.call("registration.operator.decide_request",
                                     {"request_id": request_id, "approve": True}, token=operator_token(settings))
        decided = await tap.next("registration.request.decided")
        updated = await tap.next("registration.device.updated")
        await tap.next("registration.device.claimed", lambda body: body["device_id"] == ids["AK5M100002"])
    assert decision == {"status": "approved"}
    assert (decided["approved"], decided["user_id"], decided["device_ids"]) == (
        True, claims.user_id, [ids["AK5M100002"]])
    # The claimant's settings are theirs: the customer's name and reminders stay, the claimant is one more recipient.
    assert (updated["friendly_name"], updated["reminders"], updated["reminder_email"]) == (None, True, None)
    assert updated["reminder_recipients"] == [
        {"customer_number": "C-7", "user_id": None, "email": None},
        {"customer_number": None, "user_id": claims.user_id, "email": "meter@example.com"}]
    assert await visible_serials(portal, token) == ["AK5A100001", "AK5M100002"]
    device = await portal.call("registration.get_device", {"device_id": ids["AK5M100002"]}, token=token)
    assert (device["friendly_name"], device["reminder_email"], device["reminders"]) == (
        "2. etasje", "meter@example.com", True)
    owner = await portal.call("registration.get_device", {"device_id": ids["AK5M100002"]},
                              token=token_for(settings, customer_number="C-7")[0])
    assert (owner["friendly_name"], owner["reminder_email"], owner["reminders"]) == (None, None, True)
    after = await portal.call("registration.operator.list_requests", {}, token=operator_token(settings))
    assert request_id not in [item["request_id"] for item in after["items"]]


async def test_a_rejected_claim_keeps_the_devices_hidden_and_tells_the_reason(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    token, claims = token_for(settings, customer_number=None)
    request_id = await claim_and_request(portal, settings, token, ids)
    async with EventTap(amqp_url, "registration.request.decided") as tap:
        decision = await portal.call("registration.operator.decide_request", {
            "request_id": request_id, "approve": False, "reason": "Not your machines"}, token=operator_token(settings))
        decided = await tap.next("registration.request.decided")
    assert decision == {"status": "rejected"}
    assert (decided["approved"], decided["reason"], decided["user_id"], decided["kind"]) == (
        False, "Not your machines", claims.user_id, "same_location_claim")
    assert await visible_serials(portal, token) == ["AK5A100001"]


async def test_only_devices_at_the_address_of_a_claimed_device_can_be_asked_for(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = token_for(settings, customer_number=None)[0]
    body = {"devices": [{"device_id": ids["AK5M100002"]}]}
    assert await outcome(portal, "registration.claim_same_location", body, token) == "not_found"  # nothing claimed
    await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                      token=token)
    for elsewhere in ("AK5A100004", "AK5A100005"):
        assert await outcome(portal, "registration.claim_same_location",
                             {"devices": [{"device_id": ids[elsewhere]}]}, token) == "not_found", elsewhere


async def test_an_approved_address_change_moves_every_device_of_that_customer_at_that_address_and_no_other(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    token = token_for(settings, customer_number="C-7")[0]
    reply = await portal.call("registration.request_address_change", {
        "device_id": ids["AK5A100001"], "address": NEW_ADDRESS, "reason": "We moved"}, token=token)
    assert reply["status"] == "pending_approval"
    pending = await portal.call("registration.operator.list_requests", {"kind": "address_change"},
                                token=operator_token(settings))
    [listed] = [item for item in pending["items"] if item["request_id"] == reply["request_id"]]
    assert (listed["reason"], listed["address"]["street"]) == ("We moved", NEW_ADDRESS["street"])
    # AK6C100003 stands at the same address but belongs to another customer (C-8): it stays.
    assert sorted(device["serial_number"] for device in listed["devices"]) == ["AK5A100001", "AK5M100002"]
    moved = {ids[serial] for serial in ("AK5A100001", "AK5M100002")}
    async with EventTap(amqp_url, "registration.#") as tap:
        await portal.call("registration.operator.decide_request", {"request_id": reply["request_id"],
                                                                   "approve": True}, token=operator_token(settings))
        decided = await tap.next("registration.request.decided")

        async def all_moved() -> bool:
            return {event["device_id"] for event in tap.named("registration.device.updated")} >= moved
        await eventually(all_moved)
        await asyncio.sleep(0.5)  # time for an update of a device that should not move
    updates = tap.named("registration.device.updated")
    assert {event["device_id"] for event in updates} == moved
    assert all(event["location"]["street"] == NEW_ADDRESS["street"] and event["version"] == 2 for event in updates)
    assert set(decided["device_ids"]) == moved
    for serial in FLEET:
        stored = await registration.db.devices.find_one({"serial_number": serial["serial_number"]})
        assert stored is not None
        expected = NEW_ADDRESS["street"] if stored["_id"] in moved else serial["location"]["street"]
        assert stored["location"]["street"] == expected, serial["serial_number"]
    assert (await registration.db.devices.find_one({"_id": ids["AK5A100001"]}) or {})["location"][
        "building_location"] == "Resepsjon"


async def test_a_request_is_decided_once(registration: ServiceInstance, portal: PortalClient,
                                         settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = token_for(settings, customer_number="C-7")[0]
    reply = await portal.call("registration.request_address_change", {
        "device_id": ids["AK5A100005"], "address": NEW_ADDRESS, "reason": "We moved"}, token=token)
    decide = {"request_id": reply["request_id"], "approve": False, "reason": "No"}
    assert await outcome(portal, "registration.operator.decide_request", decide, operator_token(settings)) == "ok"
    assert await outcome(portal, "registration.operator.decide_request", {**decide, "approve": True},
                         operator_token(settings)) == "conflict"
    stored = await registration.db.devices.find_one({"_id": ids["AK5A100005"]})
    assert stored is not None and stored["location"]["street"] == "Bryggen 1"


async def test_a_re_sent_decision_is_answered_the_same_and_applied_once(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = token_for(settings, customer_number="C-7")[0]
    reply = await portal.call("registration.request_address_change", {
        "device_id": ids["AK5A100005"], "address": NEW_ADDRESS, "reason": "We moved"}, token=token)
    message_id, operator = uuid.uuid4().hex, operator_token(settings)
    decide = {"request_id": reply["request_id"], "approve": True}
    first = await portal.call("registration.operator.decide_request", decide, token=operator, message_id=message_id)
    again = await portal.call("registration.operator.decide_request", decide, token=operator, message_id=message_id)
    assert first == again == {"status": "approved"}
    stored = await registration.db.devices.find_one({"_id": ids["AK5A100005"]})
    assert stored is not None and stored["version"] == 2


async def test_an_unknown_request_is_not_found(registration: ServiceInstance, portal: PortalClient,
                                               settings: Settings) -> None:
    assert await outcome(portal, "registration.operator.decide_request", {"request_id": "nope", "approve": True},
                         operator_token(settings)) == "not_found"


async def test_customers_may_neither_list_nor_decide_requests(registration: ServiceInstance, portal: PortalClient,
                                                              settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    owner = token_for(settings, customer_number="C-7")[0]
    reply = await portal.call("registration.request_address_change", {
        "device_id": ids["AK5A100005"], "address": NEW_ADDRESS, "reason": "We moved"}, token=owner)
    other = token_for(settings, customer_number="C-8")[0]
    for token in (owner, other):
        assert await outcome(portal, "registration.operator.list_requests", {}, token) == "forbidden"
        assert await outcome(portal, "registration.operator.decide_request", {
            "request_id": reply["request_id"], "approve": True}, token) == "forbidden"
    stored = await registration.db.requests.find_one({"_id": reply["request_id"]})
    assert stored is not None and stored["status"] == "pending_approval"


async def test_an_address_change_for_another_customers_device_is_not_found(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    stranger = token_for(settings, customer_number="C-8")[0]
    assert await outcome(portal, "registration.request_address_change", {
        "device_id": ids["AK5A100005"], "address": NEW_ADDRESS, "reason": "Mine now"}, stranger) == "not_found"
    assert await registration.db.requests.count_documents({}) == 0


async def test_users_of_no_customer_claim_at_once_without_excluding_each_other(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    first = token_for(settings, customer_number=None)[0]
    colleague = token_for(settings, customer_number=None)[0]
    bystander = token_for(settings, customer_number=None)[0]
    body = {"serial_number": "AK5A100001", "postal_code": "0154"}
    for token in (first, colleague):
        reply = await portal.call("registration.claim_device", body, token=token)
        assert (reply["device_id"], reply["status"]) == (ids["AK5A100001"], "claimed")
        assert await visible_serials(portal, token) == ["AK5A100001"]
    assert await visible_serials(portal, bystander) == []
    owner = token_for(settings, customer_number="C-7")[0]
    assert "AK5A100001" in await visible_serials(portal, owner)  # the ERP customer keeps its device


async def test_a_user_of_another_customer_waits_for_an_operator_and_is_offered_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    stranger, claims = token_for(settings, customer_number="C-9")
    body = {"serial_number": "AK5A100001", "postal_code": "0154"}
    reply = await portal.call("registration.claim_device", body, token=stranger)
    assert (reply["status"], reply["same_location"]) == ("pending_approval", [])
    again = await portal.call("registration.claim_device", body, token=stranger)
    assert again["request_id"] == reply["request_id"]  # one request, however often asked
    assert await visible_serials(portal, stranger) == []
    pending = await portal.call("registration.operator.list_requests", {"kind": "same_location_claim"},
                                token=operator_token(settings))
    [listed] = pending["items"]
    assert (listed["requested_by"], [device["device_id"] for device in listed["devices"]]) == (
        claims.user_id, [ids["AK5A100001"]])
    await portal.call("registration.operator.decide_request", {"request_id": reply["request_id"], "approve": True},
                      token=operator_token(settings))
    assert await visible_serials(portal, stranger) == ["AK5A100001"]


async def test_serials_offered_at_the_same_location_cannot_be_claimed_past_the_operator(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    token = token_for(settings, customer_number=None)[0]
    first = await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                              token=token)
    [offered] = first["same_location"]
    direct = await portal.call("registration.claim_device", {"serial_number": offered["serial_number"],
                                                             "postal_code": "0154"}, token=token)
    assert (direct["status"], direct["same_location"]) == ("pending_approval", [])
    assert await visible_serials(portal, token) == ["AK5A100001"]


async def test_a_contract_sign_in_claims_nothing_outside_its_contract(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    for customer_number, contract_number in (("C-7", "K-other"), ("C-8", "K-8")):
        token = token_for(settings, customer_number=customer_number, contract_number=contract_number)[0]
        assert await outcome(portal, "registration.claim_device", {"serial_number": "AK5A100001",
                                                                   "postal_code": "0154"}, token) == MISMATCH
        assert "AK5A100001" not in await visible_serials(portal, token)
    assert await registration.db.requests.count_documents({}) == 0


async def test_after_ten_failed_claims_every_claim_of_that_user_is_rate_limited_even_a_matching_one(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    token = token_for(settings, customer_number=None)[0]
    wrong = [outcome(portal, "registration.claim_device", {"serial_number": "AK5A100001",
                                                           "postal_code": f"{9000 + attempt}"}, token)
             for attempt in range(25)]
    outcomes = await asyncio.gather(*wrong)  # in parallel: the counter must not let them all through
    assert (outcomes.count(MISMATCH), outcomes.count("rate_limited")) == (10, 15)
    assert await outcome(portal, "registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                         token) == "rate_limited"
    assert await visible_serials(portal, token) == []
    other = token_for(settings, customer_number=None)[0]  # counted per user
    assert await outcome(portal, "registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                         other) == "ok"


async def test_claims_that_do_not_fail_do_not_count_towards_the_limit(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await import_fleet(portal, settings)
    token = token_for(settings, customer_number=None)[0]
    body = {"serial_number": "AK5A100001", "postal_code": "0154"}
    for _ in range(12):
        assert await outcome(portal, "registration.claim_device", body, token) == "ok"
    for _ in range(10):
        assert await outcome(portal, "registration.claim_device", {**body, "postal_code": "1"}, token) == MISMATCH
    assert await outcome(portal, "registration.claim_device", body, token) == "rate_limited"


async def test_a_claimants_name_reminders_and_hiding_change_only_their_own_view(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    device_id = ids["AK5A100001"]
    owner = token_for(settings, customer_number="C-7")[0]
    before = await portal.call("registration.get_device", {"device_id": device_id}, token=owner)
    claimant, claims = token_for(settings, customer_number=None)
    await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                      token=claimant)
    async with EventTap(amqp_url, "registration.device.#") as tap:
        await portal.call("registration.rename_device", {"device_id": device_id, "friendly_name": "Mine now"},
                          token=claimant)
        await portal.call("registration.set_reminders", {"device_id": device_id, "reminders": True,
                                                         "reminder_email": "me@example.com"}, token=claimant)
        redirected = await tap.next("registration.device.updated", lambda body: len(body["reminder_recipients"]) == 2)
        mine = await portal.call("registration.get_device", {"device_id": device_id}, token=claimant)
        assert (mine["friendly_name"], mine["reminders"], mine["reminder_email"]) == (
            "Mine now", True, "me@example.com")
        assert await portal.call("registration.deregister_devices", {"device_ids": [device_id]},
                                 token=claimant) == {"count": 1}
        hidden = await tap.next("registration.device.updated",
                                lambda body: body["version"] == redirected["version"] + 1)
    assert await visible_serials(portal, claimant) == []
    assert await portal.call("registration.get_device", {"device_id": device_id}, token=owner) == before
    for event in (redirected, hidden):
        assert (event["friendly_name"], event["reminders"], event["reminder_email"], event["visible"]) == (
            None, True, None, True)
    assert redirected["reminder_recipients"] == [
        {"customer_number": "C-7", "user_id": None, "email": None},
        {"customer_number": None, "user_id": claims.user_id, "email": "me@example.com"}]
    assert hidden["reminder_recipients"] == [{"customer_number": "C-7", "user_id": None, "email": None}]
    assert tap.named("registration.device.deregistered") == []
    # Claiming it again brings it back into the claimant's own view only.
    await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                      token=claimant)
    assert await visible_serials(portal, claimant) == ["AK5A100001"]


async def test_a_re_sent_same_location_claim_makes_one_request(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = await claimant_of_the_first_device(portal, settings)
    message_id = uuid.uuid4().hex
    body = {"devices": [{"device_id": ids["AK5M100002"]}]}
    first = await portal.call("registration.claim_same_location", body, token=token, message_id=message_id)
    again = await portal.call("registration.claim_same_location", body, token=token, message_id=message_id)
    assert first == again
    assert await registration.db.requests.count_documents({}) == 1


async def test_a_same_location_claim_naming_only_device_ids_as_the_catalogue_does_is_accepted_and_approved(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = await claimant_of_the_first_device(portal, settings)
    reply = await portal.call("registration.claim_same_location", {"device_ids": [ids["AK5M100002"]]}, token=token)
    assert reply["status"] == "pending_approval"
    await portal.call("registration.operator.decide_request", {"request_id": reply["request_id"], "approve": True},
                      token=operator_token(settings))
    assert await visible_serials(portal, token) == ["AK5A100001", "AK5M100002"]
    device = await portal.call("registration.get_device", {"device_id": ids["AK5M100002"]}, token=token)
    assert (device["friendly_name"], device["reminders"]) == (None, False)  # no settings asked for: reminders off


async def test_device_ids_and_devices_together_ask_once_per_device_with_the_settings_of_devices(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = await claimant_of_the_first_device(portal, settings)
    reply = await portal.call("registration.claim_same_location", {
        "device_ids": [ids["AK5M100002"], ids["AK5M100002"]],
        "devices": [{"device_id": ids["AK5M100002"], "friendly_name": "2. etasje"}]}, token=token)
    pending = await portal.call("registration.operator.list_requests", {}, token=operator_token(settings))
    [listed] = [item for item in pending["items"] if item["request_id"] == reply["request_id"]]
    assert [(device["serial_number"], device["friendly_name"]) for device in listed["devices"]] == [
        ("AK5M100002", "2. etasje")]


async def test_a_same_location_claim_names_the_device_id_it_refuses_and_needs_at_least_one(
        registration: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    ids = await import_fleet(portal, settings)
    token = await claimant_of_the_first_device(portal, settings)
    refused = await portal.send("registration.claim_same_location", json.dumps(
        {"device_ids": [ids["AK5M100002"], ids["AK5A100005"]]}).encode(), token=token)
    assert (refused["error"]["code"], refused["error"]["fields"]) == ("not_found", {"device_ids.1": "not_found"})
    empty = await portal.send("registration.claim_same_location", b"{}", token=token)
    assert (empty["error"]["code"], list(empty["error"]["fields"])) == ("validation_failed", ["device_ids"])
    assert await registration.db.requests.count_documents({}) == 0


async def test_a_claimant_outside_the_customer_is_named_in_the_devices_events_until_they_hide_it(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    device_id = ids["AK5A100001"]
    claimant, claims = token_for(settings, customer_number=None)
    async with EventTap(amqp_url, "registration.device.#") as tap:
        await portal.call("registration.claim_device", {"serial_number": "AK5A100001", "postal_code": "0154"},
                          token=claimant)
        claimed = await tap.next("registration.device.claimed")
        await portal.call("registration.deregister_devices", {"device_ids": [device_id]}, token=claimant)
        hidden = await tap.next("registration.device.updated")
    assert claimed["claimants"] == [claims.user_id]
    assert hidden["claimants"] == []
    assert claimed["registered_by"] is None  # from the installed base, registered by no one


async def test_claims_stored_as_true_count_and_a_hidden_flag_read_back_as_1_hides(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    device_id = ids["AK5A100001"]
    await registration.db.devices.update_one({"_id": device_id}, {"$set": {"claimants": {
        "u-before-settings": True, "u-hid-it": {"hidden": 1, "reminders": 1}, "u-sees-it": {"hidden": 0}}}})
    async with EventTap(amqp_url, "registration.device.updated") as tap:
        await portal.call("registration.rename_device", {"device_id": device_id, "friendly_name": "Resepsjon"},
                          token=token_for(settings, customer_number="C-7")[0])
        event = await tap.next("registration.device.updated")
    assert event["claimants"] == ["u-before-settings", "u-sees-it"]


def ticket_opened(device_id: str, *, permanent: bool, ticket_number: str = "1000001/1") -> dict[str, Any]:
    """ticketing's `ticket.opened` for a C-7 device with NEW_ADDRESS as its service address."""
    event = TicketOpened(
        ticket_number=ticket_number, device=TicketDevice(device_id=device_id, serial_number="AK5A100001",
                                                         model="ES5431dn"),
        customer_number="C-7", contact=TicketContact(name="Kari Nordmann", email="kari@example.com"),
        language="nb", service_address=Location(**NEW_ADDRESS), opened_by="user-kari",
        opened_at=datetime.now(UTC), category="malfunction", description="Papirstopp", address_permanent=permanent)
    return event.model_dump(mode="json")


async def test_a_permanent_service_address_of_a_ticket_waits_as_one_address_change_naming_the_ticket(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    temporary = await publish_event(amqp_url, TicketOpened.routing_key,
                                    ticket_opened(ids["AK5A100001"], permanent=False, ticket_number="1000001/1"))
    body = ticket_opened(ids["AK5A100001"], permanent=True, ticket_number="1000002/2")
    first = await publish_event(amqp_url, TicketOpened.routing_key, body)
    copy = await publish_event(amqp_url, TicketOpened.routing_key, body)  # delivered again, another message id
    for message_id in (temporary, first, copy):
        await event_handled(registration, message_id)
    pending = await portal.call("registration.operator.list_requests", {"kind": "address_change"},
                                token=operator_token(settings))
    [listed] = pending["items"]
    assert listed["ticket_number"] == "1000002/2" and listed["requested_by"] == "user-kari"
    assert listed["address"]["street"] == NEW_ADDRESS["street"]
    assert sorted(device["serial_number"] for device in listed["devices"]) == ["AK5A100001", "AK5M100002"]
    decided = await portal.call("registration.operator.decide_request",
                                {"request_id": listed["request_id"], "approve": True}, token=operator_token(settings))
    assert decided == {"status": "approved"}
    stored = await registration.db.devices.find_one({"_id": ids["AK5M100002"]})
    assert stored is not None and stored["location"]["street"] == NEW_ADDRESS["street"]


async def test_a_second_ticket_giving_the_same_permanent_address_files_no_second_request(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    ids = await import_fleet(portal, settings)
    for number in ("1000001/1", "1000002/2"):
        message_id = await publish_event(amqp_url, TicketOpened.routing_key,
                                         ticket_opened(ids["AK5A100001"], permanent=True, ticket_number=number))
        await event_handled(registration, message_id)
    pending = await portal.call("registration.operator.list_requests", {"kind": "address_change"},
                                token=operator_token(settings))
    assert [item["ticket_number"] for item in pending["items"]] == ["1000001/1"]


async def test_a_ticket_for_a_device_registration_does_not_know_files_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    message_id = await publish_event(amqp_url, TicketOpened.routing_key, ticket_opened("unknown", permanent=True))
    await event_handled(registration, message_id)
    assert await registration.db.requests.find_one({"kind": "address_change"}) is None
