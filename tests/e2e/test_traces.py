"""One trace from an HTTP request to the mail it causes: the gateway in this process (in-memory exporter), accounts and
the notifier as processes exporting over OTLP/HTTP to a receiver the test runs on 127.0.0.1."""

from __future__ import annotations

from contracts.client import PortalClient
from gateway.settings import GatewaySettings
from services.runtime.settings import Settings
from tests.builders import sign_up
from tests.gateway.conftest import gateway
from tests.support import Mailbox, ServiceProcesses, eventually, wait_healthy
from tests.tracing import OtlpReceiver, SeenSpan, recorded_spans

SUBSCRIPTION = "messaging.destination.subscription.name"


async def test_one_trace_runs_from_the_request_through_accounts_to_the_notifier_s_mail(
        settings: Settings, mailbox: Mailbox, portal: PortalClient, amqp_url: str) -> None:
    request = sign_up(language="de")
    with OtlpReceiver() as receiver, recorded_spans("gateway") as recorded:
        # Batches every 100 ms rather than 5 s: the test reads the spans as soon as they are sent.
        exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with ServiceProcesses(settings, extra_env=exporting) as processes:
            processes.start("accounts", "notifier")
            await wait_healthy(portal, "accounts")
            await wait_healthy(portal, "notifier")
            async with gateway(GatewaySettings(amqp_url=amqp_url)) as http:
                response = await http.post("/api/v1/users", json=request, headers={"Accept-Language": "de"})
                assert response.status_code == 201, response.text
            [root] = recorded.named("POST /api/v1/users", "SERVER")

            async def mailed() -> bool:
                return bool(mailbox.to(request["email"]))
            await eventually(mailed, timeout=20)

            def in_trace() -> list[SeenSpan]:
                return [span for span in receiver.spans if span.trace_id == root.trace_id]

            async def mail_span_exported() -> bool:
                return any(span.name == "notifier.send_mail" for span in in_trace())
            await eventually(mail_span_exported, timeout=20)
        gateway_spans = [span for span in recorded.spans if span.trace_id == root.trace_id]
    services = in_trace()

    [client] = [span for span in gateway_spans if span.name == "accounts.register" and span.kind == "CLIENT"]
    [command] = [span for span in services if span.name == "accounts.register"]
    [consumed] = [span for span in services if span.name == "accounts.user.registered"
                  and span.attributes.get(SUBSCRIPTION) == "notifier.on.accounts.user.registered"]
    [mail] = [span for span in services if span.name == "notifier.send_mail"]

    assert (command.service, command.kind, command.parent_id) == ("accounts", "SERVER", client.span_id)
    assert (consumed.service, consumed.kind, consumed.parent_id) == ("notifier", "CONSUMER", command.span_id)
    assert (mail.service, mail.kind, mail.parent_id) == ("notifier", "CLIENT", consumed.span_id)
    assert command.attributes["messaging.system"] == "rabbitmq"
    assert command.attributes["portal.outcome"] == "ok" and not command.error
    assert consumed.attributes["portal.outcome"] == "handled"
    assert mail.attributes["portal.outcome"] == "sent" and not mail.error
    # One tree: every span of the trace hangs from the request's, whichever process made it.
    ids = {span.span_id for span in [*gateway_spans, *services]}
    assert all(span.parent_id in ids for span in [*gateway_spans, *services] if span.span_id != root.span_id)
    assert root.parent_id is None
