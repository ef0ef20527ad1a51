"""portal-admin load, deliveries, reminders and overdue against registration, ordering, metering and the notifier
running in this process, once for the module (each test makes models, customers and serials of its own).

The fixtures override the per-test `amqp_url`, `database_prefix`, `settings` and `portal` of tests/conftest.py with
module-scoped ones, as tests/ticketing does; the module's tests run in one event loop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.accounts import Contract, CustomerProvisioned, UserActivated
from contracts.client import PortalClient
from deploy.local.demo import OKI_MODELS
from services.metering import periods
from services.metering.app import service as metering_service
from services.metering.settings import MeteringSettings
from services.notifier.app import service as notifier_service
from services.ordering.app import service as ordering_service
from services.registration.app import service as registration_service
from services.runtime.tokens import Role
from tests.admin.support import known_model, portal_admin
from tests.builders import operator_token, publish_event, random_email, random_id, random_serial, token_for
from tests.readmodels import today
from tests.support import Mailbox, eventually, running, settings_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def amqp_url(module_amqp_url: str) -> str:
    return module_amqp_url


@pytest.fixture(scope="module")
def database_prefix(module_database_prefix: str) -> str:
    return module_database_prefix


@pytest.fixture(scope="module")
def settings(amqp_url: str, mongo_url: str, database_prefix: str, module_mailbox: Mailbox) -> MeteringSettings:
    # The reminder scheduler runs today's schedule once at start (nothing is known then); only the CLI runs it again.
    return MeteringSettings(amqp_url=amqp_url, mongodb_url=mongo_url, database_prefix=database_prefix,
                            smtp_host=module_mailbox.host, smtp_port=module_mailbox.port,
                            event_retry_base_delay=0.05, graceful_timeout=5, outbox_poll_seconds=0.5,
                            metering_scheduler_seconds=3600.0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def portal(amqp_url: str) -> AsyncIterator[PortalClient]:
    async with PortalClient(amqp_url, timeout=10) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(settings: MeteringSettings, portal: PortalClient) -> AsyncIterator[None]:
    async with running(registration_service, settings), running(ordering_service, settings), \
            running(metering_service, settings), running(notifier_service, settings):
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS},
                          token=operator_token(settings))
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mongo(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    async with AsyncMongoClient[dict[str, Any]](mongo_url, timeoutMS=10_000) as client:
        yield client


def db(mongo: AsyncMongoClient[dict[str, Any]], settings: MeteringSettings,
       service: str) -> AsyncDatabase[dict[str, Any]]:
    """A service's database, for assertions only: the tests act through the CLI."""
    return mongo[settings.database_name(service)]


def csv_file(folder: Path, name: str, lines: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path




async def test_models_from_an_xlsx_all_go_in_and_a_csv_with_bad_rows_names_them_and_keeps_the_good_ones(
        services: None, settings: MeteringSettings, portal: PortalClient, tmp_path: Path) -> None:
    prefixes = [f"Z{random_id()[:3].upper()}{n}" for n in range(4)]
    names = [f"Model {prefix}" for prefix in prefixes]
    book = openpyxl.Workbook()
    book.active.append(["Model", "Article number", "Serial pattern", "Counters", "Serial hint"])
    book.active.append([names[0], "4711", f"^{prefixes[0]}[0-9]{{6}}$", "mono, color", "At the back."])
    sheet = tmp_path / "models.xlsx"
    book.save(sheet)

    status, table, _ = await portal_admin(settings_env(settings), "load", "models", str(sheet))

    assert status == 0, table
    assert "1 of 1 rows in" in table and names[0] in table
    assert await known_model(portal, settings, f"{prefixes[0]}123456") == names[0]

    bad = csv_file(tmp_path, "models.csv", [
        "model;article_number;serial_pattern;counters",
        f"{names[1]};4712;^{prefixes[1]}[0-9]{{6}}$;mono",
        f"{names[2]};;^{prefixes[2]}[0-9]{{6}}$;mono",  # no article number: refused before it is sent
        "",
        f"{names[3]};4714;^({prefixes[3]};mono"])  # not a regular expression: registration refuses that item

    status, document, _ = await portal_admin(settings_env(settings), "load", "models", str(bad), "--json")

    assert status == 1
    rows = {row["row"]: row for row in json.loads(document)}
    assert list(rows) == [2, 3, 5]  # lines of the file: the empty line 4 is no row
    assert rows[2]["ok"] and rows[2]["key"] == names[1]
    assert (rows[3]["ok"], rows[3]["code"], rows[3]["message"]) == (False, "validation_failed",
                                                                   "article_number: required")
    assert (rows[5]["ok"], rows[5]["code"]) == (False, "validation_failed")
    assert rows[5]["message"].startswith("serial_pattern: ")
    assert await known_model(portal, settings, f"{prefixes[1]}123456") == names[1]
    assert await known_model(portal, settings, f"{prefixes[2]}123456") is None


async def test_consumables_go_in_per_model_and_a_model_with_a_refused_row_keeps_its_list(
        services: None, settings: MeteringSettings, mongo: AsyncMongoClient[dict[str, Any]], tmp_path: Path) -> None:
    good, spoilt, twice = (f"Model {random_id()}" for _ in range(3))
    path = csv_file(tmp_path, "consumables.csv", [
        "model,article_number,description,kind,color,included_in_contract",
        f"{good},1001,TONER-K,toner,black,yes",
        f"{spoilt},2001,TONER-K,toner,black,",
        f"{good},1002,DRUM,drum,,no",
        f"{spoilt},2002,SPRAY,paint,,",  # no such kind: the whole list of that model stays as it was
        f"{twice},3001,TONER-K,toner,black,",
        f"{twice},3002,DRUM,drum,,",
        f"{twice.upper()},3001,TONER-K again,toner,black,"])  # one model's list (ordering's key), an article twice

    status, table, _ = await portal_admin(settings_env(settings), "load", "consumables", str(path))

    assert status == 1
    assert "2 of 7 rows in" in table
    lines = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 4}
    assert "ok" in lines["2"] and "ok" in lines["4"]
    assert "validation_failed" in lines["5"] and "kind" in lines["5"]
    assert "not_sent" in lines["3"] and spoilt in lines["3"]
    assert "article_number: given twice" in lines["6"] and "article_number: given twice" in lines["8"]
    assert "(3001 in rows 6, 8)" in lines["6"]
    assert "not_sent" in lines["7"] and twice in lines["7"]  # the list goes whole or not at all
    consumables = db(mongo, settings, "ordering").consumables
    saved = await consumables.find_one({"model": good})
    assert saved is not None
    assert [(item["article_number"], item["included_in_contract"]) for item in saved["items"]] == [
        ("1001", True), ("1002", False)]
    assert await consumables.find_one({"model": spoilt}) is None
    assert await consumables.find_one({"model": twice}) is None


async def test_an_installed_base_from_a_file_is_reminded_its_mail_listed_and_then_found_overdue(
        services: None, settings: MeteringSettings, portal: PortalClient, amqp_url: str,
        mongo: AsyncMongoClient[dict[str, Any]], module_mailbox: Mailbox, tmp_path: Path) -> None:
    customer, contract, email = random_id("C-"), random_id("K-"), random_email()
    await publish_event(amqp_url, UserActivated.routing_key, UserActivated(
        user_id=random_id("u"), email=email, language="en", first_name="Clara", last_name="Zimmermann",
        username=random_id("clara"), role="customer", customer_number=customer).model_dump(mode="json"))
    await publish_event(amqp_url, CustomerProvisioned.routing_key, CustomerProvisioned(
        customer_number=customer, customer_name="Zimmermann GmbH", version=1, contracts=[Contract(
            contract_number=contract, type="page_price", billing_period="quarterly",
            start_date=today() - timedelta(days=800))]).model_dump(mode="json"))
    read_on = (today() - timedelta(days=200)).isoformat()  # nothing for the quarter whose window closed last
    serial, unknown, nobodys = random_serial("AK5A"), random_serial("ZZ9Z"), random_serial("AK5A")
    path = csv_file(tmp_path, "erp.csv", [
        "serial_number;model;customer_number;contract_number;street;postal_code;city;counters;counters_date",
        f"{serial};ES5431dn;{customer};{contract};Hauptstr. 1;10115;Berlin;mono=4500, color=380;{read_on}",
        f"{unknown};XX-1;{customer};{contract};Hauptstr. 1;10115;Berlin;;",
        f"{nobodys};ES5431dn;;;Hauptstr. 1;10115;Berlin;;"])

    status, document, _ = await portal_admin(settings_env(settings), "load", "installed-base", str(path), "--json")

    assert status == 1
    assert [(row["key"], row["ok"], row["code"]) for row in json.loads(document)] == [
        (serial, True, None), (unknown, False, "unknown_model"), (nobodys, False, "validation_failed")]
    assert "customer_number: required" in json.loads(document)[2]["message"]

    metering = db(mongo, settings, "metering")

    async def metering_knows() -> bool:  # the device and its contract, from registration's and accounts' events
        return await metering.devices.find_one({"serial_number": serial}) is not None \
            and await metering.customers.find_one({"_id": customer}) is not None
    await eventually(metering_knows, timeout=30)
    closed = periods.closed_window_before(today(), "quarterly")

    status, out, _ = await portal_admin(settings_env(settings), "reminders", "run", "--date",
                                        closed.opens.isoformat())

    assert status == 0
    assert out.strip() == f"reminders run for {closed.opens}: 1 reminder(s), 0 overdue"

    async def sent() -> bool:
        deliveries = await portal.call("notifier.operator.list_deliveries", {"recipient": email},
                                       token=operator_token(settings))
        return [item["status"] for item in deliveries["items"]] == ["sent"]
    await eventually(sent, timeout=30)
    status, table, _ = await portal_admin(settings_env(settings), "deliveries", "--recipient", email)
    json_status, document, _ = await portal_admin(settings_env(settings), "deliveries", "--recipient", email,
                                                  "--status", "sent", "--json")

    assert status == json_status == 0
    assert "1 of 1 deliveries" in table and email in table and "metering.reminder.due" in table
    [delivery] = json.loads(document)["items"]
    assert (delivery["recipient"], delivery["event"], delivery["status"]) == (email, "metering.reminder.due", "sent")
    assert len(module_mailbox.to(email)) == 1

    status, document, _ = await portal_admin(settings_env(settings), "reminders", "run", "--date",
                                             (closed.closes + timedelta(days=1)).isoformat(), "--json")

    assert status == 0
    assert json.loads(document) == {"as_of": (closed.closes + timedelta(days=1)).isoformat(), "reminders": 0,
                                    "overdue": 1}

    status, table, _ = await portal_admin(settings_env(settings), "overdue", "--period-end",
                                          closed.period_end.isoformat())
    json_status, document, _ = await portal_admin(settings_env(settings), "overdue", "--period-end",
                                                  closed.period_end.isoformat(), "--json")

    assert status == json_status == 0
    row = next(line for line in table.splitlines() if serial in line)
    assert customer in row and contract in row and "ES5431dn" in row and read_on in row
    overdue = [item for item in json.loads(document)["items"] if item["serial_number"] == serial]
    assert [(item["customer_number"], item["window_closed"]) for item in overdue] == [
        (customer, closed.closes.isoformat())]


async def test_a_file_that_cannot_be_read_is_refused_before_anything_is_sent(
        settings: MeteringSettings, tmp_path: Path) -> None:
    not_a_sheet = tmp_path / "models.xlsx"
    not_a_sheet.write_bytes(b"PK\x03\x04 no zip")
    env = settings_env(settings, PORTAL_AMQP_URL="amqp://guest:guest@127.0.0.1:1/")  # nothing is sent anywhere

    missing = await portal_admin(env, "load", "models", str(tmp_path / "nowhere.csv"))
    broken = await portal_admin(env, "load", "installed-base", str(not_a_sheet))

    assert missing[0] == broken[0] == 2
    assert "cannot be read (No such file or directory)" in missing[2]
    assert "cannot be read (not_a_spreadsheet)" in broken[2]


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.DEALER])
async def test_a_load_with_a_customers_or_dealers_token_stops_at_the_first_call(
        services: None, settings: MeteringSettings, portal: PortalClient, tmp_path: Path, role: Role) -> None:
    prefix = f"Y{random_id()[:4].upper()}"
    path = csv_file(tmp_path, "models.csv", ["model,article_number,serial_pattern,counters",
                                             f"Model {prefix},1,^{prefix}[0-9]{{6}}$,mono"])
    token, _ = token_for(settings, role)

    status, document, err = await portal_admin(settings_env(settings, PORTAL_ADMIN_TOKEN=token),
                                               "load", "models", str(path), "--json")

    assert status == 2
    assert "forbidden" in err
    assert [(row["ok"], row["code"]) for row in json.loads(document)] == [(False, "not_sent")]
    assert await known_model(portal, settings, f"{prefix}123456") is None
    listed = await portal_admin(settings_env(settings, PORTAL_ADMIN_TOKEN=token), "deliveries")
    assert listed[0] == 1 and "notifier: forbidden" in listed[2]

