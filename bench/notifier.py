"""The notifier's mail throughput: `mails` device-registration mails to a local SMTP sink, repeated; median and range.

The notifier runs as its own process on the run's vhost and nx-27017 and mails to an aiosmtpd sink in this process
that counts. Its recipients are known first (`accounts.profile.updated` for USERS users); then each repeat publishes
`mails` `registration.device.registered` events, one per device, each naming one of those users, as registration
does for a device registered online. Each mail is rendered in the user's language from its template, recorded as a
delivery and sent over SMTP. Figure: mails per second from the first event published to the last mail received.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from bench.plan import Plan
from bench.rounds import Spread
from bench.world import TIMEOUT, MailSink, World, fresh_prefix, publish_events, smtp_sink, wait_until
from contracts.accounts import ProfileUpdated
from contracts.registration import DeviceRegisteredEvent, Warranty
from services.runtime.mongo import Database

USERS = 50
LANGUAGES = ("de", "en", "nb")


@dataclass
class MailRun:
    mails: int
    seconds: list[float] = field(default_factory=list)
    received: list[int] = field(default_factory=list)

    @property
    def per_s(self) -> Spread:
        return Spread.of(self.mails / seconds for seconds in self.seconds)

    def json(self) -> dict[str, Any]:
        return {"mails": self.mails, "mails_per_s": self.per_s.json(1), "seconds": Spread.of(self.seconds).json(2),
                "received": self.received}


def users(run: str) -> list[ProfileUpdated]:
    return [ProfileUpdated(user_id=f"u-{run}-{number}", email=f"user{number}@{run}.bench.example",
                           language=LANGUAGES[number % len(LANGUAGES)], username=f"user{number}-{run}",
                           first_name="Bench", last_name=f"User {number}", version=1) for number in range(USERS)]


def registrations(known: list[ProfileUpdated], count: int, first: int) -> list[DeviceRegisteredEvent]:
    bought = date.today() - timedelta(days=10)
    return [DeviceRegisteredEvent(
        device_id=f"d-mail-{first + number:07d}", serial_number=f"AK8N{first + number:07d}", model="ES5431dn",
        registered_by=known[number % len(known)].user_id, friendly_name=f"Printer {number}",
        warranty=Warranty(start_date=bought, end_date=bought + timedelta(days=3 * 365), months=36, extended=True),
        version=1) for number in range(count)]


async def measure(world: World, database: str, sink: MailSink, plan: Plan) -> MailRun:
    known = users(fresh_prefix("").strip("_"))
    await publish_events(world.amqp_url, known)

    async def all_known(db: Database) -> bool:
        return await db["recipients"].count_documents({}) >= len(known)

    async def check() -> bool:
        return await world.with_db(database, all_known)

    await wait_until(check, "the notifier knows its recipients")
    run = MailRun(plan.mails)
    for repeat in range(plan.repeats):
        before = len(sink.arrived)
        started = time.monotonic()
        await publish_events(world.amqp_url, registrations(known, plan.mails, repeat * plan.mails))
        while time.monotonic() < started + TIMEOUT:
            if len(sink.arrived) >= before + plan.mails:
                break
            await asyncio.sleep(0.02)
        run.received.append(len(sink.arrived) - before)
        run.seconds.append((sink.arrived[-1] if len(sink.arrived) > before else time.monotonic()) - started)
    return run


def run_mail(world: World, plan: Plan) -> MailRun:
    prefix = fresh_prefix("notifier")
    with smtp_sink() as (sink, port), world.service("notifier", prefix, smtp_host="127.0.0.1", smtp_port=str(port)):
        return asyncio.run(measure(world, f"{prefix}notifier", sink, plan))


def print_mail(run: MailRun) -> None:
    print(f"\nnotifier: {run.mails:,} device-registration mails to a local SMTP sink, median (range) of "
          f"{len(run.seconds)}\n")
    print("| mails | mails/s | seconds to the last mail | received |")
    print("|---|---|---|---|")
    print(f"| {run.mails:,} | {run.per_s.text(1)} | {Spread.of(run.seconds).text(2)} "
          f"| {', '.join(f'{count:,}' for count in run.received)} |")
