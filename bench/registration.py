"""Registration in bulk: an Excel registration of `registration_rows` devices, and the installed-base import of
`import_devices` devices, each repeated `repeats` times with new serials; median and range.

Registration and the notifier run as processes on the run's vhost and nx-27017; the result mail goes to an aiosmtpd
sink in this process.

- Excel registration: `registration.bulk_upload` to `registration.bulk_upload.completed` and to the result mail with
  the file attached (one mail per upload). Goal: >= 500 rows/s at the median (it was set for 10,000 rows; 25 rows
  measure the upload's fixed costs as much as its rows).
- Installed-base import: one `registration.operator.import_installed_base` of new devices, to the reply and to the
  last `registration.device.provisioned`; registration's peak RSS after the last. Goal: >= 2,000 devices/s to the
  reply at the median.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]

from bench.plan import Plan
from bench.rounds import Spread
from bench.world import (
    TIMEOUT,
    EventCounter,
    MailSink,
    World,
    fresh_prefix,
    peak_rss_mb,
    publish_events,
    smtp_sink,
    wait_ready,
)
from contracts.accounts import ProfileUpdated, TermsAccepted
from contracts.base import FileObject
from contracts.client import PortalClient
from contracts.registration import BulkUploadCompleted, DeviceProvisioned
from deploy.local.demo import OKI_MODELS
from services.runtime.tokens import Role

GOAL_ROWS_PER_S, GOAL_DEVICES_PER_S = 500, 2_000


@dataclass
class Timings:
    """One bulk measurement, repeated: seconds to the reply or completion, and to the last effect (None: missing)."""

    size: int
    body_bytes: int = 0
    seconds: list[float] = field(default_factory=list)
    seconds_to_last: list[float | None] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    @property
    def per_s(self) -> Spread:
        return Spread.of(self.size / seconds for seconds in self.seconds)

    def last(self) -> str:
        arrived = [seconds for seconds in self.seconds_to_last if seconds is not None]
        missing = len(self.seconds_to_last) - len(arrived)
        return (Spread.of(arrived).text(2) if arrived else "") + (f" ({missing} missing)" if missing else "")

    def json(self) -> dict[str, Any]:
        arrived = [seconds for seconds in self.seconds_to_last if seconds is not None]
        return {"size": self.size, "body_bytes": self.body_bytes, "per_s": self.per_s.json(0),
                "seconds": Spread.of(self.seconds).json(2),
                "seconds_to_last": Spread.of(arrived).json(2) if arrived else None,
                "missing": len(self.seconds_to_last) - len(arrived), "processed": self.processed,
                "peak_rss_mb": round(self.peak_rss_mb, 1)}


@dataclass
class RegistrationRun:
    excel: Timings
    imported: Timings

    def json(self) -> dict[str, Any]:
        return {"excel": {**self.excel.json(), "goal_rows_per_s": GOAL_ROWS_PER_S},
                "import": {**self.imported.json(), "goal_devices_per_s": GOAL_DEVICES_PER_S}}


def workbook(rows: int, first_serial: int) -> bytes:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Devices")
    sheet.append(["serial_number", "purchase_date", "friendly_name"])
    bought = date.today() - timedelta(days=10)
    for number in range(rows):
        sheet.append([f"AK6C{first_serial + number:06d}", bought, f"Printer {number}"])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def installed_base(count: int, first: int) -> list[dict[str, Any]]:
    """Devices as a vendor's ERP sends them: customer, contract, address, two counters."""
    read_on = (date.today() - timedelta(days=3)).isoformat()
    return [{
        "serial_number": f"AK5A{first + number:07d}", "model": "ES5431dn",
        "customer_number": f"C-{(first + number) // 20:06d}", "contract_number": f"K-{(first + number) // 20:06d}",
        "location": {"name": f"Site {number // 20}", "street": f"Hauptstraße {number % 200 + 1}",
                     "postal_code": f"{10000 + number % 9000}", "city": "Berlin", "country": "DE",
                     "building_location": f"Floor {number % 7}"},
        "counters": [{"name": "mono", "value": 1000 + number, "date": read_on},
                     {"name": "color", "value": 500 + number, "date": read_on}],
        "e_maintenance": number % 3 == 0,
    } for number in range(count)]


async def excel_registrations(world: World, portal: PortalClient, sink: MailSink, rows: int,
                              repeats: int) -> Timings:
    user_id = uuid.uuid4().hex
    token = world.token(Role.CUSTOMER, "C-BENCH", user_id=user_id)
    await publish_events(world.amqp_url, [
        TermsAccepted(user_id=user_id, terms_version="1", privacy_version="1"),
        ProfileUpdated(user_id=user_id, email="fleet@bench.example", language="de", username="fleet", version=1)])
    await asyncio.sleep(1.0)  # registration's and the notifier's read models take them in
    timings = Timings(rows)
    async with EventCounter(world.amqp_url, BulkUploadCompleted.routing_key, keep=True) as completed:
        for repeat in range(repeats):
            content = await asyncio.to_thread(workbook, rows, repeat * rows)
            timings.body_bytes = len(content)
            mails_before = len(sink.attached)
            started = time.monotonic()
            await portal.call("registration.bulk_upload", {
                "file": FileObject.from_bytes(f"fleet-{repeat}.xlsx", "application/octet-stream",
                                              content).model_dump(),
                "warranty_accepted": True}, token=token)
            done = await completed.reached(repeat + 1)
            if done is None:
                raise TimeoutError("no registration.bulk_upload.completed")
            for _ in range(300):
                if len(sink.attached) > mails_before:
                    break
                await asyncio.sleep(0.05)
            timings.seconds.append(done - started)
            timings.seconds_to_last.append(sink.attached[mails_before] - started
                                           if len(sink.attached) > mails_before else None)
            timings.processed.append(int(json.loads(completed.bodies[-1])["processed"]))
    return timings


async def imports(world: World, portal: PortalClient, devices: int, repeats: int, pid: int) -> Timings:
    operator = world.token(Role.OPERATOR)
    timings = Timings(devices)
    async with EventCounter(world.amqp_url, DeviceProvisioned.routing_key) as events:
        for repeat in range(repeats):
            body = {"devices": installed_base(devices, repeat * devices)}
            timings.body_bytes = len(json.dumps(body).encode())
            started = time.monotonic()
            reply = await portal.call("registration.operator.import_installed_base", body, token=operator)
            timings.seconds.append(time.monotonic() - started)
            last = await events.reached((repeat + 1) * devices)
            timings.seconds_to_last.append(None if last is None else last - started)
            timings.processed.append(int(reply["imported"]))
    timings.peak_rss_mb = peak_rss_mb(pid)
    return timings


def run_registration(world: World, plan: Plan) -> RegistrationRun:
    with smtp_sink() as (sink, port), world.services(
            ("registration", "notifier"), fresh_prefix("registration"), smtp_host="127.0.0.1",
            smtp_port=str(port)) as (registration, _):

        async def drive() -> RegistrationRun:
            async with PortalClient(world.amqp_url, timeout=TIMEOUT) as portal:
                await wait_ready(portal, "registration", "notifier")
                await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS},
                                  token=world.token(Role.OPERATOR))
                excel = await excel_registrations(world, portal, sink, plan.registration_rows, plan.repeats)
                imported = await imports(world, portal, plan.import_devices, plan.repeats, registration)
            return RegistrationRun(excel, imported)

        return asyncio.run(drive())


def print_registration(run: RegistrationRun) -> None:
    repeats = len(run.excel.seconds)
    print(f"\nregistration in bulk, median (range) of {repeats} each\n")
    print("| what | size | per s | seconds | to the last effect s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    print(f"| Excel registration (to completed; to the result mail) | {run.excel.size:,} rows "
          f"| {run.excel.per_s.text()} | {Spread.of(run.excel.seconds).text(2)} | {run.excel.last()} | |")
    print(f"| installed-base import (to the reply; to the last device.provisioned) | {run.imported.size:,} devices "
          f"| {run.imported.per_s.text()} | {Spread.of(run.imported.seconds).text(2)} | {run.imported.last()} "
          f"| {run.imported.peak_rss_mb:.0f} |")
    print(f"\nGoal: Excel >= {GOAL_ROWS_PER_S} rows/s -> "
          f"{'met' if run.excel.per_s.median >= GOAL_ROWS_PER_S else 'MISSED'}; import >= {GOAL_DEVICES_PER_S:,} "
          f"devices/s -> {'met' if run.imported.per_s.median >= GOAL_DEVICES_PER_S else 'MISSED'}")
