"""Review of the operators' CLI (issue 16): each test shows a defect and is expected to fail until it is fixed.

Real parts: the broker, nx-27017 and the services run in this process; `portal-admin` runs as a process.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest
from openpyxl.styles import Font  # type: ignore[import-untyped, unused-ignore]
from pymongo import AsyncMongoClient

from contracts import uploads
from contracts.client import PortalClient
from contracts.topology import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, event_queue
from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.ordering.app import service as ordering_service
from services.registration.app import service as registration_service
from services.runtime.settings import Settings
from tests.admin.support import known_model, portal_admin
from tests.builders import operator_token, publish_event, random_id
from tests.runtime.sample_service import NoteAdded, listener
from tests.support import dead_letters, eventually, running, settings_env

UPSERT_MODELS = "registration.operator.upsert_models"


def _csv(rows: list[list[str]]) -> bytes:
    """A csv as Excel (and Python's csv module, its `excel` dialect) writes it: `"` inside a field doubled."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()




def test_a_csv_as_excel_writes_it_is_read_back_as_written() -> None:
    header = ["serial_number", "model", "customer_number", "location_name", "street", "postal_code", "city"]
    plain = [[f"AK{n:08d}", "ES5431dn", "C-1", "Lager Nord", "Hauptstr. 1", "10115", "Berlin"] for n in range(80)]
    quoted = ["AK99999999", "ES5431dn", "C-1", 'Lager "Süd", Halle 2', "Hauptstr. 1", "10115", "Berlin"]
    content = _csv([header, *plain, quoted])
    assert len(content) > 4096  # the quoted row lies past the sample the dialect is guessed from

    rows = uploads.numbered_rows("erp.csv", content)

    assert rows[-1] == (len(plain) + 2, dict(zip(header, quoted, strict=True)))


async def test_consumables_of_one_model_written_two_ways_all_stay_in_the_catalogue(
        settings: Settings, mongo_url: str, tmp_path: Path) -> None:
    model = f"ES{random_id()[:6]}dn"
    path = tmp_path / "consumables.csv"
    path.write_text("\n".join(["model,article_number,description,kind,color,included_in_contract",
                               f"{model},1001,TONER-K,toner,black,yes",
                               f"{model.upper()},1002,DRUM,drum,,no"]) + "\n", encoding="utf-8")

    async with running(ordering_service, settings):
        status, document, _ = await portal_admin(settings_env(settings), "load", "consumables", str(path), "--json")

    reported_in = {row["key"] for row in json.loads(document) if row["ok"]}
    async with AsyncMongoClient[dict[str, Any]](mongo_url, timeoutMS=10_000) as mongo:
        lists = await mongo[settings.database_name("ordering")].consumables.find({}).to_list()
    stored = {item["article_number"] for saved in lists for item in saved["items"]}
    assert status == 0 and reported_in == {"1001", "1002"}  # what the operator is told
    assert stored >= reported_in, f"reported in: {sorted(reported_in)}, in the catalogue: {sorted(stored)}"


async def test_rows_reported_not_sent_are_not_applied_later(
        settings: Settings, portal: PortalClient, tmp_path: Path) -> None:
    prefix = f"Q{random_id()[:4].upper()}"
    path = tmp_path / "models.csv"
    path.write_text(f"model,article_number,serial_pattern,counters\nModel {prefix},4711,^{prefix}[0-9]{{6}}$,mono\n",
                    encoding="utf-8")
    # registration is slow to answer (here: not started yet); its queue exists, as it does once it ran.
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(UPSERT_MODELS, durable=True, arguments={
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE, "x-dead-letter-routing-key": UPSERT_MODELS})
        await queue.bind(exchange, routing_key=UPSERT_MODELS)

    status, document, _ = await portal_admin(settings_env(settings), "load", "models", str(path), "--json",
                                             "--timeout", "1")
    rows = json.loads(document)
    assert status == 2

    async with running(registration_service, settings):  # registration gets to its queue
        async def applied() -> bool:
            return await known_model(portal, settings, f"{prefix}123456") is not None
        await eventually(applied, timeout=20)

    not_sent = [row for row in rows if row["code"] == "not_sent"]
    assert not not_sent, f"reported not sent, but the model is in the catalogue now: {not_sent}"


async def test_a_dead_letter_whose_body_looks_like_markup_is_listed(
        settings: Settings, amqp_url: str, portal: PortalClient, operator: str) -> None:
    queue = event_queue("listener", NoteAdded.routing_key)
    async with running(listener, settings):
        await publish_event(amqp_url, NoteAdded.routing_key, b"broken [/] body")

        async def dead() -> bool:
            return len(await dead_letters(portal, "listener", operator, queue)) == 1
        await eventually(dead)

        status, table, err = await portal_admin(settings_env(settings), "dead-letters", "list",
                                                "--service", "listener")

    assert status == 0, err[-800:]
    assert "broken [/] body" in table


async def test_the_load_table_shows_each_rows_key_as_written(settings: Settings, tmp_path: Path) -> None:
    prefix = f"W{random_id()[:4].upper()}"
    name = f"Laser [b/w] {prefix}"
    path = tmp_path / "models.csv"
    path.write_text(f"model,article_number,serial_pattern,counters\n{name},4711,^{prefix}[0-9]{{6}}$,mono\n",
                    encoding="utf-8")

    async with running(registration_service, settings):
        status, table, err = await portal_admin(settings_env(settings), "load", "models", str(path))

    assert status == 0, err
    assert name in table


def test_formatted_empty_rows_of_an_xlsx_do_not_count_as_rows() -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["model", "article_number", "serial_pattern", "counters"])
    sheet.append(["ES5431dn", "01332801", "^AK[0-9A-Z]{8}$", "mono"])
    for row in range(3, uploads.MAX_ROWS + 200):  # formatted, never filled in
        sheet.cell(row=row, column=1).font = Font(bold=True)
    content = io.BytesIO()
    book.save(content)

    rows = uploads.numbered_rows("models.xlsx", content.getvalue())

    assert [(line, row["model"]) for line, row in rows] == [(2, "ES5431dn")]


async def test_reminders_are_not_run_for_a_day_still_to_come(settings: Settings) -> None:
    metering_settings = MeteringSettings(**dict(settings), metering_scheduler_seconds=3600.0)
    later = (datetime.now(UTC) + timedelta(days=365)).date()

    async with running(metering_service, metering_settings):
        status, out, err = await portal_admin(settings_env(settings), "reminders", "run", "--date", later.isoformat())

    assert status != 0, out
    assert "still to come" in err


async def test_a_column_the_load_does_not_know_is_not_dropped_silently(
        settings: Settings, portal: PortalClient, tmp_path: Path) -> None:
    prefix = f"V{random_id()[:4].upper()}"
    model = {"model": f"Model {prefix}", "article_number": "4711", "serial_pattern": f"^{prefix}[0-9]{{6}}$",
             "counters": ["mono"]}
    path = tmp_path / "erp.csv"
    path.write_text(f"serial_number,model,customer_number,E-Maintenance\n{prefix}123456,Model {prefix},C-1,yes\n",
                    encoding="utf-8")

    async with running(registration_service, settings):
        await portal.call(UPSERT_MODELS, {"models": [model]}, token=operator_token(settings))
        status, out, err = await portal_admin(settings_env(settings), "load", "installed-base", str(path))

    assert status != 0 or "e-maintenance" in (out + err).lower(), out
    assert status == 2 and "have: E-Maintenance." in err, err


@pytest.mark.parametrize(("header", "said", "refusal"), [
    # Values in a column without a name would be dropped; a name twice would keep one column's values only.
    ("model,article_number,serial_pattern,", "column 4", {"error": "unnamed_columns", "positions": [4]}),
    ("model,article_number,serial_pattern,Model", "names a column twice: Model",
     {"error": "repeated_columns", "columns": ["Model"]}),
])
async def test_columns_that_cannot_be_told_apart_refuse_the_file_before_anything_is_sent(
        settings: Settings, tmp_path: Path, header: str, said: str, refusal: dict[str, object]) -> None:
    path = tmp_path / "models.csv"
    path.write_text(f"{header}\nES5431dn,4711,^AK[0-9]{{8}}$,mono\n", encoding="utf-8")

    status, document, err = await portal_admin(settings_env(settings), "load", "models", str(path), "--json")

    assert status == 2, document
    assert said in err, err
    assert {key: value for key, value in json.loads(document).items() if key != "message"} == {
        "file": str(path), **refusal, "rows": []}


async def test_load_json_is_a_json_document_when_the_file_cannot_be_read(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "models.xlsx"
    broken.write_bytes(b"PK\x03\x04 no zip")

    status, document, _ = await portal_admin(settings_env(settings), "load", "models", str(broken), "--json")

    assert status == 2
    assert {key: value for key, value in json.loads(document).items() if key != "message"} == {
        "file": str(broken), "error": "not_a_spreadsheet", "rows": []}
