"""Dead letters: an operator lists them per queue with why and the original, and replays one or all, handled once."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aio_pika
import pytest
from faststream.rabbit import RabbitMessage

from contracts.client import PortalClient
from contracts.dead_letters import list_dead_letters_command, replay_dead_letters_command
from contracts.topology import dead_letter_queue, event_queue
from services.notifier.app import service as notifier
from services.runtime import dead_letters as dead_letters_module
from services.runtime.events import DEAD_LETTER_HEADER
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import amqp_channel, drain_queue, publish_event, random_id, token_for
from tests.runtime.sample_service import BROKEN, Fragile, NoteAdded, listener, sample
from tests.support import EventTap, dead_letters, eventually, outcome, running

FRAGILE_QUEUE = event_queue("listener", Fragile.routing_key)
NOTES_QUEUE = event_queue("listener", NoteAdded.routing_key)
LIST, REPLAY = list_dead_letters_command("listener"), replay_dead_letters_command("listener")


@pytest.fixture
def quick(settings: Settings) -> Settings:
    """Two attempts before a failing event is dead-lettered."""
    return settings.model_copy(update={"event_max_attempts": 2})


@pytest.fixture
async def service(quick: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(listener, quick) as instance:
        yield instance


async def break_handler(instance: ServiceInstance) -> None:
    await instance.db.switches.insert_one({"_id": BROKEN})


async def fix_handler(instance: ServiceInstance) -> None:
    await instance.db.switches.delete_one({"_id": BROKEN})


async def effects(instance: ServiceInstance, key: str) -> int:
    found = await instance.db.effects.find_one({"_id": key})
    return int(found["times"]) if found else 0


async def dead_fragile(amqp_url: str, portal: PortalClient, operator: str, *keys: str,
                       headers: dict[str, Any] | None = None) -> list[str]:
    """Publish a Fragile event per key (the handler broken) and wait until each is dead-lettered."""
    before = len(await dead_letters(portal, "listener", operator, FRAGILE_QUEUE))
    message_ids = [await publish_event(amqp_url, Fragile.routing_key, Fragile(key=key).model_dump(mode="json"),
                                       headers=headers) for key in keys]

    async def all_dead() -> bool:
        return len(await dead_letters(portal, "listener", operator, FRAGILE_QUEUE)) == before + len(keys)
    await eventually(all_dead, timeout=20)
    return message_ids


async def test_a_failing_event_is_listed_with_its_reason_original_body_and_headers_but_no_token(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    key = random_id()
    [message_id] = await dead_fragile(amqp_url, portal, operator, key, headers={
        "authorization": "Bearer secret-token-of-the-sender", "accept-language": "de", "x-trace": "t-1"})

    [dead] = await dead_letters(portal, "listener", operator)
    assert dead["queue"] == FRAGILE_QUEUE
    assert dead["message_id"] == message_id
    assert dead["routing_key"] == Fragile.routing_key
    assert dead["reason"] == "failed"
    assert dead["error"] == f"RuntimeError: {BROKEN} on purpose"
    assert dead["attempts"] == 2
    assert dead["count"] == 1
    assert dead["dead_lettered_at"]
    assert dead["body"] == {"key": key} and dead["body_encoding"] == "json"
    assert dead["headers"] == {"accept-language": "de", "x-trace": "t-1"}
    assert "secret-token-of-the-sender" not in str(await portal.call(LIST, {}, token=operator))


async def test_listing_consumes_nothing_and_pages_over_the_queues_in_order(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    first = await dead_fragile(amqp_url, portal, operator, "a", "b")
    await publish_event(amqp_url, NoteAdded.routing_key, b"not json")

    async def three() -> bool:
        return bool((await portal.call(LIST, {}, token=operator))["total"] == 3)
    await eventually(three)

    whole = await portal.call(LIST, {}, token=operator)
    assert await portal.call(LIST, {}, token=operator) == whole  # nothing consumed, the order kept
    # Queue by queue (by name), oldest first.
    assert [(item["queue"], item["message_id"]) for item in whole["items"]][:2] == [
        (FRAGILE_QUEUE, first[0]), (FRAGILE_QUEUE, first[1])]
    assert whole["items"][2]["queue"] == NOTES_QUEUE
    one = await portal.call(LIST, {"page": 1, "page_size": 2}, token=operator)
    two = await portal.call(LIST, {"page": 2, "page_size": 2}, token=operator)
    assert one["total"] == two["total"] == 3
    assert one["items"] + two["items"] == whole["items"]
    only_notes = await portal.call(LIST, {"queue": NOTES_QUEUE}, token=operator)
    assert only_notes["total"] == 1 and only_notes["items"] == whole["items"][2:]


@pytest.mark.parametrize(("body", "shown", "encoding"), [
    (b"not json", "not json", "text"),
    (b'{"note_id": 1}', {"note_id": 1}, "json"),
    (b"\xff\x00", "/wA=", "base64"),
])
async def test_an_undecodable_event_is_listed_with_why_and_its_body_as_it_came(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str,
        body: bytes, shown: Any, encoding: str) -> None:
    message_id = await publish_event(amqp_url, NoteAdded.routing_key, body)
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        found[:] = await dead_letters(portal, "listener", operator, NOTES_QUEUE)
        return bool(found)
    await eventually(listed)
    [dead] = found
    assert (dead["message_id"], dead["reason"], dead["attempts"]) == (message_id, "undecodable", None)
    assert dead["error"]
    assert (dead["body"], dead["body_encoding"], dead["body_size"]) == (shown, encoding, len(body))


async def test_replaying_one_by_message_id_handles_it_and_leaves_the_others(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    first, second = await dead_fragile(amqp_url, portal, operator, "one", "two")
    await fix_handler(service)

    replayed = await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "message_id": first}, token=operator)

    assert replayed == {"replayed": 1}

    async def handled() -> bool:
        return await effects(service, "one") == 1
    await eventually(handled)
    assert await effects(service, "two") == 0
    assert [dead["message_id"] for dead in await dead_letters(portal, "listener", operator)] == [second]


async def test_replaying_all_puts_every_dead_letter_back_with_its_attempts_reset(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    await dead_fragile(amqp_url, portal, operator, "one", "two")
    await fix_handler(service)

    assert await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "all": True}, token=operator) == {"replayed": 2}

    async def handled() -> bool:
        return await effects(service, "one") == 1 and await effects(service, "two") == 1
    await eventually(handled)
    assert await dead_letters(portal, "listener", operator) == []


async def test_a_replay_goes_to_its_own_queue_only_and_fails_again_with_full_attempts(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    async with EventTap(amqp_url) as tap:
        [message_id] = await dead_fragile(amqp_url, portal, operator, "again")
        await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "message_id": message_id}, token=operator)

        async def dead_again() -> bool:
            found = await dead_letters(portal, "listener", operator)
            return bool(found) and found[0]["count"] == 2
        await eventually(dead_again, timeout=20)
        [dead] = await dead_letters(portal, "listener", operator)
    assert (dead["message_id"], dead["attempts"]) == (message_id, 2)  # two more attempts, not one
    assert len(tap.named(Fragile.routing_key)) == 1  # the original publish only: nothing went to portal.events


async def test_the_same_dead_letter_replayed_twice_is_handled_once(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    body = Fragile(key="twice").model_dump(mode="json")
    [message_id] = await dead_fragile(amqp_url, portal, operator, "twice")
    await fix_handler(service)
    # What a crash between a replay's confirm and its ack leaves: the dead letter is still there after its copy.
    await put_dead_letter(amqp_url, FRAGILE_QUEUE, body, message_id)
    first = await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "message_id": message_id}, token=operator)

    async def handled() -> bool:
        return await effects(service, "twice") == 1
    await eventually(handled)
    await put_dead_letter(amqp_url, FRAGILE_QUEUE, body, message_id)
    second = await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "all": True}, token=operator)
    await publish_event(amqp_url, Fragile.routing_key, Fragile(key="later").model_dump(mode="json"))

    async def later_handled() -> bool:
        return await effects(service, "later") == 1
    await eventually(later_handled)
    assert (first, second) == ({"replayed": 2}, {"replayed": 1})
    assert await dead_letters(portal, "listener", operator) == []
    assert await effects(service, "twice") == 1


async def test_a_re_sent_replay_command_replays_nothing_more(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    await break_handler(service)
    await dead_fragile(amqp_url, portal, operator, "first")
    command_id = uuid.uuid4().hex
    assert await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "all": True}, token=operator,
                             message_id=command_id) == {"replayed": 1}

    async def first_dead_again() -> bool:
        return [dead["count"] for dead in await dead_letters(portal, "listener", operator)] == [2]
    await eventually(first_dead_again, timeout=20)
    await dead_fragile(amqp_url, portal, operator, "second")

    assert await portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "all": True}, token=operator,
                             message_id=command_id) == {"replayed": 1}
    assert len(await dead_letters(portal, "listener", operator)) == 2


async def test_a_command_the_broker_dead_lettered_is_listed_with_its_x_death_and_replayed_once(
        settings: Settings, portal: PortalClient, operator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    customer, _ = token_for(settings)
    async with running(sample, settings) as instance:
        send_reply = instance.reply

        async def fails_for_notes(msg: RabbitMessage, reply: dict[str, Any]) -> None:
            if msg.raw_message.routing_key == "sample.add_note":
                raise ConnectionError("the reply cannot be published")
            await send_reply(msg, reply)
        monkeypatch.setattr(instance, "reply", fails_for_notes)
        with pytest.raises(TimeoutError):  # applied, its reply failed twice: the runtime rejected it
            await portal.call("sample.add_note", {"note_id": "n1", "text": "x"}, token=customer, timeout=3)
        found: list[dict[str, Any]] = []

        async def listed() -> bool:
            found[:] = await dead_letters(portal, "sample", operator)
            return bool(found)
        await eventually(listed)
        [dead] = found
        assert (dead["queue"], dead["routing_key"], dead["reason"], dead["error"], dead["count"]) == (
            "sample.add_note", "sample.add_note", "rejected", None, 1)
        assert dead["body"] == {"note_id": "n1", "text": "x"} and dead["headers"] == {}  # no authorization
        monkeypatch.undo()

        replayed = await portal.call(replay_dead_letters_command("sample"), {"queue": "sample.add_note", "all": True},
                                     token=operator)

        async def gone() -> bool:
            return await dead_letters(portal, "sample", operator) == []
        await eventually(gone)
        note = await instance.db.notes.find_one({"_id": "n1"})
    assert replayed == {"replayed": 1}
    assert note is not None and note["writes"] == 1  # the stored reply answered the replay


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.DEALER])
async def test_customers_and_dealers_may_neither_list_nor_replay(
        service: ServiceInstance, portal: PortalClient, settings: Settings, role: Role) -> None:
    token, _ = token_for(settings, role)
    assert await outcome(portal, LIST, {}, token=token) == "forbidden"
    assert await outcome(portal, REPLAY, {"queue": FRAGILE_QUEUE, "all": True}, token=token) == "forbidden"
    assert await outcome(portal, LIST, {}) == "unauthenticated"


async def test_an_unknown_queue_or_message_and_an_unclear_replay_are_refused(
        service: ServiceInstance, portal: PortalClient, operator: str) -> None:
    assert await outcome(portal, LIST, {"queue": "metering.on.nothing"}, token=operator) == "validation_failed"
    assert await outcome(portal, LIST, {"queue": dead_letter_queue(FRAGILE_QUEUE)},
                         token=operator) == "validation_failed"
    assert await outcome(portal, REPLAY, {"queue": "nothing", "all": True}, token=operator) == "validation_failed"
    assert await outcome(portal, REPLAY, {"queue": FRAGILE_QUEUE}, token=operator) == "validation_failed"
    assert await outcome(portal, REPLAY, {"queue": FRAGILE_QUEUE, "all": True, "message_id": "m"},
                         token=operator) == "validation_failed"
    assert await outcome(portal, REPLAY, {"queue": FRAGILE_QUEUE, "message_id": "absent"},
                         token=operator) == "not_found"
    assert await outcome(portal, LIST, {"page_size": 201}, token=operator) == "validation_failed"


async def test_the_notifier_lists_and_replays_its_dead_letters_on_its_own_queue_secrets_hidden(
        settings: Settings, amqp_url: str, portal: PortalClient, operator: str) -> None:
    queue = event_queue("notifier", "accounts.user.registered")
    body = {"user_id": "u-1", "password": "hunter2-hunter2", "link": "https://portal/confirm?token=one-time",
            "language": "de"}
    async with running(notifier, settings), EventTap(amqp_url) as tap:
        message_id = await publish_event(amqp_url, "accounts.user.registered", body, headers={
            "authorization": "Bearer not-for-your-eyes", "x-session-token": "neither", "accept-language": "de"})
        found: list[dict[str, Any]] = []

        async def listed(count: int = 1) -> bool:
            found[:] = await dead_letters(portal, "notifier", operator)
            return len(found) == 1 and found[0]["count"] == count
        await eventually(listed)
        assert (found[0]["queue"], found[0]["message_id"], found[0]["reason"]) == (queue, message_id, "undecodable")
        assert found[0]["body"] == {**body, "password": "[redacted]", "link": "[redacted]"}
        assert found[0]["headers"] == {"accept-language": "de"}

        replayed = await portal.call(replay_dead_letters_command("notifier"), {"queue": queue, "all": True},
                                     token=operator)

        assert replayed == {"replayed": 1}

        async def back() -> bool:
            return await listed(count=2)  # still undecodable: dead-lettered once more
        await eventually(back)
    assert len(tap.named("accounts.user.registered")) == 1  # the replay did not go through portal.events
    [again] = await drain_queue(amqp_url, dead_letter_queue(queue))
    assert json.loads(again.body) == body  # replayed as it was, secrets included
    assert again.headers["authorization"] == "Bearer not-for-your-eyes"


async def put_dead_letter(amqp_url: str, queue: str, body: dict[str, Any], message_id: str) -> None:
    async with amqp_channel(amqp_url) as channel:
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(body).encode(), message_id=message_id, content_type="application/json"),
            routing_key=dead_letter_queue(queue))


# --- review findings ----------------------------------------------------------------------------------------------

async def test_two_operators_listing_at_once_each_see_every_dead_letter_and_a_replay_finds_its_message(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    message_ids = [uuid.uuid4().hex for _ in range(40)]
    for message_id in message_ids:
        await put_dead_letter(amqp_url, FRAGILE_QUEUE, Fragile(key=message_id).model_dump(mode="json"), message_id)
    request = {"queue": FRAGILE_QUEUE, "page_size": 40}

    first, second, replayed = await asyncio.gather(
        portal.call(LIST, request, token=operator), portal.call(LIST, request, token=operator),
        outcome(portal, REPLAY, {"queue": FRAGILE_QUEUE, "message_id": message_ids[-1]}, token=operator))

    # They take turns: a listing after the replay no longer holds the replayed message, and nothing else is missing.
    for listing in (first, second):
        assert [item["message_id"] for item in listing["items"]] in (message_ids, message_ids[:-1])
    assert replayed == "ok"


async def test_a_listing_waits_for_one_running_on_another_replica_and_gives_up_with_conflict(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is the broker's: held here by a connection standing for another replica's listing."""
    monkeypatch.setattr(dead_letters_module, "LOCK_WAIT_SECONDS", 0.5)
    held = await aio_pika.connect(amqp_url)
    try:
        channel = await held.channel()
        await channel.declare_queue("listener.dead_letters.lock", exclusive=True, auto_delete=True)
        refused = await portal.send(LIST, json.dumps({"queue": FRAGILE_QUEUE}).encode(), token=operator)
        assert refused["ok"] is False and refused["error"]["code"] == "conflict"
        waiting = asyncio.ensure_future(portal.call(LIST, {"queue": FRAGILE_QUEUE}, token=operator))
        await asyncio.sleep(0.2)
    finally:
        await held.close()  # the other replica is done (or died): its lock goes with its connection
    assert (await waiting)["items"] == []


async def test_a_one_time_link_in_a_handlers_error_is_not_listed(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    """The handler's error is listed as the runtime stored it: an error naming the link it failed on (an HTTP or
    template error quoting the URL) must not show the link's token, as the body's copy of it does not."""
    async with amqp_channel(amqp_url) as channel:
        await channel.default_exchange.publish(aio_pika.Message(
            b'{"key": "k"}', message_id=uuid.uuid4().hex, content_type="application/json",
            headers={DEAD_LETTER_HEADER: {"reason": "failed", "attempts": 2, "at": "2026-12-03T18:00:00+00:00",
                                          "error": "ValueError: cannot render https://portal/reset?token=one-time"}}),
            routing_key=dead_letter_queue(FRAGILE_QUEUE))

    [dead] = await dead_letters(portal, "listener", operator)

    assert dead["reason"] == "failed" and dead["error"] is not None
    assert "one-time" not in str(dead)


BIG_BODY_BYTES = 1024 * 1024


async def peak_memory_of(call: Awaitable[Any]) -> int:
    """The most memory Python objects of this process (the service runs in it) held while `call` ran."""
    tracemalloc.start()
    try:
        await call
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_listing_and_replaying_big_dead_letters_holds_few_of_them_in_memory_at_once(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    """A dead-letter queue may hold big messages (a command's body may be up to 10 MB, an undecodable event as big as
    the broker takes): the service's replica also answers customers, so neither a listing nor a replay may hold a
    page's or a batch's worth of them at once (50 x 10 MB, 100 x 10 MB)."""
    await break_handler(service)
    async with amqp_channel(amqp_url) as channel:
        for _ in range(30):
            await channel.default_exchange.publish(aio_pika.Message(b"x" * BIG_BODY_BYTES, message_id=random_id()),
                                                   routing_key=dead_letter_queue(FRAGILE_QUEUE))
    [wanted] = await dead_fragile(amqp_url, portal, operator, "small")
    await fix_handler(service)

    listing = await peak_memory_of(portal.call(LIST, {"page_size": 31}, token=operator))
    replaying = await peak_memory_of(portal.call(REPLAY, {"queue": FRAGILE_QUEUE, "message_id": wanted},
                                                 token=operator))

    assert listing < 12 * BIG_BODY_BYTES, listing
    assert replaying < 12 * BIG_BODY_BYTES, replaying


async def test_after_listings_and_a_replay_at_once_the_dead_letters_are_back_in_their_order(
        service: ServiceInstance, amqp_url: str, portal: PortalClient, operator: str) -> None:
    message_ids = [uuid.uuid4().hex for _ in range(40)]
    for message_id in message_ids:
        await put_dead_letter(amqp_url, FRAGILE_QUEUE, Fragile(key=message_id).model_dump(mode="json"), message_id)
    request = {"queue": FRAGILE_QUEUE, "page_size": 40}
    await asyncio.gather(portal.call(LIST, request, token=operator), portal.call(LIST, request, token=operator),
                         outcome(portal, REPLAY, {"queue": FRAGILE_QUEUE, "message_id": "absent"}, token=operator))

    after = await portal.call(LIST, request, token=operator)

    assert [item["message_id"] for item in after["items"]] == message_ids
