"""Bulk registration from Excel files (CATALOG §3, the OKI handbook's "Registrierung mehrerer Geräte")."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts.base import FileObject
from contracts.client import PortalClient
from contracts.errors import message_for
from deploy.local.demo import OKI_MODELS
from services.registration import bulk, excel
from services.registration.app import service as registration_service
from services.registration.settings import RegistrationSettings, registration_settings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import device_registration, operator_token
from tests.registration.flows import customer
from tests.registration.test_excel import SHEET, repacked, repeated_cells
from tests.support import EventTap, eventually, outcome, running

MB = 1024 * 1024
BOUGHT = date.today() - timedelta(days=10)


def row(serial: object, purchase: object = BOUGHT, name: object = None, **address: object) -> list[object]:
    """A row in the template's column order: serial, date, name, building, contact, street, code, city, country."""
    return [serial, purchase, name, None, None, address.get("street"), address.get("postal_code"),
            address.get("city"), address.get("country")]


def workbook(rows: Sequence[Sequence[object]], language: str = "en") -> bytes:
    """The template of `language`, filled in with `rows` as a user would."""
    book = openpyxl.load_workbook(BytesIO(excel.bulk_template(language)))
    sheet = book[excel.DATA_SHEET[excel.language_of(language)]]
    for values in rows:
        sheet.append(list(values))
    buffer = BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def valid_rows(count: int, first: int = 0) -> list[list[object]]:
    return [row(f"AK6C{index:06d}", name=f"Printer {index}") for index in range(first, first + count)]


def upload_body(content: bytes, *, filename: str = "devices.xlsx", warranty_accepted: bool | None = True
                ) -> dict[str, Any]:
    """The upload command; `warranty_accepted=None` leaves the flag out, as a client of CATALOG §3 sends it."""
    body: dict[str, Any] = {"file": FileObject.from_bytes(filename, bulk.XLSX, content).model_dump()}
    if warranty_accepted is not None:
        body["warranty_accepted"] = warranty_accepted
    return body


def accepting(serial: object, answer: object) -> list[object]:
    """A row with the warranty column (the template's last, after the dealers' two) filled in with `answer`."""
    return [*row(serial), None, None, answer]


async def upload(portal: PortalClient, token: str, content: bytes, **options: Any) -> str:
    reply = await portal.call("registration.bulk_upload", upload_body(content, **options), token=token)
    assert reply["status"] == "queued"
    return str(reply["upload_id"])


async def uploads(portal: PortalClient, token: str) -> list[dict[str, Any]]:
    reply = await portal.call("registration.list_bulk_uploads", {}, token=token)
    return list(reply["items"])


async def finished(portal: PortalClient, token: str, upload_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The upload's line in the list once it is processed or failed."""
    found: list[dict[str, Any]] = []

    async def done() -> bool:
        found[:] = [item for item in await uploads(portal, token)
                    if item["upload_id"] == upload_id and item["status"] in ("processed", "failed")]
        return bool(found)
    await eventually(done, timeout=timeout, step=0.1)
    return found[0]


async def result_rows(portal: PortalClient, token: str, upload_id: str) -> list[tuple[Any, ...]]:
    reply = await portal.call("registration.bulk_result", {"upload_id": upload_id}, token=token)
    assert reply["filename"].endswith("_Results.xlsx")
    book = openpyxl.load_workbook(BytesIO(base64.b64decode(reply["content_base64"])), read_only=True)
    rows = [tuple(values) for values in book.worksheets[0].iter_rows(values_only=True)]
    book.close()
    return rows


def judged(rows: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    """(result, code) of every data row of a result file."""
    return [(values[-2], str(values[-1]).split(":")[0]) for values in rows[1:]]


@pytest.mark.parametrize("language", ["de", "en", "nb"])
async def test_the_template_comes_in_every_language(registration: ServiceInstance, portal: PortalClient,
                                                    language: str) -> None:
    lang = excel.language_of(language)
    reply = await portal.call("registration.bulk_template", {"language": language})
    assert reply["content_type"] == bulk.XLSX and reply["filename"].endswith(f"-{language}.xlsx")
    book = openpyxl.load_workbook(BytesIO(base64.b64decode(reply["content_base64"])))
    assert book.sheetnames == [excel.DATA_SHEET[lang], excel.INSTRUCTIONS_SHEET[lang]]
    header = [cell.value for cell in book.worksheets[0][1]]
    assert header[0] == excel.COLUMNS[0].labels[lang] + " *"


async def test_25_valid_rows_register_25_devices_and_the_result_file_says_registered_for_each(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    upload_id = await upload(portal, token, workbook(valid_rows(25)), filename="Device Bulk Upload.xlsx")
    line = await finished(portal, token, upload_id)
    assert (line["status"], line["total"], line["processed"], line["unprocessed"], line["reason"]) == (
        "processed", 25, 25, 0, None)
    assert line["filename"] == "Device Bulk Upload.xlsx" and line["processed_at"] and line["uploaded_at"]
    assert await registration.db.devices.count_documents({}) == 25
    rows = await result_rows(portal, token, upload_id)
    assert rows[0][-2:] == ("result", "message")
    assert judged(rows) == [("registered", "registered")] * 25
    devices = await portal.call("registration.list_devices", {"page_size": 50}, token=token)
    assert devices["total"] == 25 and {device["model"] for device in devices["items"]} == {"C332"}


async def test_26_rows_fail_the_whole_file_with_too_many_rows_and_register_nothing(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    upload_id = await upload(portal, token, workbook(valid_rows(26)))
    line = await finished(portal, token, upload_id)
    assert (line["status"], line["reason"], line["total"]) == ("failed", "too_many_rows", 0)
    assert await registration.db.devices.count_documents({}) == 0
    assert await outcome(portal, "registration.bulk_result", {"upload_id": upload_id}, token) == "not_found"


async def test_a_mixed_file_judges_each_row_on_its_own_with_its_code_in_the_result_file(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    await portal.call("registration.register_device", device_registration(serial_number="AK6C900001"), token=token)
    rows = [
        row("AK6C000001", name="valid, ISO date"),
        row("XX000001"),
        row("ak6c 900001"),
        row("AK6C000002", date.today() + timedelta(days=2)),
        row("AK6C000001"),
        [],
        row(None, name="no serial"),
        row("AK6C000003", "16.04.2024", street="Hauptstraße 1", postal_code="01067", city="Dresden", country="DE"),
        row("AK6C000004", "yesterday"),
    ]
    upload_id = await upload(portal, token, workbook(rows))
    line = await finished(portal, token, upload_id)
    assert (line["status"], line["total"], line["processed"], line["unprocessed"]) == ("processed", 8, 2, 6)
    assert judged(await result_rows(portal, token, upload_id)) == [
        ("registered", "registered"), ("rejected", "unknown_serial"), ("rejected", "already_registered"),
        ("rejected", "invalid_purchase_date"), ("rejected", "duplicate_serial"), ("rejected", "validation_failed"),
        ("registered", "registered"), ("rejected", "invalid_purchase_date")]
    addressed = await registration.db.devices.find_one({"serial_number": "AK6C000003"})
    assert addressed is not None and addressed["location"]["city"] == "Dresden"
    assert addressed["purchase_date"] == "2024-04-16" and addressed["registered_by"] != ""
    same_as_contact = await registration.db.devices.find_one({"serial_number": "AK6C000001"})
    assert same_as_contact is not None and same_as_contact["location_same_as_contact"]
    assert await registration.db.devices.count_documents({}) == 3


async def test_a_file_that_is_no_spreadsheet_fails_with_not_a_spreadsheet(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    upload_id = await upload(portal, token, b"serial;date\nAK6C000001;2024-04-16\n", filename="devices.csv")
    line = await finished(portal, token, upload_id)
    assert (line["status"], line["reason"]) == ("failed", "not_a_spreadsheet")


async def test_a_spreadsheet_bomb_fails_quickly_while_the_service_keeps_answering(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    bomb = repacked(workbook(valid_rows(1)), replace={SHEET: repeated_cells(60 * MB)})
    started = time.monotonic()
    upload_id = await upload(portal, token, bomb)
    assert (await portal.health("registration")).status == "ok"
    line = await finished(portal, token, upload_id, timeout=15)
    assert (line["status"], line["reason"]) == ("failed", "spreadsheet_too_large")
    assert time.monotonic() - started < 15


async def test_a_file_over_the_size_limit_is_refused_at_upload(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    body = upload_body(b"x" * (5 * MB + 1))
    assert await outcome(portal, "registration.bulk_upload", body, token) == "file_too_large"
    assert await uploads(portal, token) == []


async def test_the_row_limit_raised_in_the_settings_lets_26_rows_through(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    raised = RegistrationSettings(**dict(settings), bulk_max_rows=30)
    async with running(registration_service, raised) as instance:
        operator = operator_token(settings)
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
        token = await customer(settings, instance, amqp_url)
        upload_id = await upload(portal, token, workbook(valid_rows(26)))
        line = await finished(portal, token, upload_id)
        assert (line["status"], line["processed"]) == ("processed", 26)
        assert await instance.db.devices.count_documents({}) == 26


async def test_too_many_rows_names_the_limit_in_force_beside_its_code_in_the_list_and_the_event(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    raised = RegistrationSettings(**dict(settings), bulk_max_rows=30)
    async with running(registration_service, raised) as instance, \
            EventTap(amqp_url, "registration.bulk_upload.#") as tap:
        operator = operator_token(settings)
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
        token = await customer(settings, instance, amqp_url)
        upload_id = await upload(portal, token, workbook(valid_rows(31)))
        line = await finished(portal, token, upload_id)
        event = await tap.next("registration.bulk_upload.completed", timeout=20)
        german = await portal.call("registration.list_bulk_uploads", {}, token=token, lang="de")
    assert (line["status"], line["reason"], line["limit"]) == ("failed", "too_many_rows", 30)
    assert "at most 30 devices per file" in line["message"]
    assert "höchstens 30 Geräte pro Datei" in german["items"][0]["message"]
    assert (event["reason"], event["limit"]) == ("too_many_rows", 30)


async def test_the_upload_answers_queued_at_once_and_the_result_is_a_conflict_until_processed(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token = await customer(settings, registration, amqp_url)
    gate, process = asyncio.Event(), bulk.process

    async def held_back(*args: Any, **kwargs: Any) -> None:
        await gate.wait()
        await process(*args, **kwargs)
    monkeypatch.setattr(bulk, "process", held_back)
    upload_id = await upload(portal, token, workbook(valid_rows(3)))
    [line] = await uploads(portal, token)
    assert (line["upload_id"], line["total"], line["processed_at"]) == (upload_id, 0, None)
    assert line["status"] in ("queued", "processing")
    assert await registration.db.devices.count_documents({}) == 0
    assert await outcome(portal, "registration.bulk_result", {"upload_id": upload_id}, token) == "conflict"
    gate.set()
    assert (await finished(portal, token, upload_id))["processed"] == 3
    assert len(await result_rows(portal, token, upload_id)) == 4


async def test_the_completed_event_carries_the_summary_and_the_result_file(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    async with EventTap(amqp_url, "registration.bulk_upload.#") as tap:
        upload_id = await upload(portal, token, workbook([row("AK6C000001"), row("XX000001")]))
        event = await tap.next("registration.bulk_upload.completed", timeout=20)
        failed_id = await upload(portal, token, workbook(valid_rows(26)))
        failure = await tap.next("registration.bulk_upload.completed", lambda body: body["upload_id"] == failed_id,
                                 timeout=20)
    assert event["upload_id"] == upload_id and event["filename"] == "devices.xlsx" and event["user_id"]
    assert (event["status"], event["total"], event["processed"], event["unprocessed"], event["reason"]) == (
        "processed", 2, 1, 1, None)
    book = openpyxl.load_workbook(BytesIO(base64.b64decode(event["result_file"]["content_base64"])), read_only=True)
    assert [values[-2] for values in book.worksheets[0].iter_rows(min_row=2, values_only=True)] == [
        "registered", "rejected"]
    book.close()
    assert (failure["status"], failure["reason"], failure["result_file"]) == ("failed", "too_many_rows", None)


async def test_a_customer_can_neither_list_nor_fetch_another_users_upload(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    owner = await customer(settings, registration, amqp_url)
    colleague = await customer(settings, registration, amqp_url)  # same customer number, another user
    upload_id = await upload(portal, owner, workbook(valid_rows(1)))
    await finished(portal, owner, upload_id)
    assert await uploads(portal, colleague) == []
    assert await outcome(portal, "registration.bulk_result", {"upload_id": upload_id}, colleague) == "not_found"
    assert await outcome(portal, "registration.bulk_result", {"upload_id": "nope"}, owner) == "not_found"


async def test_uploads_are_listed_newest_first(registration: ServiceInstance, portal: PortalClient,
                                               settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    first = await upload(portal, token, workbook(valid_rows(1)), filename="first.xlsx")
    await finished(portal, token, first)
    second = await upload(portal, token, workbook(valid_rows(1, first=1)), filename="second.xlsx")
    await finished(portal, token, second)
    assert [item["filename"] for item in await uploads(portal, token)] == ["second.xlsx", "first.xlsx"]


async def test_a_formula_in_an_uploaded_cell_is_neutralised_in_the_result_file(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    book = openpyxl.load_workbook(BytesIO(workbook([row("AK6C000001")])))
    cell = book.worksheets[0].cell(row=2, column=3)
    cell.value = '=HYPERLINK("http://evil.example","click")'
    cell.data_type = "s"  # kept as text, as a user typing it into a text cell would
    buffer = BytesIO()
    book.save(buffer)
    upload_id = await upload(portal, token, buffer.getvalue())
    assert (await finished(portal, token, upload_id))["processed"] == 1
    rows = await result_rows(portal, token, upload_id)
    assert rows[1][2] == '\'=HYPERLINK("http://evil.example","click")'


async def test_a_row_registered_before_a_restart_counts_as_registered_when_processed_again(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    upload_id = await upload(portal, token, workbook(valid_rows(3)))
    await finished(portal, token, upload_id)
    # As a replica that died mid-way leaves it: processing, its lease run out, the rows' devices registered.
    await registration.db.uploads.update_one({"_id": upload_id}, {"$set": {
        "status": "processing", "lease_until": 1, "lease_owner": "dead", "processed": 0}})
    line = await finished(portal, token, upload_id)
    assert (line["processed"], line["unprocessed"]) == (3, 0)
    assert judged(await result_rows(portal, token, upload_id)) == [("registered", "registered")] * 3
    assert await registration.db.devices.count_documents({}) == 3


async def test_an_upload_without_terms_accepted_is_refused(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url, accept=False)
    body = upload_body(workbook(valid_rows(1)))
    assert await outcome(portal, "registration.bulk_upload", body, token) == "terms_not_accepted"
    assert await registration.db.uploads.count_documents({}) == 0


async def test_an_upload_of_only_the_file_registers_the_rows_that_accept_the_warranty_in_their_column(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    yes = ["ja", "Yes", " JA ", True, 1, "x", "X", "TRUE", "1"]
    no = [None, "nein", "no", "nei", False, 0, "vielleicht"]
    rows = [accepting(f"AK6C{index:06d}", answer) for index, answer in enumerate([*yes, *no])]
    reply = await portal.call("registration.bulk_upload", upload_body(workbook(rows, "de"), warranty_accepted=None),
                              token=token)
    line = await finished(portal, token, reply["upload_id"])
    assert (line["status"], line["processed"], line["unprocessed"]) == ("processed", len(yes), len(no))
    assert judged(await result_rows(portal, token, reply["upload_id"])) == [
        ("registered", "registered")] * len(yes) + [("rejected", "warranty_not_accepted")] * len(no)
    assert await registration.db.devices.count_documents({}) == len(yes)


async def test_the_flag_accepts_the_warranty_for_every_row_and_old_templates_without_the_column_keep_working(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    old_template = openpyxl.Workbook()
    sheet = old_template.active
    sheet.append(["Serial number *", "Purchase date *", "Device name"])
    sheet.append(["AK6C000001", BOUGHT, "no column"])
    buffer = BytesIO()
    old_template.save(buffer)
    flagged = await upload(portal, token, buffer.getvalue())
    assert (await finished(portal, token, flagged))["processed"] == 1
    # The new template with its column left empty, and the flag: every row accepted.
    assert (await finished(portal, token, await upload(portal, token, workbook(valid_rows(2, first=2)))))[
        "processed"] == 2
    # Neither flag nor column: the file is processed, each row rejected on its own.
    unflagged = await upload(portal, token, workbook(valid_rows(1, first=9)), warranty_accepted=False)
    line = await finished(portal, token, unflagged)
    assert (line["status"], line["processed"], line["unprocessed"]) == ("processed", 0, 1)
    assert judged(await result_rows(portal, token, unflagged)) == [("rejected", "warranty_not_accepted")]


async def test_a_dealer_registers_rows_for_end_customers(registration: ServiceInstance, portal: PortalClient,
                                                         settings: Settings, amqp_url: str) -> None:
    dealer = await customer(settings, registration, amqp_url, role=Role.DEALER)
    upload_id = await upload(portal, dealer, workbook([[*row("AK6C000001"), "Muster GmbH", "it@muster.example"]]))
    assert (await finished(portal, dealer, upload_id))["processed"] == 1
    device = await registration.db.devices.find_one({"serial_number": "AK6C000001"})
    assert device is not None and device["end_customer"] == {"name": "Muster GmbH", "email": "it@muster.example",
                                                             "customer_number": None}


async def test_the_result_file_explains_rejections_in_the_uploaders_language(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    rows = [["ZZ0000000", date.today() - timedelta(days=3)]]
    reply = await portal.call("registration.bulk_upload", upload_body(workbook(rows)), token=token, lang="de")
    await finished(portal, token, reply["upload_id"])
    message = (await result_rows(portal, token, reply["upload_id"]))[1][-1]
    assert message == f"unknown_serial: {message_for('unknown_serial', 'de')}"


async def test_devices_of_a_bulk_upload_are_announced_with_the_upload_so_no_mail_goes_out_per_device(
        registration: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token = await customer(settings, registration, amqp_url)
    async with EventTap(amqp_url, "registration.device.registered") as tap:
        upload_id = await upload(portal, token, workbook(valid_rows(2)))
        await finished(portal, token, upload_id)
        first = await tap.next("registration.device.registered")
        await portal.call("registration.register_device", device_registration(), token=token)
        single = await tap.next("registration.device.registered", lambda body: body["upload_id"] is None)
    assert first["upload_id"] == upload_id
    assert single["registered_by"] == first["registered_by"]


async def test_users_take_turns_so_that_one_users_many_uploads_cannot_starve_another(
        registration: ServiceInstance, settings: Settings) -> None:
    # A database of its own (dropped with the test's prefix), so the running loop does not take them first.
    db = registration.db.client[f"{settings.database_prefix}turns"]
    queued = [("busy", minute) for minute in range(5)] + [("other", 10), ("busy", 11)]
    await db.uploads.insert_many([{"_id": f"{user_id}-{minute}", "user_id": user_id, "status": "queued",
                                   "uploaded_at": datetime(2026, 12, 1, 9, minute, tzinfo=UTC)}
                                  for user_id, minute in queued])
    taken = []
    while (upload := await bulk.claim_next(db, "replica", registration_settings(registration))) is not None:
        taken.append(upload["_id"])
    assert len(taken) == len(queued)
    assert "other-10" in taken[:2]
    assert [upload_id for upload_id in taken if upload_id.startswith("busy")] == [
        "busy-0", "busy-1", "busy-2", "busy-3", "busy-4", "busy-11"]  # each user's own in the order uploaded
