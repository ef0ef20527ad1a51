"""A command whose claim rides on its one write (`claim_in_write`) keeps every guarantee of a claimed command:
applied once, also for copies at once on two replicas; a copy gets the same reply; another caller's or another
body's copy is refused and changes nothing; a refusal stores nothing; a crash after the write loses nothing.

Each runs twice: in one round trip as the server allows (nx-27017's bulkWrite, or MongoDB 8's client-level bulk
write), and one write at a time, as on a MongoDB before 8.0."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator

import pytest
from pymongo import InsertOne
from pymongo.errors import DuplicateKeyError

from contracts.client import PortalClient
from services.runtime.claims import Claim, Route
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.runtime.sample_service import CRASH_AFTER_WRITE, sample
from tests.support import eventually, running, start_service_process, wait_healthy


@pytest.fixture(params=[None, Route.ONE_BY_ONE], ids=["one_round_trip", "one_write_at_a_time"])
async def service(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(sample, settings) as instance:
        instance.claims.route = request.param
        yield instance


async def note(instance: ServiceInstance, note_id: str) -> dict[str, object]:
    found = await instance.db.notes.find_one({"_id": note_id})
    assert found is not None
    return found


async def stored_replies(instance: ServiceInstance, message_id: str) -> int:
    return await instance.db.message_claims.count_documents({"_id": f"sample.put_note:{message_id}"})


async def test_a_command_is_applied_once_and_a_copy_gets_the_same_reply(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings)
    note_id, message_id = random_id(), uuid.uuid4().hex
    first = await portal.call("sample.put_note", {"note_id": note_id, "text": "x"}, token=token, message_id=message_id)
    again = await portal.call("sample.put_note", {"note_id": note_id, "text": "x"}, token=token, message_id=message_id)
    assert first == again == {"note_id": note_id, "writes": 1}
    assert (await note(service, note_id))["writes"] == 1
    assert await stored_replies(service, message_id) == 1


async def test_copies_arriving_at_once_on_two_replicas_are_applied_once_and_get_one_reply(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings)
    async with running(sample, settings) as other:
        other.claims.route = service.claims.route
        for _ in range(5):
            note_id, message_id = random_id(), uuid.uuid4().hex
            # Every copy reads the note before any writes: all would count themselves as the first write.
            replies = await asyncio.gather(*[
                portal.call("sample.put_note", {"note_id": note_id, "text": "x", "seconds": 0.2}, token=token,
                            message_id=message_id) for _ in range(4)])
            assert all(reply == {"note_id": note_id, "writes": 1} for reply in replies)
            assert (await note(service, note_id))["writes"] == 1


async def test_another_caller_or_another_body_under_a_used_message_id_is_refused_and_changes_nothing(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    owner, owner_claims = token_for(settings)
    stranger, _ = token_for(settings)
    note_id, other_note, message_id = random_id(), random_id(), uuid.uuid4().hex
    await portal.call("sample.put_note", {"note_id": note_id, "text": "mine"}, token=owner, message_id=message_id)

    by_stranger = await portal.send("sample.put_note", json.dumps({"note_id": note_id, "text": "mine"}).encode(),
                                    token=stranger, message_id=message_id)
    other_body = await portal.send("sample.put_note", json.dumps({"note_id": other_note, "text": "x"}).encode(),
                                   token=owner, message_id=message_id)

    for reply in (by_stranger, other_body):
        assert reply["ok"] is False and reply["error"]["code"] == "conflict"
        assert set(reply["error"]["fields"]) == {"message_id"}
    stored = await note(service, note_id)
    assert stored["writes"] == 1 and stored["owner"] == owner_claims.user_id and stored["text"] == "mine"
    assert await service.db.notes.find_one({"_id": other_note}) is None


async def test_a_refusal_before_the_write_stores_nothing_and_a_copy_runs_afresh(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings)
    note_id, message_id = random_id(), uuid.uuid4().hex
    refused = await portal.send("sample.put_note", json.dumps({"note_id": note_id, "text": "refuse"}).encode(),
                                token=token, message_id=message_id)
    assert refused["error"]["code"] == "conflict" and set(refused["error"]["fields"]) == {"text"}
    assert await stored_replies(service, message_id) == 0
    assert await service.db.notes.find_one({"_id": note_id}) is None


async def test_a_write_that_fails_leaves_nothing_claimed(service: ServiceInstance, portal: PortalClient) -> None:
    note_id, message_id = random_id(), uuid.uuid4().hex
    assert await portal.call("sample.insert_note", {"note_id": note_id, "text": "first"}) == {"note_id": note_id}

    refused = await portal.send("sample.insert_note", json.dumps({"note_id": note_id, "text": "second"}).encode(),
                                message_id=message_id)

    assert refused["error"]["code"] == "conflict" and set(refused["error"]["fields"]) == {"note_id"}
    assert await service.db.message_claims.count_documents({"_id": f"sample.insert_note:{message_id}"}) == 0
    assert (await note(service, note_id))["text"] == "first"


async def test_a_command_whose_process_died_after_its_write_is_answered_from_the_stored_reply(
        settings: Settings, portal: PortalClient) -> None:
    token, _ = token_for(settings)
    note_id, message_id = random_id(), uuid.uuid4().hex
    body = {"note_id": note_id, "text": "x"}
    doomed = start_service_process("tests.runtime.sample_service", settings, "sample",
                                   extra_env={CRASH_AFTER_WRITE: "1"})
    try:
        await wait_healthy(portal, "sample")
        with pytest.raises(TimeoutError):  # dies after its write, before replying
            await portal.call("sample.put_note", body, token=token, message_id=message_id, timeout=3)
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        doomed.kill()
    async with running(sample, settings) as restarted:
        # The redelivered command and a re-sent copy get the reply stored with the write.
        assert await portal.call("sample.put_note", body, token=token, message_id=message_id) == {
            "note_id": note_id, "writes": 1}

        async def event_published() -> bool:
            return "outbox" not in await note(restarted, note_id)
        await eventually(event_published)
        assert (await note(restarted, note_id))["writes"] == 1


async def test_commands_written_together_stop_only_at_their_own_failure(service: ServiceInstance) -> None:
    claims, notes = service.claims, service.db.notes
    taken, clashing = random_id(), random_id()
    await notes.insert_one({"_id": clashing})
    await claims.claim_with_write("batch", taken, "me", InsertOne({"_id": taken}, namespace=notes.full_name),
                                  {"first": True})

    def put(note_id: str) -> InsertOne[dict[str, object]]:
        return InsertOne({"_id": note_id, "written": True}, namespace=notes.full_name)

    # One loop turn: one batch (one ordered bulk write) when the server has it.
    before, copy, clash, after = await asyncio.gather(
        claims.claim_with_write("batch", random_id(), "me", put(random_id()), {}),
        claims.claim_with_write("batch", taken, "me", put(random_id()), {"first": False}),
        claims.claim_with_write("batch", clashing, "me", put(clashing), {}),
        claims.claim_with_write("batch", random_id(), "me", put(after_id := random_id()), {}),
        return_exceptions=True)

    assert isinstance(before, Claim) and before.owned
    assert isinstance(copy, Claim) and not copy.owned and copy.reply == {"first": True}
    assert isinstance(clash, DuplicateKeyError)
    assert await service.db.message_claims.find_one({"_id": f"batch:{clashing}"}) is None
    assert isinstance(after, Claim) and after.owned and await notes.find_one({"_id": after_id}) is not None
    assert await notes.count_documents({"written": True}) == 2
