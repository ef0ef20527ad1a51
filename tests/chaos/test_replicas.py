"""Two replicas of every service on the same queues give the same results as one.

What it does: it runs the same mixed workload twice, each time on a vhost, databases and SMTP server of its own:
once with one process of every service, once with two of every service competing on the same queues. The workload
is every flow of the kill tests at once, without faults (sign-ups with the installed base arriving, device
registrations with acceptances of the terms arriving, readings and an operator's reminder run, orders, ticket
openings with the operator listing deliveries, devices renamed all along), then metering's own scheduler: a monthly
customer's devices are made known, the schedule is set back 40 days, and every replica's scheduler catches up on
those days at once. Each flow asserts its effects once and its mails once per recipient and subject; then the two
runs' counts (stored records, reminders, overdue notices, mails) must be equal, and the scheduled run must have
reminded at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.runtime.settings import Settings
from tests.builders import random_email, random_id
from tests.chaos.conftest import start_healthy, world_of
from tests.chaos.flows import (
    STREAM_SIZE,
    Summary,
    World,
    accounts_flow,
    assert_mailed_once,
    count,
    customer_provisioned,
    devices_known,
    metering_flow,
    notifier_flow,
    ordering_flow,
    provisioned_device,
    publish_all,
    registration_flow,
    today,
    user_activated,
    wait_stored,
)
from tests.conftest import Broker, fresh_database_prefix, fresh_vhost
from tests.support import eventually, smtp_server

pytestmark = pytest.mark.timeout(600)
SERVICES = ("accounts", "registration", "metering", "ordering", "ticketing", "notifier")
CATCH_UP_DAYS = 40  # over a month: every monthly period has an opening and a second reminder day in it


@contextlib.asynccontextmanager
async def separate_world(rabbitmq: Broker, mongo_url: str, settings: Settings) -> AsyncIterator[World]:
    """A world of its own: vhost, database prefix and SMTP server, all removed afterwards."""
    with fresh_vhost(rabbitmq) as amqp_url, fresh_database_prefix(mongo_url) as prefix, smtp_server() as mailbox:
        own = settings.model_copy(update={"amqp_url": amqp_url, "database_prefix": prefix,
                                          "smtp_host": mailbox.host, "smtp_port": mailbox.port})
        async with world_of(own, amqp_url, mailbox) as world:
            world.processes.extra_env.update({"PORTAL_METERING_SCHEDULER_SECONDS": "1",
                                              "PORTAL_METERING_CATCH_UP_DAYS": str(CATCH_UP_DAYS)})
            yield world


async def scheduled_reminders(world: World) -> Summary:
    """A monthly customer with devices and no readings, then the schedule set back: each replica's scheduler catches
    up on the missed days at once; each (recipient, period, kind) reminded once, each mail sent once."""
    customer, user_id, email = random_id("C-"), random_id("u"), random_email()
    devices = [provisioned_device(customer, last_date=today() - timedelta(days=200)) for _ in range(3)]
    await publish_all(world, customer_provisioned(customer, "monthly"), user_activated(user_id, email, customer),
                      *devices)
    await devices_known(world, "metering", devices)
    await wait_stored(world.db("metering").customers, [customer])
    await wait_stored(world.db("notifier").recipients, [user_id])
    db = world.db("metering")
    set_back = (today() - timedelta(days=CATCH_UP_DAYS + 1)).isoformat()
    await db.schedule.update_one({"_id": "daily"}, {"$set": {"last_day": set_back}}, upsert=True)

    async def caught_up() -> bool:
        state = await db.schedule.find_one({"_id": "daily"})
        return state is not None and state["last_day"] == today().isoformat()
    await eventually(caught_up, timeout=60, step=0.5)
    expected: set[tuple[str, str]] = set()
    async for reminder in db.reminders.find({"recipient.customer_number": customer}):
        wording = ("Reminder: your meter readings are still missing" if reminder["kind"] == "second"
                   else "Please submit your meter readings")
        expected.add((email, f"{wording} (billing period ending {reminder['period_end']})"))
    assert len(expected) >= 2, "the scheduler reminded of no opening and second reminder"
    mails = await assert_mailed_once(world, expected)
    overdue = await count(db.overdue, {"device_id": {"$in": [device.device_id for device in devices]}})
    return {"scheduled_reminders": len(expected), "scheduled_mails": mails, "overdue": overdue}


async def workload(world: World) -> Summary:
    summaries = await asyncio.gather(*(flow(world, None) for flow in (
        accounts_flow, registration_flow, metering_flow, ordering_flow, notifier_flow)))
    summary = {key: value for part in summaries for key, value in part.items()}
    return {**summary, **await scheduled_reminders(world)}


# Once an open finding (1 of 11 runs): a reply publish that never completed left its claim open, and the re-sent
# copies waited on it. A reply publish is now bounded (`REPLY_TIMEOUT_SECONDS`, tests/runtime/test_reconnect.py);
# it passed in every run since, CI's included, so it is a plain test again.
async def test_two_replicas_of_every_service_give_the_same_results_as_one(
        rabbitmq: Broker, mongo_url: str, chaos_settings: Settings) -> None:
    results: dict[int, Summary] = {}
    for replicas in (1, 2):
        async with separate_world(rabbitmq, mongo_url, chaos_settings) as world:
            await start_healthy(world, SERVICES, replicas=replicas)
            results[replicas] = await workload(world)
    print(f"one replica: {results[1]}\ntwo replicas: {results[2]}")
    assert results[1] == results[2]
    assert results[1]["tickets"] == results[1]["orders"] == STREAM_SIZE
