"""Mails whose recipient the notifier learns late wait in `waiting_mails` and are sent once it is known."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts.client import PortalClient
from contracts.registration import DeviceRegisteredEvent
from contracts.topology import dead_letter_queue, event_queue
from services.notifier import waiting
from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from services.notifier.store import RecipientStore, who_user
from services.runtime.mongo import Database, mongo_client, stamp
from services.runtime.service import ServiceInstance
from tests.builders import drain_queue, random_email, random_id
from tests.notifier.support import SmtpServer, list_deliveries, profile_updated, publish
from tests.notifier.test_mails import only_mail_to
from tests.notifier.test_registration_mails import REGISTRATION, device_registered, known_user
from tests.support import eventually, running

REGISTRATIONS_DLQ = dead_letter_queue(event_queue("notifier", DeviceRegisteredEvent.routing_key))


@pytest.fixture
def sweeping(notifier_settings: NotifierSettings) -> NotifierSettings:
    return notifier_settings.model_copy(update={"notifier_wait_sweep_seconds": 0.2})


@pytest.fixture
async def database(sweeping: NotifierSettings) -> AsyncIterator[Database]:
    """The notifier's database, reached without a notifier running."""
    client = mongo_client(sweeping.mongodb_url, sweeping.mongodb_timeout_ms)
    try:
        yield client[sweeping.database_name("notifier")]
    finally:
        await client.close()


async def waiting_for(db: Database, user_id: str) -> int:
    return await db.waiting_mails.count_documents({"who": who_user(user_id)})


async def until_waiting(db: Database, user_id: str) -> None:
    async def kept() -> bool:
        return await waiting_for(db, user_id) == 1
    await eventually(kept)


async def test_a_registration_mail_for_a_user_learnt_later_is_kept_instead_of_dead_lettered_and_sent_once_known(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    # One attempt only: before, the event went to the dead-letter queue at once.
    impatient = notifier_settings.model_copy(update={"event_max_attempts": 1})
    user_id, address = random_id("u"), random_email()
    async with running(service, impatient) as notifier:
        message_id = await publish(amqp_url, device_registered(user_id, "en"))
        await until_waiting(notifier.db, user_id)
        await asyncio.sleep(0.5)
        assert await drain_queue(amqp_url, REGISTRATIONS_DLQ) == []
        assert smtp.mailbox.to(address) == []

        await publish(amqp_url, profile_updated(user_id, address, version=1, language="de"))
        message = await only_mail_to(smtp, address)
        assert message["Subject"] == REGISTRATION["de"][0]
        await asyncio.sleep(0.5)
        assert len(smtp.mailbox.to(address)) == 1
        assert await waiting_for(notifier.db, user_id) == 0
        delivery = await notifier.db.deliveries.find_one({"event_message_id": message_id})
        assert delivery is not None and delivery["event"] == DeviceRegisteredEvent.routing_key
        assert await drain_queue(amqp_url, REGISTRATIONS_DLQ) == []


async def test_the_same_event_twice_while_its_user_is_unknown_waits_once_and_is_mailed_once(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = random_id("u"), random_email()
    marker_id, marker = await known_user(notifier, "en")
    event = device_registered(user_id)
    message_id = await publish(amqp_url, event)
    await until_waiting(notifier.db, user_id)
    await notifier.db.message_claims.delete_many({})  # as after PORTAL_IDEMPOTENCY_DAYS: only the entry remembers
    await publish(amqp_url, event, message_id=message_id)
    await publish(amqp_url, device_registered(marker_id))

    await only_mail_to(smtp, marker)  # one queue delivers in order: the copy has been handled
    assert await waiting_for(notifier.db, user_id) == 1

    await publish(amqp_url, profile_updated(user_id, address, version=1))
    await only_mail_to(smtp, address)
    await asyncio.sleep(0.5)
    assert len(smtp.mailbox.to(address)) == 1
    assert await waiting_for(notifier.db, user_id) == 0


async def test_a_user_stored_while_the_notifier_was_stopped_is_found_by_the_sweep_after_the_restart(
        sweeping: NotifierSettings, smtp: SmtpServer, amqp_url: str, database: Database) -> None:
    user_id, address = random_id("u"), random_email()
    async with running(service, sweeping):
        await publish(amqp_url, device_registered(user_id, "en"))
        await until_waiting(database, user_id)
    # No accounts event runs the waiting mail: only the sweep can.
    await RecipientStore(database).remember(user_id, {"email": address, "language": "nb"}, version=0)

    async with running(service, sweeping):
        message = await only_mail_to(smtp, address)
        assert message["Subject"] == REGISTRATION["nb"][0]
        await eventually(lambda: _none_waiting(database, user_id))


async def _none_waiting(db: Database, user_id: str) -> bool:
    return await waiting_for(db, user_id) == 0


async def test_two_notifiers_releasing_the_same_waiting_mail_at_once_send_it_once(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    user_id, address = random_id("u"), random_email()
    async with running(service, notifier_settings) as one, running(service, notifier_settings) as other:
        message_id = await publish(amqp_url, device_registered(user_id, "en"))
        await until_waiting(one.db, user_id)
        await RecipientStore(one.db).remember(user_id, {"email": address, "language": "en"}, version=0)

        now = datetime.now(UTC)
        await asyncio.gather(waiting.sweep(one, now=now), waiting.sweep(other, now=now))
        await only_mail_to(smtp, address)
        await asyncio.sleep(0.5)
        assert len(smtp.mailbox.to(address)) == 1
        assert await one.db.deliveries.count_documents({"event_message_id": message_id}) == 1
        assert await waiting_for(one.db, user_id) == 0


async def test_a_mail_whose_user_is_never_known_is_listed_failed_after_the_wait_limit_and_no_longer_kept(
        sweeping: NotifierSettings, smtp: SmtpServer, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    user_id = random_id("u")
    async with running(service, sweeping) as notifier:
        message_id = await publish(amqp_url, device_registered(user_id, "en"))
        await until_waiting(notifier.db, user_id)
        await asyncio.sleep(0.5)  # younger than the limit: several sweeps leave it waiting
        assert await waiting_for(notifier.db, user_id) == 1
        assert await notifier.db.deliveries.count_documents({}) == 0

        long_ago = stamp(datetime.now(UTC) - timedelta(days=sweeping.notifier_wait_days, minutes=1))
        await notifier.db.waiting_mails.update_one({"who": who_user(user_id)}, {"$set": {"since": long_ago}})

        async def listed() -> bool:
            page = await list_deliveries(portal, operator, status="failed")
            return page.total == 1
        await eventually(listed)
        [delivery] = (await list_deliveries(portal, operator, status="failed")).items
        assert delivery.id == f"{message_id}:user:{user_id}"
        assert (delivery.event, delivery.event_message_id) == (DeviceRegisteredEvent.routing_key, message_id)
        assert (delivery.mail, delivery.recipient, delivery.attempts) == ("device_registration", f"user:{user_id}", 0)
        assert delivery.last_error == waiting.NEVER_KNOWN
        assert await waiting_for(notifier.db, user_id) == 0
        assert smtp.mailbox.messages == []
