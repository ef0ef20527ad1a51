"""The database stopped for a few seconds during a stream: commands answer `internal` or wait, nothing is
half-written, the services recover without a restart.

What each case does: on an nx-27017 of its own, it runs registration and the notifier as processes (Mongo timeout
2 s, so a command whose database is away answers `internal` rather than hang) and a stream of ten device
registrations (three gateways; a command without reply, or answered `internal`, is re-sent with the same
`message_id`, as a gateway retries) with other users' acceptances of the terms published between them. Once a third
are answered the database goes away for four seconds: `killed` (SIGKILL, then started again on the same port and
data directory: connections refused) or `paused` (SIGSTOP, then SIGCONT: connections open, every request hangs).
Nothing restarts the services. Then it counts: each device stored once and its registration mailed once (no device
without its event, no event without its device), every acceptance stored, no outbox left, no claim left undone (a
claim held by a command that failed while the database was away would make its re-send wait), and both processes
still the ones started at the beginning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.registration.store import RegistrationStore
from services.runtime.mongo import mongo_client
from services.runtime.settings import Settings
from tests.builders import PDF
from tests.chaos.conftest import all_alive, start_healthy, world_of
from tests.chaos.flows import count, registration_flow
from tests.support import Mailbox, PrivateMongo, eventually

pytestmark = pytest.mark.timeout(300)
OUTAGE_SECONDS = 4.0


@pytest.fixture
def private_mongo(tmp_path: Path) -> Iterator[PrivateMongo]:
    mongo = PrivateMongo(tmp_path / "nx-27017")
    try:
        mongo.start()
        yield mongo
    finally:
        mongo.stop()


@pytest.mark.parametrize("outage", ["killed", "paused"])
async def test_a_database_away_for_seconds_leaves_nothing_half_written_and_the_services_recover(
        outage: str, private_mongo: PrivateMongo, chaos_settings: Settings, amqp_url: str, mailbox: Mailbox) -> None:
    settings = chaos_settings.model_copy(update={
        "mongodb_url": private_mongo.url, "mongodb_timeout_ms": 2000, "claim_lease_seconds": 30.0})
    async with world_of(settings, amqp_url, mailbox) as world:
        world.resend_internal = True
        # The production lease (300 s) outlasts an outage of seconds; so must this one (10 s in the kill tests).
        world.processes.extra_env["PORTAL_NOTIFIER_LEASE_SECONDS"] = "30"
        await start_healthy(world, ("registration", "notifier"))

        async def database_away() -> None:
            if outage == "killed":
                private_mongo.kill()
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(private_mongo.start)
            else:
                private_mongo.pause()
                await asyncio.sleep(OUTAGE_SECONDS)
                private_mongo.resume()

        await registration_flow(world, database_away)
        for service in ("registration", "notifier"):
            async def no_claim_left_undone(service: str = service) -> bool:
                return await count(world.db(service).message_claims, {"done": False}) == 0
            await eventually(no_claim_left_undone, timeout=10)
        assert all_alive(world.processes)
        print(f"{outage}: {world.internal_replies} replies `internal`")


async def test_a_proof_upload_cut_off_before_its_file_document_is_stored_whole_by_the_re_sent_command(
        mongo_url: str, database_prefix: str) -> None:
    """What the `paused` case found: GridFS writes a file's chunks, then its document. A database paused in between
    keeps the chunks; the re-sent registration (same device, same file id) then collided with them on every try and
    answered `internal` for ever. This writes such a leftover chunk, then stores the proof as the re-sent command
    does: the file is stored whole, with the new content, once."""
    client = mongo_client(mongo_url, 10_000)
    try:
        db = client[f"{database_prefix}registration"]
        store = RegistrationStore(db)
        file_id = "d-cut-off.proof"
        await db["proofs.chunks"].insert_one({"files_id": file_id, "n": 0, "data": b"%PDF-1.4 half"})
        await store.store_proof(file_id, "d-cut-off", "receipt.pdf", "application/pdf", PDF)
        await store.store_proof(file_id, "d-cut-off", "receipt.pdf", "application/pdf", PDF)  # a later copy: no-op
        download = await store.proofs.open_download_stream(file_id)
        assert await download.read() == PDF
        assert len([stored async for stored in store.proofs.find({"_id": file_id})]) == 1
    finally:
        await client.close()
