"""The notifier's /metrics count its mails: sent, retrying after a temporary refusal, failed for good."""

from __future__ import annotations

from deploy.local.deps import free_port
from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from tests.builders import random_email
from tests.notifier.support import SmtpServer, publish, reset_requested
from tests.support import eventually, running, sample_value, scrape


async def test_mails_are_counted_sent_retrying_and_failed(
        notifier_settings: NotifierSettings, smtp: SmtpServer, amqp_url: str) -> None:
    port = free_port()
    sent, busy, unknown = (reset_requested(random_email()) for _ in range(3))
    smtp.mailbox.refuse[busy.email] = "450 4.2.1 Mailbox busy, try again later"
    smtp.mailbox.refuse[unknown.email] = "550 5.1.1 No such user"
    settings = notifier_settings.model_copy(update={"metrics_port": port, "metrics_host": "127.0.0.1"})
    async with running(service, settings):
        at_start = await scrape(port)
        assert [sample_value(at_start, "portal_notifier_mails_total", outcome=outcome)
                for outcome in ("sent", "retrying", "failed")] == [0, 0, 0]
        for event in (sent, busy, unknown):
            await publish(amqp_url, event)

        async def counted() -> bool:
            samples = await scrape(port)
            return all((sample_value(samples, "portal_notifier_mails_total", outcome=outcome) or 0) >= 1
                       for outcome in ("sent", "retrying", "failed")) and sample_value(
                samples, "portal_events_total", event=sent.routing_key, outcome="handled") == 3
        await eventually(counted)
        samples = await scrape(port)

    assert len(smtp.mailbox.to(sent.email)) == 1
    assert sample_value(samples, "portal_notifier_mails_total", outcome="sent") == 1
    assert sample_value(samples, "portal_notifier_mails_total", outcome="failed") == 1
    assert (sample_value(samples, "portal_notifier_mails_total", outcome="retrying") or 0) >= 1
    assert sample_value(samples, "portal_events_total", event=sent.routing_key, outcome="handled") == 3
