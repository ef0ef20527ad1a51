"""Mails whose recipient the notifier learns late wait in `waiting_mails` and are sent once it is known."""

from __future__ import annotations

import asyncio

from contracts.registration import DeviceRegisteredEvent
from contracts.topology import dead_letter_queue, event_queue
from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from services.notifier.store import who_user
from services.runtime.mongo import Database
from services.runtime.service import ServiceInstance
from tests.builders import drain_queue, random_email, random_id
from tests.notifier.support import SmtpServer, profile_updated, publish
from tests.notifier.test_mails import only_mail_to
from tests.notifier.test_registration_mails import REGISTRATION, device_registered, known_user
from tests.support import eventually, running

REGISTRATIONS_DLQ = dead_letter_queue(event_queue("notifier", DeviceRegisteredEvent.routing_key))


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
