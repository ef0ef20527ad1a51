"""The `bench` service: one command whose handler writes one document, the runtime's own cost.

It runs through the shared runtime exactly as a real service does: the claim by message_id, the
write and the stored reply, which a command changing one document sends in one round trip
(`claim_in_write`, services/runtime/commands.py). In the round trips (`bench.roundtrip`) it is the
floor under the three real commands: what validation, idempotency and the reply cost with no
domain queries at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import Field
from pymongo import UpdateOne

from bench.rounds import Prepare, Subject
from bench.world import World, fresh_prefix
from contracts.base import Command
from services.runtime.commands import Access, CommandContext
from services.runtime.outbox import not_applied, with_events
from services.runtime.service import Service

COLLECTION = "bench_writes"

service = Service("bench", description="Benchmark: one write per command.")


class Write(Command):
    routing_key: ClassVar[str] = "bench.write"

    key: str = Field(max_length=64)
    count: int
    note: str = Field(max_length=1024)


@service.command(Write.routing_key, Write, access=Access.ANYONE, claim_in_write=True)
async def write(request: Write, ctx: CommandContext) -> dict[str, Any]:
    """Upsert the document `key` (a fresh key per call, so every call inserts)."""
    reply = {"key": request.key}
    await ctx.write_once(UpdateOne(
        {"_id": request.key, **not_applied(ctx.message_id)},
        with_events({"$set": {"note": request.note}, "$inc": {"count": request.count}}, [], command_id=ctx.message_id),
        upsert=True, namespace=ctx.namespace(COLLECTION)), reply)
    return reply


@contextmanager
def write_once(world: World) -> Iterator[tuple[Subject, Prepare]]:
    """This service as its own process; every call (`bench.client.body`: a fresh key) inserts one document."""
    async def nothing_to_seed() -> None:
        return None

    with world.service("bench.service", fresh_prefix("runtime")) as pid:
        yield Subject("runtime: bench.write", Write.routing_key, pid), nothing_to_seed
