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

from contracts.topology import COMMANDS_EXCHANGE
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import amqp_channel
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
