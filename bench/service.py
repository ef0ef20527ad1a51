"""The `bench` service: one command whose handler writes one document, like a typical command.

It runs through the shared runtime exactly as a real service does: the claim by message_id, the
write and the stored reply, which a command changing one document sends in one round trip
(`claim_in_write`, services/runtime/commands.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from pymongo import UpdateOne

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
