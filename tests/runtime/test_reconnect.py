"""A broker restart is survived: connections recover, consumers resume, the outbox drains."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.client import PortalClient
from deploy.local.deps import LocalRabbitMQ
from services.runtime.settings import Settings
from tests.runtime.sample_service import listener, sample
from tests.support import eventually, running, wait_healthy


@pytest.fixture
def private_broker() -> Iterator[LocalRabbitMQ]:
    """A RabbitMQ node of this test's own, so restarting it disturbs nobody."""
    # Not under pytest's tmp_path: run as root, the node drops to the `rabbitmq` user,
    # which cannot enter pytest's private temporary folders.
    base = Path(tempfile.mkdtemp(prefix="portal-rabbitmq-"))
    node = LocalRabbitMQ(base)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_services_and_clients_carry_on_after_a_broker_restart(
        private_broker: LocalRabbitMQ, settings: Settings) -> None:
    settings = settings.model_copy(update={"amqp_url": private_broker.url})
    async with running(sample, settings) as service, running(listener, settings) as consumer, \
            PortalClient(private_broker.url, timeout=5) as portal:
        assert (await portal.call("sample.open_note", {"note_id": "before", "text": "x"}))["writes"] == 1

        private_broker.stop()
        private_broker.start()

        await wait_healthy(portal, "sample", timeout=60)
        assert (await portal.call("sample.open_note", {"note_id": "after", "text": "x"}))["writes"] == 1

        async def both_events_handled() -> bool:
            seen = await consumer.db.seen.count_documents({"_id": {"$in": ["before", "after"]}})
            return seen == 2
        await eventually(both_events_handled, timeout=30)
        assert await service.db.notes.count_documents({"outbox": {"$exists": True}}) == 0
