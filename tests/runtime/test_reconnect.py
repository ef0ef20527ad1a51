"""A broker restart is survived: connections recover, consumers resume, the outbox drains; a reply the broker
never confirms does not strand the command."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from contracts.client import PortalClient
from deploy.local.deps import LocalRabbitMQ
from services.runtime import service as runtime_service
from services.runtime.settings import Settings
from tests.runtime.sample_service import listener, sample
from tests.support import eventually, private_rabbitmq, running, wait_healthy


@pytest.fixture
def private_broker() -> Iterator[LocalRabbitMQ]:
    """A RabbitMQ node of this test's own, so restarting or blocking it disturbs nobody."""
    with private_rabbitmq() as node:
        yield node


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


async def test_a_reply_never_confirmed_stores_the_reply_so_the_callers_copies_get_it(
        private_broker: LocalRabbitMQ, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stops confirming while the handler runs: the reply's publish gives up after its timeout, the claim
    is completed with the reply (a copy re-sent meanwhile would wait on it for ever otherwise), and once the node
    takes publishes again the redelivered command is answered from it, the handler not run again."""
    monkeypatch.setattr(runtime_service, "REPLY_TIMEOUT_SECONDS", 1.0)
    settings = settings.model_copy(update={"amqp_url": private_broker.url})
    note_id, message_id = uuid.uuid4().hex, uuid.uuid4().hex
    async with running(sample, settings) as service, PortalClient(private_broker.url, timeout=60) as portal:
        call = asyncio.ensure_future(portal.call("sample.slow", {"note_id": note_id, "seconds": 2},
                                                 message_id=message_id))

        async def handler_started() -> bool:
            return await service.db.runs.count_documents({"_id": note_id}) == 1
        await eventually(handler_started)
        private_broker.block_publishers()
        try:
            async def reply_stored() -> bool:
                claim = await service.db.message_claims.find_one({"_id": f"sample.slow:{message_id}"})
                return claim is not None and claim["done"]
            await eventually(reply_stored, timeout=15)
            claim = await service.db.message_claims.find_one({"_id": f"sample.slow:{message_id}"})
            assert claim is not None and claim["reply"] == {"ok": True, "data": {"writes": 1}}
        finally:
            private_broker.block_publishers(False)
        assert await asyncio.wait_for(call, 30) == {"writes": 1}
        await asyncio.sleep(1)  # the redelivered copy has been answered from the stored reply by now
        run = await service.db.runs.find_one({"_id": note_id})
        assert run is not None and run["count"] == 1
