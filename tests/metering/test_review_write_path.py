"""Review finding on the relay woken for the collections `write_once` wrote, fixed: the test failed before the fix."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime

import pytest

from contracts import metering as api
from contracts.client import PortalClient
from services.metering.store import OVERDUE, MeteringStore
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.readmodels import provision_device
from tests.support import eventually

pytestmark = pytest.mark.asyncio


async def test_events_written_without_a_wake_go_out_while_readings_keep_waking_the_relay(
        settings: Settings, portal: PortalClient, amqp_url: str, metering: ServiceInstance) -> None:
    """The scheduler (a background loop, no command) writes reminders and overdue notices with their events and wakes
    nobody: the poll, a drain of every collection, finds them. Each submit_reading wakes the relay for `readings`
    only. Found: the poll came only when a wait for a wake timed out, so while readings arrived more often than the
    poll (the reading window, when reminders and overdue notices are written) the notice stayed in its outbox.
    Fixed: a drain of every collection at least every `poll_seconds`, however often wakes come."""
    device = await provision_device(amqp_url, metering, last={"mono": 100, "color": 100})
    token, _ = token_for(settings, customer_number="C-1000")
    stop = asyncio.Event()

    async def readings() -> None:
        value = 200
        while not stop.is_set():
            await portal.call("metering.submit_reading", {"device_id": device["device_id"], "readings": [
                {"counter": "mono", "value": value}, {"counter": "color", "value": value}]}, token=token)
            value += 1
            await asyncio.sleep(0.1)

    load = asyncio.create_task(readings())
    try:
        await asyncio.sleep(1.0)  # the readings wake the relay in turn
        notice_id = random_id("overdue-")
        event = api.ReadingOverdue(device_id=device["device_id"], serial_number=device["serial_number"],
                                   model=device["model"], customer_number="C-1000", period_end=date(2026, 9, 30),
                                   window_closed=date(2026, 10, 10), detected_at=datetime.now(UTC))
        # What the scheduler's run does: insert the notice with its event, outside any command.
        assert await MeteringStore(metering.db).insert_once(OVERDUE, [({"_id": notice_id}, [event])]) == 1

        async def published() -> bool:
            notice = await metering.db[OVERDUE].find_one({"_id": notice_id})
            return notice is not None and "outbox" not in notice

        await eventually(published, timeout=4.0)  # eight polls
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await load
