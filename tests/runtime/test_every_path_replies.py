"""No command is acked without a reply: odd headers and failing steps are answered, or the command is redelivered."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from faststream.rabbit import RabbitMessage
from pymongo.errors import ServerSelectionTimeoutError

from contracts.topology import COMMANDS_EXCHANGE, command_queue, dead_letter_queue
from services.runtime.claims import Claim
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import amqp_channel, drain_queue
from tests.runtime.sample_service import sample
from tests.support import running


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(sample, settings) as instance:
        yield instance


async def raw_call(amqp_url: str, command: str, body: dict[str, Any], headers: dict[str, Any],
                   message_id: str | None = None, wait: float = 10.0) -> list[dict[str, Any]]:
    """Every reply that arrives within `wait` seconds of the first (or of sending, if none does)."""
    replies: list[dict[str, Any]] = []
    async with amqp_channel(amqp_url) as channel:
        queue = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                                correlation_id=uuid.uuid4().hex, reply_to=queue.name,
                                                message_id=message_id or uuid.uuid4().hex, headers=headers),
                               routing_key=command)
        deadline = asyncio.get_running_loop().time() + wait
        while asyncio.get_running_loop().time() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            replies.append(json.loads(message.body))
            deadline = min(deadline, asyncio.get_running_loop().time() + 1.0)  # room for a duplicate
    return replies


@pytest.mark.parametrize("headers", [
    {"accept-language": 42},
    {"accept-language": {"primary": "de"}},
    {"accept-language": ["de"]},
])
async def test_a_language_header_that_is_not_a_string_is_answered_in_english(
        service: ServiceInstance, amqp_url: str, headers: dict[str, Any]) -> None:
    replies = await raw_call(amqp_url, "sample.open_note", {}, headers)
    assert len(replies) == 1
    assert replies[0]["error"]["code"] == "validation_failed"
    assert replies[0]["error"]["message"] == "Some fields are missing or invalid."


@pytest.mark.parametrize("authorization", [7, ["Bearer", "x"], {"token": "x"}])
async def test_an_authorization_header_that_is_not_a_string_is_unauthenticated(
        service: ServiceInstance, amqp_url: str, authorization: Any) -> None:
    replies = await raw_call(amqp_url, "sample.add_note", {"note_id": "h1", "text": "x"},
                             {"authorization": authorization})
    assert [reply["error"]["code"] for reply in replies] == ["unauthenticated"]


async def test_a_failing_claim_is_answered_internal_and_changes_nothing(
        service: ServiceInstance, amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def database_timeout(*args: Any, **kwargs: Any) -> None:
        raise ServerSelectionTimeoutError("the database did not answer in time")

    monkeypatch.setattr(service.claims, "claim", database_timeout)
    replies = await raw_call(amqp_url, "sample.open_note", {"note_id": "h2", "text": "x"}, {})
    assert [reply["error"]["code"] for reply in replies] == ["internal"]
    assert await service.db.notes.find_one({"_id": "h2"}) is None


async def test_a_reply_that_cannot_be_sent_leaves_the_command_for_redelivery_and_it_is_applied_once(
        service: ServiceInstance, amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    send_reply = service.reply
    attempts: list[str | None] = []

    async def fails_once(msg: RabbitMessage, reply: dict[str, Any]) -> None:
        attempts.append(msg.message_id)
        if len(attempts) == 1:
            raise ConnectionError("the channel closed under the reply")
        await send_reply(msg, reply)

    monkeypatch.setattr(service, "reply", fails_once)
    replies = await raw_call(amqp_url, "sample.open_note", {"note_id": "h3", "text": "x"}, {})
    assert len(attempts) == 2  # redelivered, not acked after the failed reply
    assert replies == [{"ok": True, "data": {"note_id": "h3", "writes": 1}}]
    note = await service.db.notes.find_one({"_id": "h3"})
    assert note is not None and note["writes"] == 1


async def test_a_reply_that_fails_again_after_redelivery_goes_to_the_dead_letter_queue_instead_of_looping(
        service: ServiceInstance, amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str | None] = []

    async def always_fails(msg: RabbitMessage, reply: dict[str, Any]) -> None:
        attempts.append(msg.message_id)
        raise ConnectionError("the reply cannot be published")

    monkeypatch.setattr(service, "reply", always_fails)
    assert await raw_call(amqp_url, "sample.read_note", {"note_id": "h4"}, {}, wait=3.0) == []
    assert len(attempts) == 2
    assert len(await drain_queue(amqp_url, dead_letter_queue(command_queue("sample.read_note")))) == 1


async def test_a_reply_stored_only_on_a_second_try_is_still_applied_once_and_answered_once(
        service: ServiceInstance, amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    complete = service.claims.complete
    calls: list[str] = []

    async def fails_once(claim: Claim, reply: dict[str, Any] | None = None) -> None:
        calls.append(claim.key)
        if len(calls) == 1:
            raise ServerSelectionTimeoutError("a blip")
        await complete(claim, reply)

    monkeypatch.setattr(service.claims, "complete", fails_once)
    message_id = uuid.uuid4().hex
    replies = await raw_call(amqp_url, "sample.slow", {"note_id": "h5", "seconds": 0}, {}, message_id=message_id)
    assert replies == [{"ok": True, "data": {"writes": 1}}]
    again = await raw_call(amqp_url, "sample.slow", {"note_id": "h5", "seconds": 0}, {}, message_id=message_id)
    assert again == replies
    runs = await service.db.runs.find_one({"_id": "h5"})
    assert runs is not None and runs["count"] == 1


async def test_a_handler_running_longer_than_the_lease_keeps_its_claim(settings: Settings, amqp_url: str) -> None:
    async with running(sample, settings.model_copy(update={"claim_lease_seconds": 0.6})) as service:
        message_id, body = uuid.uuid4().hex, {"note_id": "h6", "seconds": 2.0}
        first = asyncio.create_task(raw_call(amqp_url, "sample.slow", body, {}, message_id=message_id))
        await asyncio.sleep(0.3)
        second = await raw_call(amqp_url, "sample.slow", body, {}, message_id=message_id)
        assert await first == second == [{"ok": True, "data": {"writes": 1}}]
        runs = await service.db.runs.find_one({"_id": "h6"})
        assert runs is not None and runs["count"] == 1
