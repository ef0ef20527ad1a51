"""Each (event, recipient) is mailed at most once; temporary failures are retried, permanent ones recorded."""

from __future__ import annotations

import asyncio

import pytest

from contracts.client import Forbidden, PortalClient
from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from services.notifier.store import delivery_id
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_email, token_for
from tests.notifier.support import SmtpServer, list_deliveries, publish, registered, reminder_requested, reset_requested
from tests.support import eventually, running


async def delivery_status(instance: ServiceInstance, message_id: str, address: str) -> tuple[str | None, int]:
    found = await instance.db.deliveries.find_one({"_id": delivery_id(message_id, address)})
    return (found["status"], int(found["attempts"])) if found else (None, 0)


async def wait_for_mails(smtp: SmtpServer, address: str, count: int = 1) -> None:
    async def arrived() -> bool:
        return len(smtp.mailbox.to(address)) >= count
    await eventually(arrived)


async def test_the_same_event_delivered_twice_is_mailed_once(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event, marker = reset_requested(random_email()), reset_requested(random_email())
    message_id = await publish(amqp_url, event)
    await publish(amqp_url, event, message_id=message_id)
    await publish(amqp_url, marker)

    # One queue delivers in order: once the marker is mailed, both copies have been handled.
    await wait_for_mails(smtp, marker.email)
    await wait_for_mails(smtp, event.email)
    assert len(smtp.mailbox.to(event.email)) == 1
    assert await notifier.db.deliveries.count_documents({"event_message_id": message_id}) == 1


async def test_an_event_handled_again_after_its_claim_expired_is_still_not_mailed_twice(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event, marker = reminder_requested(random_email()), reminder_requested(random_email())
    message_id = await publish(amqp_url, event)
    await wait_for_mails(smtp, event.email)
    # The runtime forgets handled messages after PORTAL_IDEMPOTENCY_DAYS; the delivery still remembers.
    await notifier.db.message_claims.delete_many({})
    await publish(amqp_url, event, message_id=message_id)
    await publish(amqp_url, marker)

    await wait_for_mails(smtp, marker.email)
    assert len(smtp.mailbox.to(event.email)) == 1


async def test_a_mail_for_a_stopped_smtp_server_arrives_once_the_server_is_back(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    smtp.stop()
    event = registered(random_email())
    message_id = await publish(amqp_url, event)

    async def retrying() -> bool:
        status, attempts = await delivery_status(notifier, message_id, event.email)
        return status == "retrying" and attempts >= 1
    await eventually(retrying)
    smtp.start()

    await wait_for_mails(smtp, event.email)
    await asyncio.sleep(1.0)  # longer than the next retry would wait: nothing is sent twice
    assert len(smtp.mailbox.to(event.email)) == 1
    status, attempts = await delivery_status(notifier, message_id, event.email)
    assert status == "sent"
    assert attempts >= 2


async def test_a_delivery_left_retrying_is_sent_by_the_notifier_after_a_restart(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    smtp.stop()
    event = reset_requested(random_email())
    async with running(service, notifier_settings) as first:
        message_id = await publish(amqp_url, event)

        async def retrying() -> bool:
            status, attempts = await delivery_status(first, message_id, event.email)
            return status == "retrying" and attempts >= 1
        await eventually(retrying)
    smtp.start()
    await asyncio.sleep(0.5)
    assert smtp.mailbox.to(event.email) == []  # nobody sends while no notifier runs

    async with running(service, notifier_settings) as second:
        await wait_for_mails(smtp, event.email)

        async def recorded_sent() -> bool:  # recorded just after the SMTP server accepted it
            return (await delivery_status(second, message_id, event.email))[0] == "sent"
        await eventually(recorded_sent)
    assert len(smtp.mailbox.to(event.email)) == 1


async def test_a_recipient_refused_with_450_is_retried_until_accepted(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str) -> None:
    event = reset_requested(random_email())
    smtp.mailbox.refuse[event.email] = "450 4.2.1 Mailbox busy, try again later"
    message_id = await publish(amqp_url, event)

    async def retrying() -> bool:
        return (await delivery_status(notifier, message_id, event.email))[0] == "retrying"
    await eventually(retrying)
    del smtp.mailbox.refuse[event.email]

    await wait_for_mails(smtp, event.email)
    assert len(smtp.mailbox.to(event.email)) == 1


async def test_a_recipient_refused_with_550_is_recorded_as_failed_and_listed(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    event = reset_requested(random_email())
    smtp.mailbox.refuse[event.email] = "550 5.1.1 No such user"
    message_id = await publish(amqp_url, event)

    async def failed() -> bool:
        return (await delivery_status(notifier, message_id, event.email))[0] == "failed"
    await eventually(failed)
    await asyncio.sleep(0.5)  # a failed delivery is not retried
    page = await list_deliveries(portal, operator, recipient=event.email)

    [delivery] = page.items
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 1, None)
    assert delivery.last_error is not None and "550" in delivery.last_error
    assert (delivery.event, delivery.mail, delivery.subject) == (event.routing_key, "password_reset",
                                                                 "Reset your password")
    assert smtp.mailbox.to(event.email) == []


async def test_deliveries_are_listed_newest_first_and_filtered_by_recipient_event_and_status(
        notifier: ServiceInstance, smtp: SmtpServer, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    reset, reminder, refused = (reset_requested(random_email()), reminder_requested(random_email()),
                                reminder_requested(random_email()))
    smtp.mailbox.refuse[refused.email] = "550 5.1.1 No such user"
    for event in (reset, reminder, refused):
        message_id = await publish(amqp_url, event)

        async def done(message_id: str = message_id, address: str = event.email) -> bool:
            return (await delivery_status(notifier, message_id, address))[0] in ("sent", "failed")
        await eventually(done)

    everything = await list_deliveries(portal, operator)
    assert [item.recipient for item in everything.items] == [refused.email, reminder.email, reset.email]
    assert (everything.total, everything.page, everything.page_size) == (3, 1, 50)
    by_recipient = await list_deliveries(portal, operator, recipient=reset.email.upper())
    assert [item.recipient for item in by_recipient.items] == [reset.email]
    by_event = await list_deliveries(portal, operator, event=reminder.routing_key)
    assert [item.recipient for item in by_event.items] == [refused.email, reminder.email]
    sent = await list_deliveries(portal, operator, status="sent")
    assert [item.recipient for item in sent.items] == [reminder.email, reset.email]
    failed_reminders = await list_deliveries(portal, operator, event=reminder.routing_key, status="failed")
    assert [item.recipient for item in failed_reminders.items] == [refused.email]
    second_page = await list_deliveries(portal, operator, page=2, page_size=2)
    assert ([item.recipient for item in second_page.items], second_page.total) == ([reset.email], 3)


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.DEALER])
async def test_listing_deliveries_is_forbidden_to_anyone_but_an_operator(
        notifier: ServiceInstance, portal: PortalClient, settings: Settings, role: Role) -> None:
    token, _ = token_for(settings, role)
    with pytest.raises(Forbidden):
        await list_deliveries(portal, token)


async def test_two_notifiers_retrying_the_same_deliveries_send_each_mail_once(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    smtp.stop()
    events = [reset_requested(random_email()) for _ in range(6)]
    async with running(service, notifier_settings) as first, running(service, notifier_settings):
        message_ids = [await publish(amqp_url, event) for event in events]

        async def all_retrying() -> bool:
            states = [await delivery_status(first, message_id, event.email)
                      for message_id, event in zip(message_ids, events, strict=True)]
            return all(status == "retrying" and attempts >= 1 for status, attempts in states)
        await eventually(all_retrying)
        smtp.start()

        for event in events:
            await wait_for_mails(smtp, event.email)
        await asyncio.sleep(1.0)
    assert sorted(len(smtp.mailbox.to(event.email)) for event in events) == [1] * len(events)
