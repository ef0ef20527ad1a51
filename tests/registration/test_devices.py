"""Registering single devices, the catalogue and the installed base (CATALOG §3, OKI handbook, OneRicoh)."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta

import pytest
from gridfs import AsyncGridFSBucket

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import PDF, PNG, device_registration, operator_token, proof, random_serial, token_for
from tests.registration.flows import customer
from tests.support import EventTap, outcome


@pytest.fixture
async def tap(amqp_url: str):  # type: ignore[no-untyped-def]
    async with EventTap(amqp_url, "registration.#") as events:
        yield events


async def test_a_device_is_registered_with_model_article_and_a_36_month_warranty_within_30_days(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        tap: EventTap) -> None:
    token = await customer(settings, registration, amqp_url)
    purchase = date.today() - timedelta(days=30)
    request = device_registration(purchase_date=purchase.isoformat(), friendly_name="Reception printer")
    reply = await portal.call("registration.register_device", request, token=token)
    assert (reply["model"], reply["article_number"]) == ("C332", "46403102")
    assert reply["warranty"] == {"start_date": purchase.isoformat(), "months": 36, "extended": True,
                                 "end_date": purchase.replace(year=purchase.year + 3).isoformat()}
    event = await tap.next("registration.device.registered")
    assert (event["serial_number"], event["customer_number"], event["counters"]) == (
        request["serial_number"], "C-1", ["mono", "color"])
    device = await portal.call("registration.get_device", {"device_id": reply["device_id"]}, token=token)
    assert device["friendly_name"] == "Reception printer" and device["warranty"]["months"] == 36


async def test_a_device_registered_after_30_days_gets_12_months(registration: ServiceInstance, portal: PortalClient,
                                                                settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    purchase = date.today() - timedelta(days=31)
    reply = await portal.call("registration.register_device",
                              device_registration(purchase_date=purchase.isoformat()), token=token)
    assert (reply["warranty"]["months"], reply["warranty"]["extended"]) == (12, False)


@pytest.mark.parametrize(("overrides", "code"), [
    ({"warranty_accepted": False}, "warranty_not_accepted"),
    ({"serial_number": "XX0000000"}, "unknown_serial"),
    ({"purchase_date": (date.today() + timedelta(days=1)).isoformat()}, "invalid_purchase_date"),
    ({"proof_of_purchase": proof(b"MZ\x90\x00 not a receipt", "receipt.pdf")}, "file_type_not_allowed"),
    ({"proof_of_purchase": proof(b"just text, named like a picture", "receipt.png", "image/png")},
     "file_type_not_allowed"),
    ({"proof_of_purchase": proof(PNG + b"\x00" * (5 * 1024 * 1024), "big.png", "image/png")}, "file_too_large"),
])
async def test_a_registration_breaking_a_rule_is_refused_and_stores_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        overrides: dict[str, object], code: str) -> None:
    token = await customer(settings, registration, amqp_url)
    assert await outcome(portal, "registration.register_device", device_registration(**overrides), token) == code
    assert await registration.db.devices.count_documents({}) == 0


async def test_registration_is_refused_until_terms_are_accepted(registration: ServiceInstance, portal: PortalClient,
                                                                 settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url, accept=False)
    assert await outcome(portal, "registration.register_device", device_registration(), token) == "terms_not_accepted"


async def test_a_serial_is_registered_once_whatever_its_case_or_spaces(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    serial = random_serial()
    await portal.call("registration.register_device", device_registration(serial_number=serial), token=token)
    again = device_registration(serial_number=f" {serial[:4].lower()} {serial[4:]}")
    assert await outcome(portal, "registration.register_device", again, token) == "already_registered"


@pytest.mark.parametrize(("content", "name"), [(PNG, "photo.png"), (PDF, "bill.pdf"),
                                               (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "scan.jpg"),
                                               (b"GIF89a\x01\x00\x01\x00", "scan.gif")])
async def test_proof_of_purchase_is_judged_by_its_content_and_kept(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        content: bytes, name: str) -> None:
    token = await customer(settings, registration, amqp_url)
    reply = await portal.call("registration.register_device",
                              device_registration(proof_of_purchase=proof(content, name, "application/octet-stream")),
                              token=token)
    stored = await registration.db.devices.find_one({"_id": reply["device_id"]})
    assert stored is not None
    from gridfs import AsyncGridFSBucket
    download = await AsyncGridFSBucket(registration.db, bucket_name="proofs").open_download_stream(
        stored["proof_of_purchase"]["file_id"])
    assert await download.read() == content


async def test_only_dealers_register_for_an_end_customer(registration: ServiceInstance, portal: PortalClient,
                                                         settings: Settings, amqp_url: str) -> None:
    end_customer = {"name": "Muster GmbH", "email": "it@muster.example"}
    customer_token = await customer(settings, registration, amqp_url)
    dealer_token = await customer(settings, registration, amqp_url, role=Role.DEALER, customer_number="D-1")
    assert await outcome(portal, "registration.register_device", device_registration(end_customer=end_customer),
                         customer_token) == "forbidden"
    reply = await portal.call("registration.register_device", device_registration(end_customer=end_customer),
                              token=dealer_token)
    stored = await registration.db.devices.find_one({"_id": reply["device_id"]})
    assert stored is not None and stored["end_customer"]["name"] == "Muster GmbH"


async def test_lookup_and_serial_hint_come_from_the_catalogue(registration: ServiceInstance, portal: PortalClient,
                                                              settings: Settings) -> None:
    token, _ = token_for(settings)
    assert await portal.call("registration.lookup_serial", {"serial_number": "ak5m 123456"}, token=token) == {
        "model": "ES5462 MFP", "article_number": "01332901"}
    assert await outcome(portal, "registration.lookup_serial", {"serial_number": "ZZ123"}, token) == "unknown_serial"
    hint = await portal.call("registration.serial_hint", {"model": "C332"})
    assert hint["hint"] == "On the label inside the front cover."


async def test_models_are_listed_by_name_to_signed_in_callers_only(registration: ServiceInstance,
                                                                    portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings)
    listed = await portal.call("registration.list_models", {}, token=token)
    assert [item["model"] for item in listed["items"]] == ["C332", "ES5431dn", "ES5462 MFP"]
    assert {item["model"]: item["has_serial_hint"] for item in listed["items"]}["C332"] is True
    # Part of the name in any case; the text is matched as typed, not as a pattern.
    assert [item["model"] for item in (await portal.call("registration.list_models", {"text": "es54"},
                                                         token=token))["items"]] == ["ES5431dn", "ES5462 MFP"]
    assert (await portal.call("registration.list_models", {"text": ".*"}, token=token))["total"] == 0
    second = await portal.call("registration.list_models", {"page": 2, "page_size": 2}, token=token)
    assert ([item["model"] for item in second["items"]], second["total"]) == (["ES5462 MFP"], 3)
    assert await outcome(portal, "registration.list_models", {}, None) == "unauthenticated"
    assert await outcome(portal, "registration.list_models", {"page_size": 201}, token) == "validation_failed"


async def test_a_bad_serial_pattern_is_refused_naming_the_model(registration: ServiceInstance,
                                                                portal: PortalClient, settings: Settings) -> None:
    operator = operator_token(settings)
    reply = await portal.send("registration.operator.upsert_models", json.dumps({"models": [
        {"model": "X", "article_number": "1", "serial_pattern": "([", "counters": ["mono"]}]}).encode(),
        token=operator)
    assert reply["error"]["code"] == "validation_failed"
    assert list(reply["error"]["fields"]) == ["models.0.serial_pattern"]


async def test_the_installed_base_import_is_an_upsert_that_judges_each_device(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, tap: EventTap) -> None:
    operator = operator_token(settings)
    serial = random_serial("AK5A")
    devices = [
        {"serial_number": serial, "model": "ES5431dn", "customer_number": "C-1", "contract_number": "K-1",
         "location": {"name": "HQ", "street": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin"},
         "counters": [{"name": "mono", "value": 1200, "date": "2026-10-01"}], "e_maintenance": True},
        {"serial_number": random_serial(), "model": "Unknown 9000", "customer_number": "C-1"},
    ]
    first = await portal.call("registration.operator.import_installed_base", {"devices": devices}, token=operator)
    assert first == {"imported": 1, "rejected": [{"index": 1, "code": "unknown_model"}]}
    moved = json.loads(json.dumps(devices[0]))
    moved["location"]["city"] = "Potsdam"
    await portal.call("registration.operator.import_installed_base", {"devices": [moved]}, token=operator)
    assert await registration.db.devices.count_documents({"serial_number": serial}) == 1
    first_copy = await tap.next("registration.device.provisioned", lambda body: body["version"] == 1)
    second_copy = await tap.next("registration.device.provisioned", lambda body: body["version"] == 2)
    events = [first_copy, second_copy]
    assert events[1]["location"]["city"] == "Potsdam" and events[1]["e_maintenance"] is True
    assert events[0]["device_id"] == events[1]["device_id"]


async def test_reminders_may_be_turned_on_for_an_e_maintenance_device_and_the_event_says_both(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, tap: EventTap) -> None:
    """Metering never reminds for an e-maintenance device (it reports itself); registration still takes the
    customer's wish, as issue 10 asks."""
    operator = operator_token(settings)
    serial = random_serial("AK5A")
    await portal.call("registration.operator.import_installed_base", {"devices": [
        {"serial_number": serial, "model": "ES5431dn", "customer_number": "C-EM", "e_maintenance": True}]},
        token=operator)
    provisioned = await tap.next("registration.device.provisioned", lambda body: body["serial_number"] == serial)
    token, _ = token_for(settings, customer_number="C-EM")
    assert await outcome(portal, "registration.set_reminders", {
        "device_id": provisioned["device_id"], "reminders": True, "reminder_email": "lager@example.com"},
        token) == "ok"
    updated = await tap.next("registration.device.updated", lambda body: body["device_id"] == provisioned["device_id"])
    assert (updated["reminders"], updated["e_maintenance"], updated["reminder_email"]) == (True, True,
                                                                                          "lager@example.com")


async def test_catalogue_commands_are_for_operators(registration: ServiceInstance, portal: PortalClient,
                                                    settings: Settings) -> None:
    token, _ = token_for(settings)
    assert await outcome(portal, "registration.operator.upsert_models", {"models": []}, token) == "forbidden"
    assert await outcome(portal, "registration.operator.import_installed_base",
                         {"devices": [{"serial_number": "AK5A000001", "model": "ES5431dn", "customer_number": "C"}]},
                         token) == "forbidden"


async def test_registrations_of_one_serial_at_once_keep_one_proof_of_purchase_and_no_orphan_file(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    request = device_registration()
    outcomes = await asyncio.gather(*(outcome(portal, "registration.register_device", request, token)
                                      for _ in range(6)))
    assert sorted(outcomes) == ["already_registered"] * 5 + ["ok"]
    files = [stored async for stored in AsyncGridFSBucket(registration.db, bucket_name="proofs").find({})]
    device = await registration.db.devices.find_one({"serial_number": request["serial_number"]})
    assert device is not None
    assert [stored._id for stored in files] == [device["proof_of_purchase"]["file_id"]]
