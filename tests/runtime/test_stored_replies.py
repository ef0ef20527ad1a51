"""A stored reply answers only the caller who sent the command, with the same body; only state changes are kept."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from contracts.accounts import SessionRevoked
from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import token_for
from tests.runtime.sample_service import sample
from tests.support import running


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(sample, settings) as instance:
        yield instance


async def stored_replies(instance: ServiceInstance) -> int:
    return await instance.db.message_claims.count_documents({})


async def test_another_caller_presenting_a_stored_message_id_is_refused_and_changes_nothing(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    owner, owner_claims = token_for(settings)
    stranger, _ = token_for(settings)
    message_id, body = uuid.uuid4().hex, {"note_id": "r1", "text": "mine"}
    assert (await portal.call("sample.add_note", body, token=owner, message_id=message_id))["writes"] == 1

    reply = await portal.send("sample.add_note", json.dumps(body).encode(), token=stranger, message_id=message_id)

    assert reply["ok"] is False and reply["error"]["code"] == "conflict"
    assert set(reply["error"]["fields"]) == {"message_id"}
    note = await service.db.notes.find_one({"_id": "r1"})
    assert note is not None and note["owner"] == owner_claims.user_id and note["writes"] == 1


async def test_another_session_of_the_same_user_is_another_caller(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    first, claims = token_for(settings)
    second, _ = token_for(settings, user_id=claims.user_id)
    message_id, body = uuid.uuid4().hex, {"note_id": "r2", "text": "x"}
    await portal.call("sample.add_note", body, token=first, message_id=message_id)
    reply = await portal.send("sample.add_note", json.dumps(body).encode(), token=second, message_id=message_id)
    assert reply["error"]["code"] == "conflict"


async def test_the_same_caller_with_another_body_under_a_stored_message_id_is_refused(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings)
    message_id = uuid.uuid4().hex
    await portal.call("sample.add_note", {"note_id": "r3", "text": "first"}, token=token, message_id=message_id)

    reply = await portal.send("sample.add_note", b'{"note_id": "r3", "text": "second"}', token=token,
                              message_id=message_id)

    assert reply["error"]["code"] == "conflict"
    note = await service.db.notes.find_one({"_id": "r3"})
    assert note is not None and note["text"] == "first"


async def test_an_anonymous_copy_with_another_body_is_refused(service: ServiceInstance, portal: PortalClient) -> None:
    message_id = uuid.uuid4().hex
    await portal.call("sample.open_note", {"note_id": "r4", "text": "first"}, message_id=message_id)
    reply = await portal.send("sample.open_note", b'{"note_id": "r5", "text": "other"}', message_id=message_id)
    assert reply["error"]["code"] == "conflict"
    assert await service.db.notes.find_one({"_id": "r5"}) is None


async def test_the_same_body_with_keys_in_another_order_is_the_same_command(
        service: ServiceInstance, portal: PortalClient) -> None:
    message_id = uuid.uuid4().hex
    first = await portal.send("sample.open_note", b'{"note_id": "r6", "text": "a"}', message_id=message_id)
    again = await portal.send("sample.open_note", b'{"text": "a",  "note_id": "r6"}', message_id=message_id)
    assert first == again and first["ok"]


async def test_a_stored_reply_is_not_served_without_a_token(service: ServiceInstance, portal: PortalClient,
                                                            settings: Settings) -> None:
    token, _ = token_for(settings)
    message_id, body = uuid.uuid4().hex, json.dumps({"note_id": "r7", "text": "x"}).encode()
    assert (await portal.send("sample.add_note", body, token=token, message_id=message_id))["ok"]
    reply = await portal.send("sample.add_note", body, message_id=message_id)
    assert reply["error"]["code"] == "unauthenticated"


async def test_a_stored_reply_is_not_served_to_a_revoked_session(service: ServiceInstance, portal: PortalClient,
                                                                 settings: Settings) -> None:
    token, claims = token_for(settings)
    message_id, body = uuid.uuid4().hex, json.dumps({"note_id": "r8", "text": "x"}).encode()
    assert (await portal.send("sample.add_note", body, token=token, message_id=message_id))["ok"]
    await service.revocations.add(SessionRevoked(session_id=claims.session_id, user_id=claims.user_id,
                                                 revoked_at=datetime.now(UTC), until=claims.expires_at))
    reply = await portal.send("sample.add_note", body, token=token, message_id=message_id)
    assert reply["error"]["code"] == "unauthenticated"


async def test_read_only_answers_are_not_stored(service: ServiceInstance, portal: PortalClient) -> None:
    await portal.call("sample.open_note", {"note_id": "r9", "text": "x"})
    assert await stored_replies(service) == 1
    for _ in range(20):
        assert (await portal.call("sample.read_note", {"note_id": "r9"}))["text"] == "x"
    await portal.health("sample")
    assert await stored_replies(service) == 1


async def test_refusals_before_the_command_ran_are_not_stored(service: ServiceInstance, portal: PortalClient,
                                                              settings: Settings) -> None:
    operator_only, _ = token_for(settings)
    refusals = [
        await portal.send("sample.open_note", b"not json"),
        await portal.send("sample.open_note", b'{"note_id": 5}'),
        await portal.send("sample.add_note", b'{"note_id": "r10", "text": "x"}'),
        await portal.send("sample.add_note", b'{"note_id": "r10", "text": "x"}', token="garbled"),
        await portal.send("sample.operator_only", b"{}", token=operator_only),
    ]
    assert [reply["error"]["code"] for reply in refusals] == [
        "invalid_message", "validation_failed", "unauthenticated", "unauthenticated", "forbidden"]
    assert await stored_replies(service) == 0


async def test_a_message_id_reused_by_another_caller_after_its_reply_expired_is_a_new_command(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    owner, _ = token_for(settings)
    stranger, stranger_claims = token_for(settings)
    message_id, body = uuid.uuid4().hex, {"note_id": "r11", "text": "x"}
    await portal.call("sample.add_note", body, token=owner, message_id=message_id)
    await service.db.message_claims.delete_many({})  # as the TTL index does after PORTAL_IDEMPOTENCY_DAYS

    # Not mistaken for a copy of the owner's command, which the note remembers as applied.
    assert (await portal.call("sample.add_note", body, token=stranger, message_id=message_id))["writes"] == 2
    note = await service.db.notes.find_one({"_id": "r11"})
    assert note is not None and note["owner"] == stranger_claims.user_id


async def test_a_revoked_session_claims_nothing_though_its_claim_is_taken_while_the_revocation_is_looked_up(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, claims = token_for(settings)
    other, other_claims = token_for(settings)
    await service.revocations.add(SessionRevoked(session_id=claims.session_id, user_id=claims.user_id,
                                                 revoked_at=datetime.now(UTC), until=claims.expires_at))
    message_id, body = uuid.uuid4().hex, json.dumps({"note_id": "r12", "text": "x"}).encode()
    assert (await portal.send("sample.add_note", body, token=token, message_id=message_id))["error"]["code"] == \
        "unauthenticated"

    # A claim left behind would make the same message id another caller's (`conflict`) for days.
    reply = await portal.send("sample.add_note", body, token=other, message_id=message_id)

    assert reply["ok"] and reply["data"]["writes"] == 1
    note = await service.db.notes.find_one({"_id": "r12"})
    assert note is not None and note["owner"] == other_claims.user_id
