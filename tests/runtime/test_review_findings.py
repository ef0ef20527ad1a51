"""Findings of the adversarial review of dead letters, claim_in_write and the batcher: each test proves one."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import InsertOne
from pymongo.errors import DuplicateKeyError

from contracts.accounts import SessionRevoked
from contracts.client import PortalClient
from services.runtime.claims import Claim, Route
from services.runtime.outbox import inserted, with_events
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id, token_for
from tests.runtime.sample_service import sample
from tests.support import running


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(sample, settings) as instance:
        yield instance


async def test_a_failure_late_in_a_large_batch_is_seen(service: ServiceInstance) -> None:
    """256 commands share one ordered bulk write of 768 operations: the failure of the last must reach it."""
    claims, notes = service.claims, service.db.notes
    clashing = random_id()
    await notes.insert_one({"_id": clashing})

    def put(note_id: str) -> InsertOne[dict[str, object]]:
        return InsertOne({"_id": note_id, "written": True}, namespace=notes.full_name)

    outcomes = await asyncio.gather(
        *(claims.claim_with_write("big", random_id(), "me", put(random_id()), {}) for _ in range(255)),
        claims.claim_with_write("big", clashing, "me", put(clashing), {}),
        return_exceptions=True)
    assert all(isinstance(one, Claim) and one.owned for one in outcomes[:-1])
    assert isinstance(outcomes[-1], DuplicateKeyError), outcomes[-1]
    assert service.claims.route is Route.OWN_DATABASE  # nx-27017 told apart: its own bulkWrite, one round trip
    assert await service.db.message_claims.find_one({"_id": f"big:{clashing}"}) is None


@pytest.mark.parametrize("route", [None, Route.ONE_BY_ONE], ids=["one_round_trip", "one_write_at_a_time"])
async def test_a_copy_of_a_command_whose_reply_was_not_stored_after_its_write_is_answered_not_internal(
        service: ServiceInstance, portal: PortalClient, settings: Settings, route: Route | None) -> None:
    """One write at a time (MongoDB before 8.0) the claim, the write and the stored reply are three round trips:
    a kill between the write and the stored reply leaves an open claim and the write applied. The copy that takes
    the claim over applies the write again, filtered with `not_applied` as write_once asks: an upsert then clashes
    on its key, and every copy was answered `internal` for ever instead of the command's reply. Now the copy finds
    the document marked with the command and stores its own reply."""
    service.claims.route = route
    token, _ = token_for(settings)
    note_id, message_id = random_id(), uuid.uuid4().hex
    body = {"note_id": note_id, "text": "x"}
    assert await portal.call("sample.put_note", body, token=token, message_id=message_id) == {
        "note_id": note_id, "writes": 1}
    # The state a kill between the write and the stored reply leaves: the claim open, its holder gone.
    await service.db.message_claims.update_one(
        {"_id": f"sample.put_note:{message_id}"},
        {"$set": {"done": False, "reply": None, "owner": "killed", "lease_until": datetime.now(UTC) - timedelta(1)}})

    copies = [await portal.send("sample.put_note", json.dumps(body).encode(), token=token, message_id=message_id)
              for _ in range(2)]

    # The reply the killed worker computed is lost; any success is right, `internal` for every copy is not.
    assert all(copy["ok"] for copy in copies), copies
    assert (await service.db.notes.find_one({"_id": note_id}) or {})["writes"] == 1



async def test_a_revoked_sessions_claim_in_write_command_is_refused_changes_nothing_and_claims_nothing(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, claims = token_for(settings)
    now = datetime.now(UTC)
    await service.revocations.add(SessionRevoked(session_id=claims.session_id, revoked_at=now,
                                                 until=now + timedelta(hours=2)))
    note_id, message_id = random_id(), uuid.uuid4().hex

    for _ in range(2):
        reply = await portal.send("sample.put_note", json.dumps({"note_id": note_id, "text": "x"}).encode(),
                                  token=token, message_id=message_id)
        assert reply["ok"] is False and reply["error"]["code"] == "unauthenticated"
    assert await service.db.notes.find_one({"_id": note_id}) is None
    assert await service.db.message_claims.find_one({"_id": f"sample.put_note:{message_id}"}) is None


async def test_a_copy_taking_over_an_insert_applied_before_its_reply_was_stored_finds_it_applied(
        service: ServiceInstance) -> None:
    """Review finding. `write_once` asks to mark the write with `with_events(..., command_id=ctx.message_id)`, and
    `claim_with_write` promises that a copy taking over finds "its insert" marked. An insert is built from that
    update with `inserted(...)`, which keeps `$set` and `$inc` but drops the `$push` that records the command
    (`applied_commands`): the inserted document carries no mark, `_applied_before` finds none, and every copy of a
    command whose worker died between its insert and its stored reply fails on the duplicate key (`internal`, or
    the handler's refusal) although the command was applied."""
    notes, message_id, note_id = service.db.notes, uuid.uuid4().hex, random_id()
    document = inserted({"_id": note_id}, with_events({"$set": {"text": "x"}}, [], command_id=message_id))
    write = InsertOne(document, namespace=notes.full_name)
    assert (await service.claims.claim_with_write("insert", message_id, "me", write, {"n": 1}, marker=message_id)).owned
    # The state a kill between the insert and the stored reply leaves: the claim open, its holder gone.
    await service.db.message_claims.update_one(
        {"_id": f"insert:{message_id}"},
        {"$set": {"done": False, "reply": None, "owner": "killed", "lease_until": datetime.now(UTC) - timedelta(1)}})
    again = InsertOne(document, namespace=notes.full_name)
    copy = await service.claims.claim_with_write("insert", message_id, "me", again, {"n": 2}, marker=message_id)
    assert copy.owned
