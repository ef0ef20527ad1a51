"""What a review of the gateway's traces found, each fixed and kept as a test: the mails' tokens in the request span,
an internet client's `baggage` passed on, and its `traceparent` deciding whether it is traced."""

from __future__ import annotations

from contracts.topology import COMMANDS_EXCHANGE
from gateway.settings import GatewaySettings
from services.runtime.service import ServiceInstance
from tests.builders import sign_up
from tests.gateway.conftest import gateway
from tests.support import eventually
from tests.tracing import arrived, copies, recorded_spans

SECRET = "s3cr3t-reset-token-0123456789abcdef"
UPSTREAM_TRACE, UPSTREAM_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


async def test_a_mailed_link_s_token_is_not_exported_with_the_request_s_span(gateway_settings: GatewaySettings) -> None:
    with recorded_spans() as recorded:
        async with gateway(gateway_settings) as http:
            for page in ("/reset-password", "/confirm-email"):
                response = await http.get(page, params={"token": SECRET})
                assert response.status_code == 200, response.text
        spans = recorded.spans
    assert {span.name for span in spans} >= {"GET /reset-password", "GET /confirm-email"}
    leaked = {span.name: key for span in spans for key, value in span.attributes.items() if SECRET in str(value)}
    assert not leaked, f"the reset token is in these spans' attributes: {leaked}"


async def test_an_internet_client_s_baggage_stops_at_the_gateway(
        accounts: ServiceInstance, gateway_settings: GatewaySettings, amqp_url: str) -> None:
    with recorded_spans():
        async with gateway(gateway_settings) as http, copies(amqp_url, COMMANDS_EXCHANGE, "accounts.register") as sent:
            response = await http.post("/api/v1/users", json=sign_up(),
                                       headers={"baggage": "role=operator,tenant=someone-else"})
            assert response.status_code == 201, response.text
            await eventually(lambda: arrived(sent))
    assert "traceparent" in sent[0].headers  # tracing is on: the command carries the request's trace
    assert "baggage" not in sent[0].headers, sent[0].headers["baggage"]


async def test_an_internet_client_cannot_switch_its_requests_tracing_off(
        accounts: ServiceInstance, gateway_settings: GatewaySettings) -> None:
    with recorded_spans() as recorded:
        async with gateway(gateway_settings) as http:
            response = await http.post("/api/v1/users", json=sign_up(),
                                       headers={"traceparent": f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-00"})
            assert response.status_code == 201, response.text
        await eventually(lambda: arrived(recorded.named("accounts.register", "SERVER")), timeout=3)
