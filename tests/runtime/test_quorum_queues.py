"""Quorum queues (`PORTAL_QUEUE_TYPE=quorum`): the same guarantees as on classic queues, and a broker-side delivery
limit that dead-letters a poison message whose consumer dies on it each time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from pydantic import ValidationError

from contracts.client import PortalClient
from contracts.dead_letters import replay_dead_letters_command
from contracts.topology import dead_letter_queue, event_queue
from deploy.local import deps
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.topology import QueueMismatch, dead_letter_queue_arguments, queue_arguments
from tests.builders import amqp_channel, publish_event, random_id
from tests.conftest import Broker
from tests.runtime.sample_service import BROKEN, CRASH_ON_POISON, Fragile, Poison, listener, sample
from tests.support import dead_letters, eventually, running, start_service_process, wait_healthy

SAMPLE = "tests.runtime.sample_service"
FRAGILE_QUEUE = event_queue("listener", Fragile.routing_key)
POISON_QUEUE = event_queue("listener", Poison.routing_key)


@pytest.fixture
def quorum(settings: Settings) -> Settings:
    """Quorum queues; two attempts before a failing event is dead-lettered; a message is dead-lettered by the broker
    on its second return."""
    return settings.model_copy(update={"queue_type": "quorum", "delivery_limit": 1, "event_max_attempts": 2})


@pytest.fixture
async def services(quorum: Settings) -> AsyncIterator[tuple[ServiceInstance, ServiceInstance]]:
    async with running(sample, quorum) as sample_instance, running(listener, quorum) as listener_instance:
        yield sample_instance, listener_instance


def queue_types(rabbitmq: Broker, amqp_url: str) -> dict[str, str]:
    """`rabbitmqctl list_queues name type` of the test's vhost: no management plugin needed."""
    assert rabbitmq.vhosts is not None
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path.removeprefix("/"))
    node = ["-n", rabbitmq.vhosts.node] if rabbitmq.vhosts.node else []
    listed = subprocess.run(
        [deps.executable("rabbitmqctl"), *node, "list_queues", "-p", vhost, "name", "type", "--formatter", "json"],
        env=rabbitmq.vhosts.env, capture_output=True, text=True, check=True, timeout=60)
    return {queue["name"]: queue["type"] for queue in json.loads(listed.stdout)}


async def test_every_queue_and_dead_letter_queue_is_a_quorum_queue(
        services: tuple[ServiceInstance, ServiceInstance], rabbitmq: Broker, amqp_url: str) -> None:
    ours = {queue for instance in services for queue in instance.queues}
    expected = {name: "quorum" for queue in ours for name in (queue, dead_letter_queue(queue))}
    if rabbitmq.vhosts is not None:  # a vhost of the test's own on a broker rabbitmqctl reaches
        assert queue_types(rabbitmq, amqp_url) == expected
    settings = services[0].settings
    for queue, arguments in ((FRAGILE_QUEUE, queue_arguments(settings, FRAGILE_QUEUE)),
                             (dead_letter_queue(FRAGILE_QUEUE), dead_letter_queue_arguments(settings))):
        async with amqp_channel(amqp_url) as channel:
            await channel.declare_queue(queue, durable=True, arguments=arguments)  # as declared: accepted
        with pytest.raises(ChannelPreconditionFailed, match="x-queue-type"):  # the same but classic: refused
            async with amqp_channel(amqp_url) as channel:
                await channel.declare_queue(queue, durable=True, arguments={**arguments, "x-queue-type": "classic"})


async def test_a_command_is_answered_once_and_its_event_handled_once(
        services: tuple[ServiceInstance, ServiceInstance], portal: PortalClient) -> None:
    _, listening = services
    note_id, message_id = random_id(), uuid.uuid4().hex
    first = await portal.call("sample.open_note", {"note_id": note_id, "text": "x"}, message_id=message_id)
    again = await portal.call("sample.open_note", {"note_id": note_id, "text": "x"}, message_id=message_id)
    assert first == again == {"note_id": note_id, "writes": 1}

    async def handled() -> bool:
        return await listening.db.seen.find_one({"_id": note_id}) is not None
    await eventually(handled)
    await asyncio.sleep(1.0)  # room for a second, wrong, handling
    assert await listening.db.seen.find_one({"_id": note_id}) == {"_id": note_id, "times": 1}


async def test_a_failing_event_is_dead_lettered_after_its_attempts_with_why_and_a_replay_is_handled_once(
        services: tuple[ServiceInstance, ServiceInstance], amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    _, listening = services
    await listening.db.switches.insert_one({"_id": BROKEN})
    key = random_id()
    message_id = await publish_event(amqp_url, Fragile.routing_key, Fragile(key=key).model_dump(mode="json"))
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        found[:] = await dead_letters(portal, "listener", operator, FRAGILE_QUEUE)
        return bool(found)
    await eventually(listed, timeout=20)
    [dead] = found
    assert (dead["message_id"], dead["reason"], dead["attempts"], dead["count"]) == (message_id, "failed", 2, 1)
    assert dead["error"] == f"RuntimeError: {BROKEN} on purpose"
    assert dead["headers"] == {}  # nor the broker's x-delivery-count

    await listening.db.switches.delete_one({"_id": BROKEN})
    replay = replay_dead_letters_command("listener")
    assert await portal.call(replay, {"queue": FRAGILE_QUEUE, "message_id": message_id}, token=operator) == {
        "replayed": 1}

    async def handled() -> bool:
        return await listening.db.effects.find_one({"_id": key}) is not None
    await eventually(handled)
    await asyncio.sleep(1.0)  # room for a second, wrong, handling
    assert await listening.db.effects.find_one({"_id": key}) == {"_id": key, "times": 1}
    assert await dead_letters(portal, "listener", operator) == []


async def test_a_poison_message_that_kills_its_consumer_each_time_is_dead_lettered_by_the_broker(
        quorum: Settings, amqp_url: str, portal: PortalClient, operator: str, tmp_path: Path) -> None:
    quorum = quorum.model_copy(update={"claim_lease_seconds": 1.0})  # the dead consumer's claim runs out fast
    key = random_id()
    async with running(listener, quorum):  # declares the queues; stopped before the poison arrives
        pass
    message_id = await publish_event(amqp_url, Poison.routing_key, Poison(key=key).model_dump(mode="json"))
    # delivery_limit=1: delivered, returned by the dying consumer, delivered again, returned: dead-lettered.
    for _ in range(2):
        doomed = start_service_process(SAMPLE, quorum, "listener", extra_env={CRASH_ON_POISON: "1"},
                                       log_file=tmp_path / "listener.log")
        try:
            assert await asyncio.to_thread(doomed.wait, 30) != 0
        finally:
            doomed.kill()
    async with amqp_channel(amqp_url) as channel:
        async def dead_lettered() -> bool:
            dlq = await channel.declare_queue(dead_letter_queue(POISON_QUEUE), passive=True)
            return dlq.declaration_result.message_count == 1
        await eventually(dead_lettered)
        left = await channel.declare_queue(POISON_QUEUE, passive=True)
        assert left.declaration_result.message_count == 0

    async with running(listener, quorum) as survivor:  # consumes on: the poison is gone from its queue
        await wait_healthy(portal, "listener")
        [dead] = await dead_letters(portal, "listener", operator, POISON_QUEUE)
        poisoned = await survivor.db.poisoned.find_one({"_id": key})
    assert (dead["message_id"], dead["reason"], dead["error"], dead["count"]) == (message_id, "delivery_limit", None, 1)
    assert dead["body"] == {"key": key}
    assert poisoned == {"_id": key, "times": 2}


async def test_a_service_started_on_queues_of_the_other_type_refuses_to_start_and_says_why(
        settings: Settings, amqp_url: str, tmp_path: Path) -> None:
    classic = settings.model_copy(update={"queue_type": "classic"})
    quorum = settings.model_copy(update={"queue_type": "quorum"})
    async with running(listener, classic):
        pass
    instance = listener.instance(quorum)
    try:
        with pytest.raises(QueueMismatch) as refused:
            await instance.start()
    finally:
        await instance.stop()
    said = str(refused.value)
    assert said.startswith("the queue 'listener.") and "exists on the broker with other arguments" in said
    assert "(PORTAL_QUEUE_TYPE=quorum, PORTAL_DELIVERY_LIMIT=20; the broker says: 'x-" in said

    log = tmp_path / "listener.log"
    process = start_service_process(SAMPLE, quorum, "listener", log_file=log)
    try:
        assert await asyncio.to_thread(process.wait, 30) == 1
    finally:
        process.kill()
    # Its refusal; asyncio may still print "Task was destroyed but it is pending" after it as the process ends.
    last = next(line for line in reversed(log.read_text().splitlines()) if line.startswith("listener refuses"))
    assert last.startswith("listener refuses to start: the queue 'listener.")
    assert "PORTAL_QUEUE_TYPE=quorum, PORTAL_DELIVERY_LIMIT=20; the broker says: 'x-" in last
    assert last.endswith('see the README, "Quorum queues"')
    async with amqp_channel(amqp_url) as channel:  # the classic queues are left as they were
        await channel.declare_queue(POISON_QUEUE, durable=True, arguments=queue_arguments(classic, POISON_QUEUE))



def test_the_queue_type_is_classic_unless_set_and_only_classic_or_quorum_is_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTAL_QUEUE_TYPE", raising=False)
    assert Settings().queue_type == "classic"
    monkeypatch.setenv("PORTAL_QUEUE_TYPE", "quorum")
    assert Settings().queue_type == "quorum"
    for wrong in ("stream", "Quorum", ""):
        monkeypatch.setenv("PORTAL_QUEUE_TYPE", wrong)
        with pytest.raises(ValidationError, match="queue_type"):
            Settings()
    with pytest.raises(ValidationError, match="delivery_limit"):
        Settings(queue_type="quorum", delivery_limit=0)
