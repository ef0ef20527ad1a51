"""A small service built on the runtime only, to test the runtime's behaviour end to end.

Run in-process by most tests, or as its own process (`python -m tests.runtime.sample_service`)
by the tests that kill or stop it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from pymongo import InsertOne, UpdateOne
from pymongo.errors import DuplicateKeyError

from contracts.base import Command, Event
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.outbox import not_applied, with_events
from services.runtime.service import Service

log = logging.getLogger(__name__)

# Set in the environment of a sample process that must die right after its first write.
CRASH_AFTER_WRITE = "SAMPLE_CRASH_AFTER_WRITE"


class Address(BaseModel):
    street: str = Field(max_length=100)
    postal_code: str = Field(pattern=r"^\d{4,5}$")


class AddNote(Command):
    routing_key: ClassVar[str] = "sample.add_note"
    note_id: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=1000)
    address: Address | None = None


class Slow(Command):
    routing_key: ClassVar[str] = "sample.slow"
    note_id: str
    seconds: float = Field(ge=0, le=10)


class Explode(Command):
    routing_key: ClassVar[str] = "sample.explode"
    note_id: str


class NoteAdded(Event):
    routing_key: ClassVar[str] = "sample.note.added"
    note_id: str
    text: str


class Flaky(Event):
    """Its handler fails while `failures` says so: counts its attempts."""

    routing_key: ClassVar[str] = "sample.flaky"
    key: str
    failures: int


class Fragile(Event):
    """Its handler fails while the `broken` switch is on (a document in `switches`); `effects` counts its successes."""

    routing_key: ClassVar[str] = "sample.fragile"
    key: str


BROKEN = "broken"


class Poison(Event):
    """Its handler kills the process it runs in (when CRASH_ON_POISON is set; else it fails): a poison message."""

    routing_key: ClassVar[str] = "sample.poison"
    key: str


# Set in the environment of a listener process that must die on each Poison event.
CRASH_ON_POISON = "SAMPLE_CRASH_ON_POISON"


class Empty(Command):
    pass


sample = Service("sample", outbox_collections=["notes"])


async def write_note(ctx: CommandContext, note_id: str, text: str) -> int:
    """Adds a note and its event in one write; the count of writes tells a double application."""
    try:
        await ctx.db.notes.update_one(
            {"_id": note_id, **not_applied(ctx.message_id)},
            with_events({"$set": {"text": text, "owner": ctx.claims.user_id if ctx.claims else None},
                         "$inc": {"writes": 1}},
                        [NoteAdded(note_id=note_id, text=text)], command_id=ctx.message_id),
            upsert=True)
    except DuplicateKeyError:
        pass  # the note exists and this very command already changed it (re-run after a crash)
    if os.environ.get(CRASH_AFTER_WRITE):
        os.kill(os.getpid(), signal.SIGKILL)
    note = await ctx.db.notes.find_one({"_id": note_id})
    assert note is not None
    return int(note["writes"])


@sample.command("sample.add_note", AddNote, access=Access.AUTH)
async def add_note(request: AddNote, ctx: CommandContext) -> dict[str, Any]:
    writes = await write_note(ctx, request.note_id, request.text)
    return {"note_id": request.note_id, "writes": writes}


@sample.command("sample.open_note", AddNote, access=Access.ANYONE)
async def open_note(request: AddNote, ctx: CommandContext) -> dict[str, Any]:
    log.info("opening note %s", request.note_id)
    if request.text == "refuse":
        raise CommandError("conflict", fields={"text": "refused on purpose"})
    writes = await write_note(ctx, request.note_id, request.text)
    return {"note_id": request.note_id, "writes": writes}


class PutNote(Command):
    routing_key: ClassVar[str] = "sample.put_note"
    note_id: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=1000)
    seconds: float = Field(default=0, ge=0, le=10)  # before its write: lets copies overlap


@sample.command("sample.put_note", PutNote, access=Access.AUTH, claim_in_write=True)
async def put_note(request: PutNote, ctx: CommandContext) -> dict[str, Any]:
    """Like add_note, its claim riding on its one write: reads first, then `write_once`."""
    await asyncio.sleep(request.seconds)
    if request.text == "refuse":
        raise CommandError("conflict", fields={"text": "refused on purpose"})
    note = await ctx.db.notes.find_one({"_id": request.note_id})
    reply = {"note_id": request.note_id, "writes": (int(note["writes"]) if note else 0) + 1}
    await ctx.write_once(UpdateOne(
        {"_id": request.note_id, **not_applied(ctx.message_id)},
        with_events({"$set": {"text": request.text, "owner": ctx.caller.user_id}, "$inc": {"writes": 1}},
                    [NoteAdded(note_id=request.note_id, text=request.text)], command_id=ctx.message_id),
        upsert=True, namespace=ctx.namespace("notes")), reply)
    if os.environ.get(CRASH_AFTER_WRITE):
        os.kill(os.getpid(), signal.SIGKILL)
    return reply


@sample.command("sample.insert_note", PutNote, access=Access.ANYONE, claim_in_write=True)
async def insert_note(request: PutNote, ctx: CommandContext) -> dict[str, Any]:
    """Inserts the note: a second command for one note fails on its key, and must leave nothing claimed."""
    reply = {"note_id": request.note_id}
    try:
        await ctx.write_once(InsertOne({"_id": request.note_id, "text": request.text, "writes": 1},
                                       namespace=ctx.namespace("notes")), reply)
    except DuplicateKeyError:
        raise CommandError("conflict", fields={"note_id": "taken"}) from None
    return reply


class ReadNote(Command):
    routing_key: ClassVar[str] = "sample.read_note"
    note_id: str


@sample.command("sample.read_note", ReadNote, access=Access.ANYONE, replay=Replay.RERUN)
async def read_note(request: ReadNote, ctx: CommandContext) -> dict[str, Any]:
    note = await ctx.db.notes.find_one({"_id": request.note_id})
    if note is None:
        raise CommandError("not_found")
    return {"note_id": request.note_id, "text": note["text"], "writes": note["writes"]}


class Heavy(Command):
    routing_key: ClassVar[str] = "sample.heavy"
    seconds: float = Field(ge=0, le=10)


heavy_running: list[int] = [0, 0]  # now, most at once (the tests run the service in this process)


@sample.command("sample.heavy", Heavy, access=Access.ANYONE, prefetch=1)
async def heavy(request: Heavy, ctx: CommandContext) -> dict[str, Any]:
    heavy_running[0] += 1
    heavy_running[1] = max(heavy_running)
    try:
        await asyncio.sleep(request.seconds)
    finally:
        heavy_running[0] -= 1
    return {}


@sample.command("sample.slow", Slow, access=Access.ANYONE)
async def slow(request: Slow, ctx: CommandContext) -> dict[str, Any]:
    # Counts every run of the handler, which `not_applied` cannot hide: tells the claim's work apart.
    await ctx.db.runs.update_one({"_id": request.note_id}, {"$inc": {"count": 1}}, upsert=True)
    await asyncio.sleep(request.seconds)
    return {"writes": await write_note(ctx, request.note_id, "slow")}


@sample.command("sample.explode", Explode, access=Access.ANYONE)
async def explode(request: Explode, ctx: CommandContext) -> dict[str, Any]:
    raise RuntimeError("an unexpected failure before anything was written")


@sample.command("sample.operator_only", Empty, access=Access.OPERATOR)
async def operator_only(request: Empty, ctx: CommandContext) -> dict[str, Any]:
    return {"role": ctx.caller.role}


listener = Service("listener")


@listener.event(NoteAdded)
async def remember_note(event: NoteAdded, ctx: EventContext) -> None:
    if event.text.startswith("slow:"):  # lets a test kill the process while this runs
        await asyncio.sleep(float(event.text.removeprefix("slow:")))
    # $inc, not an upsert by key: a second handling of the same message would show.
    await ctx.db.seen.update_one({"_id": event.note_id}, {"$inc": {"times": 1}}, upsert=True)


@listener.event(Flaky)
async def fail_a_few_times(event: Flaky, ctx: EventContext) -> None:
    attempt = await ctx.db.attempts.find_one_and_update(
        {"_id": event.key}, {"$inc": {"count": 1}}, upsert=True, return_document=True)
    assert attempt is not None
    if attempt["count"] <= event.failures:
        raise RuntimeError(f"failing on purpose, attempt {attempt['count']}")


@listener.event(Fragile)
async def apply_unless_broken(event: Fragile, ctx: EventContext) -> None:
    if await ctx.db.switches.find_one({"_id": BROKEN}):
        raise RuntimeError(f"{BROKEN} on purpose")
    # $inc, not an upsert by key: a second handling of the same message would show.
    await ctx.db.effects.update_one({"_id": event.key}, {"$inc": {"times": 1}}, upsert=True)


@listener.event(Poison)
async def die(event: Poison, ctx: EventContext) -> None:
    await ctx.db.poisoned.update_one({"_id": event.key}, {"$inc": {"times": 1}}, upsert=True)
    if os.environ.get(CRASH_ON_POISON):
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("poisoned")


if __name__ == "__main__":
    {"sample": sample, "listener": listener}[sys.argv[1]].run()
