"""The `bench` service: one command whose handler writes one document, like a typical command.

It runs through the shared runtime exactly as a real service does, so each call pays the claim
by message_id, the write and the stored reply.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from contracts.base import Command
from services.runtime.commands import Access, CommandContext
from services.runtime.service import Service

COLLECTION = "bench_writes"

service = Service("bench", description="Benchmark: one write per command.")


class Write(Command):
    routing_key: ClassVar[str] = "bench.write"

    key: str = Field(max_length=64)
    count: int
    note: str = Field(max_length=1024)


@service.command(Write.routing_key, Write, access=Access.ANYONE)
async def write(request: Write, ctx: CommandContext) -> dict[str, Any]:
    """Upsert the document `key` (a fresh key per call, so every call inserts)."""
    await ctx.db[COLLECTION].update_one(
        {"_id": request.key}, {"$set": {"note": request.note}, "$inc": {"count": request.count}}, upsert=True)
    return {"key": request.key}
