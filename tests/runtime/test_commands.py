"""Every command gets one reply in the catalogue's envelope, whatever its body or handler does."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

from contracts.client import InternalError, PortalClient, ValidationFailed
from services.runtime.mongo import mongo_client
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.runtime.sample_service import heavy_running, sample
from tests.support import running

NOT_AN_OBJECT = [b"not json", b'{"note_id": "a"', b"[1, 2]", b'"hello"', b"42", b"null",
                 b"\xff\xfe\x00{", '{"text": "ü"}'.encode("utf-16")]


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(sample, settings) as instance:
        yield instance


async def notes_written(instance: ServiceInstance, note_id: str) -> int:
    note = await instance.db.notes.find_one({"_id": note_id})
    return int(note["writes"]) if note else 0


@pytest.mark.parametrize("body", NOT_AN_OBJECT)
async def test_a_body_that_is_not_a_utf8_json_object_is_refused_as_invalid_message(
        service: ServiceInstance, portal: PortalClient, body: bytes) -> None:
    reply = await portal.send("sample.open_note", body)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "invalid_message"
    assert reply["error"]["message"]


async def test_schema_errors_name_every_bad_field_by_its_path(service: ServiceInstance,
                                                              portal: PortalClient) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await portal.call("sample.open_note", {"text": "", "address": {"street": "Main", "postal_code": "x"},
                                               "colour": "red"})
    assert set(refused.value.fields) == {"note_id", "text", "address.postal_code", "colour"}


async def test_an_oversized_field_is_refused_at_once_and_others_are_still_served(
        service: ServiceInstance, portal: PortalClient) -> None:
    huge = asyncio.create_task(portal.call("sample.open_note", {"note_id": "n", "text": "x" * 2_000_000}))
    health = await portal.health("sample")
    with pytest.raises(ValidationFailed) as refused:
        await huge
    assert health.status == "ok"
    assert "text" in refused.value.fields


async def test_a_reply_goes_to_reply_to_with_the_request_correlation_id(
        service: ServiceInstance, amqp_url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange("portal.commands", ensure=False)
        await exchange.publish(aio_pika.Message(b"{}", content_type="application/json", correlation_id="corr-42",
                                                message_id=uuid.uuid4().hex, reply_to=replies.name),
                               routing_key="sample.health")
        async with replies.iterator() as incoming:
            reply = await asyncio.wait_for(anext(incoming), 10)
            await reply.ack()
    assert reply.correlation_id == "corr-42"
    assert reply.content_type == "application/json"
    assert json.loads(reply.body)["data"]["service"] == "sample"


async def test_an_unexpected_exception_is_answered_internal_and_logged_with_the_correlation_id(
        service: ServiceInstance, portal: PortalClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    with pytest.raises(InternalError):
        await portal.call("sample.explode", {"note_id": "n1"})
    assert await notes_written(service, "n1") == 0
    logged = [record for record in caplog.records if "sample.explode failed" in record.getMessage()]
    assert logged and "correlation_id=" in logged[0].getMessage()


async def test_a_command_that_failed_unexpectedly_can_be_sent_again_and_runs_afresh(
        service: ServiceInstance, portal: PortalClient) -> None:
    message_id = uuid.uuid4().hex
    with pytest.raises(InternalError):
        await portal.call("sample.explode", {"note_id": "n1"}, message_id=message_id)
    # Same message_id, but the failure was not stored: the retry is handled, not replayed.
    refused = await portal.send("sample.explode", b'{"note_id": 5}', message_id=message_id)
    assert refused["error"]["code"] == "validation_failed"


async def test_a_resent_command_is_answered_the_same_and_applied_once(
        service: ServiceInstance, portal: PortalClient) -> None:
    message_id = uuid.uuid4().hex
    first = await portal.call("sample.open_note", {"note_id": "n2", "text": "hi"}, message_id=message_id)
    again = await portal.call("sample.open_note", {"note_id": "n2", "text": "hi"}, message_id=message_id)
    assert first == again == {"note_id": "n2", "writes": 1}
    assert await notes_written(service, "n2") == 1


async def test_a_refusal_is_not_stored_and_a_resent_copy_runs_again(service: ServiceInstance,
                                                                    portal: PortalClient) -> None:
    message_id = uuid.uuid4().hex
    first = await portal.send("sample.open_note", b'{"note_id": "n3", "text": "refuse"}', message_id=message_id)
    assert first["error"] == {"code": "conflict", "message": first["error"]["message"],
                              "fields": {"text": "refused on purpose"}}
    assert await service.db.message_claims.count_documents({}) == 0
    # The refused command changed nothing, so the same copy may run again and now succeed.
    again = await portal.send("sample.open_note", b'{"note_id": "n3", "text": "refuse"}', message_id=message_id)
    assert again == first


async def handler_runs(instance: ServiceInstance, note_id: str) -> int:
    found = await instance.db.runs.find_one({"_id": note_id})
    return int(found["count"]) if found else 0


async def test_two_copies_arriving_at_once_run_the_handler_once_and_are_answered_the_same(
        service: ServiceInstance, portal: PortalClient) -> None:
    message_id = uuid.uuid4().hex
    copies = [portal.call("sample.slow", {"note_id": "n4", "seconds": 0.3}, message_id=message_id)
              for _ in range(2)]
    first, second = await asyncio.gather(*copies)
    assert first == second == {"writes": 1}
    assert await notes_written(service, "n4") == 1
    assert await handler_runs(service, "n4") == 1


async def test_a_body_over_the_size_limit_is_refused_before_parsing(settings: Settings,
                                                                    portal: PortalClient) -> None:
    async with running(sample, settings.model_copy(update={"max_body_bytes": 1000})):
        reply = await portal.send("sample.open_note", json.dumps({"note_id": "n", "text": "x" * 990}).encode())
    assert reply["error"]["code"] == "validation_failed"
    assert set(reply["error"]["fields"]) == {"body"}


async def test_two_replicas_share_the_stored_replies(settings: Settings, portal: PortalClient) -> None:
    async with running(sample, settings) as one, running(sample, settings):
        message_id = uuid.uuid4().hex
        replies = await asyncio.gather(*[
            portal.call("sample.slow", {"note_id": "n5", "seconds": 0.2}, message_id=message_id)
            for _ in range(4)])
        assert all(reply == {"writes": 1} for reply in replies)
        assert await notes_written(one, "n5") == 1
        assert await handler_runs(one, "n5") == 1


@pytest.mark.parametrize(("header", "expected"), [
    ("de", "Einige Felder fehlen oder sind ungültig."),
    ("nb-NO,nb;q=0.9", "Noen felt mangler eller er ugyldige."),
    ("en-GB", "Some fields are missing or invalid."),
    ("fr", "Some fields are missing or invalid."),
    (None, "Some fields are missing or invalid."),
])
async def test_error_messages_follow_accept_language_with_english_as_fallback(
        service: ServiceInstance, portal: PortalClient, header: str | None, expected: str) -> None:
    reply = await portal.send("sample.open_note", b"{}", lang=header)
    assert reply["error"]["message"] == expected


async def test_the_stored_reply_expires_after_the_configured_days(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    message_id = uuid.uuid4().hex
    await portal.call("sample.open_note", {"note_id": "n6", "text": "x"}, message_id=message_id)
    client = mongo_client(settings.mongodb_url, 5000)
    async with client:
        stored = await client[settings.database_name("sample")].message_claims.find_one(
            {"_id": f"sample.open_note:{message_id}"})
        indexes = await client[settings.database_name("sample")].message_claims.index_information()
    assert stored is not None and stored["done"]  # nx-27017 returns booleans as 1
    days = (stored["expires_at"] - stored["lease_until"]).total_seconds() / 86400
    assert abs(days - settings.idempotency_days) < 0.01
    assert any(index.get("expireAfterSeconds") == 0 for index in indexes.values())


async def test_unauthenticated_calls_to_commands_needing_a_token_are_refused(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    body = {"note_id": random_id(), "text": "x"}
    reply = await portal.send("sample.add_note", json.dumps(body).encode())
    assert reply["error"]["code"] == "unauthenticated"
    token, claims = token_for(settings)
    data = await portal.call("sample.add_note", body, token=token)
    assert data["writes"] == 1
    note = await service.db.notes.find_one({"_id": body["note_id"]})
    assert note is not None and note["owner"] == claims.user_id


async def test_a_command_with_its_own_prefetch_is_taken_that_many_at_a_time(
        service: ServiceInstance, portal: PortalClient) -> None:
    heavy_running[1] = 0
    await asyncio.gather(*[portal.call("sample.heavy", {"seconds": 0.3}) for _ in range(3)])
    assert heavy_running[1] == 1
