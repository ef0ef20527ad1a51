"""Bulk registration: a 25-row upload from `bulk_upload` to the result mail, and 10,000 rows with the
limit raised; rows per second and the registration process's peak memory (goal: >= 500 rows/s,
memory flat in the number of rows beyond the file itself).

Registration and the notifier run as their own processes against the benchmark's vhost and
nx-27017; the result mail goes to an aiosmtpd sink in this process.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import openpyxl  # type: ignore[import-untyped, unused-ignore]
from aiosmtpd.controller import Controller

from contracts.accounts import ProfileUpdated, TermsAccepted
from contracts.base import FileObject
from contracts.client import NotDelivered, PortalClient
from contracts.registration import BulkUploadCompleted
from contracts.topology import EVENTS_EXCHANGE
from deploy.local import deps
from deploy.local.demo import OKI_MODELS
from services.runtime.settings import DEVELOPMENT_TOKEN_SECRET
from services.runtime.tokens import Role, issue_token

ROOT = Path(__file__).resolve().parent.parent
SIZES = (25, 10_000)
GOAL_ROWS_PER_S = 500


@dataclass
class BulkRun:
    rows: int
    file_bytes: int
    seconds_to_completed: float
    seconds_to_mail: float | None
    processed: int
    peak_rss_mb: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds_to_completed


class MailSink:
    """Notes when each bulk result mail (the one with the result file attached) arrives."""

    def __init__(self) -> None:
        self.arrived: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"multipart/mixed" in envelope.content:
            self.arrived.append(time.monotonic())
        return "250 accepted"


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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def service_process(name: str, env: dict[str, str]) -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process.pid
    finally:
        deps.stop_process(process, timeout=30)


async def wait_ready(portal: PortalClient, service: str) -> None:
    for _ in range(300):
        try:
            if (await portal.health(service)).status == "ok":
                return
        except (TimeoutError, NotDelivered):
            pass
        await asyncio.sleep(0.1)
    raise deps.DependencyError(f"{service} did not get ready")


async def publish(amqp_url: str, routing_key: str, body: dict[str, Any]) -> None:
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                                message_id=uuid.uuid4().hex), routing_key=routing_key)


async def drive(amqp_url: str, registration_pid: int, sink: MailSink) -> list[BulkRun]:
    now = datetime.now(UTC)
    operator, _ = issue_token(DEVELOPMENT_TOKEN_SECRET, user_id="bench-operator", role=Role.OPERATOR, now=now,
                              lifetime=timedelta(hours=1))
    token, claims = issue_token(DEVELOPMENT_TOKEN_SECRET, user_id=uuid.uuid4().hex, role=Role.CUSTOMER, now=now,
                                lifetime=timedelta(hours=1), customer_number="C-BENCH")
    async with PortalClient(amqp_url, timeout=60) as portal:
        for service in ("registration", "notifier"):
            await wait_ready(portal, service)
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator)
        await publish(amqp_url, TermsAccepted.routing_key, TermsAccepted(
            user_id=claims.user_id, terms_version="1", privacy_version="1").model_dump())
        await publish(amqp_url, ProfileUpdated.routing_key, ProfileUpdated(
            user_id=claims.user_id, email="fleet@bench.example", language="de", username="fleet",
            version=1).model_dump())
        await asyncio.sleep(1.0)  # both read models are fed

        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        completed = await channel.declare_queue(exclusive=True)
        await completed.bind(exchange, routing_key=BulkUploadCompleted.routing_key)
        runs, first_serial = [], 0
        for rows in SIZES:
            content = await asyncio.to_thread(workbook, rows, first_serial)
            first_serial += rows
            mails_before = len(sink.arrived)
            started = time.monotonic()
            await portal.call("registration.bulk_upload", {
                "file": FileObject.from_bytes(f"fleet-{rows}.xlsx", "application/octet-stream", content).model_dump(),
                "warranty_accepted": True}, token=token)
            async with completed.iterator() as events:
                message = await asyncio.wait_for(anext(events), 600)
                await message.ack()
            done = time.monotonic()
            summary = json.loads(message.body)
            for _ in range(300):
                if len(sink.arrived) > mails_before:
                    break
                await asyncio.sleep(0.1)
            mailed = sink.arrived[mails_before] - started if len(sink.arrived) > mails_before else None
            runs.append(BulkRun(rows, len(content), done - started, mailed, summary["processed"],
                                peak_rss_mb(registration_pid)))
        await connection.close()
    return runs


def run_bulk(amqp_url: str, mongo_url: str) -> list[BulkRun]:
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=deps.free_port())
    controller.start()
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")},
           "PORTAL_AMQP_URL": amqp_url, "PORTAL_MONGODB_URL": mongo_url,
           "PORTAL_DATABASE_PREFIX": f"bulk{uuid.uuid4().hex[:8]}_", "PORTAL_SMTP_HOST": "127.0.0.1",
           "PORTAL_SMTP_PORT": str(controller.port), "PORTAL_BULK_MAX_ROWS": str(max(SIZES)),
           "PORTAL_LOG_LEVEL": "WARNING"}
    try:
        with service_process("registration", env) as registration, service_process("notifier", env):
            return asyncio.run(drive(amqp_url, registration, sink))
    finally:
        controller.stop()


def print_bulk(runs: list[BulkRun]) -> None:
    print("\n| rows | file KB | to completed s | to result mail s | rows/s | registered | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        mail = f"{run.seconds_to_mail:.2f}" if run.seconds_to_mail is not None else "no mail"
        print(f"| {run.rows:,} | {run.file_bytes / 1024:,.0f} | {run.seconds_to_completed:.2f} | {mail} "
              f"| {run.rows_per_s:,.0f} | {run.processed:,} | {run.peak_rss_mb:.0f} |")
    largest = runs[-1]
    print(f"\nGoal: >= {GOAL_ROWS_PER_S} rows/s at {largest.rows:,} rows -> "
          f"{'met' if largest.rows_per_s >= GOAL_ROWS_PER_S else 'MISSED'} ({largest.rows_per_s:,.0f} rows/s); "
          f"peak memory grew {largest.peak_rss_mb - runs[0].peak_rss_mb:.0f} MB from {runs[0].rows} to "
          f"{largest.rows:,} rows ({largest.file_bytes / 1024 / 1024:.1f} MB file)")
