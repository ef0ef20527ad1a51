"""The gateway's traces: FastAPI's span per request, parent of the command it sends; tracing off, no trace header."""

from __future__ import annotations

from contracts.topology import COMMANDS_EXCHANGE
from gateway.settings import GatewaySettings
from services.runtime.service import ServiceInstance
from tests.builders import sign_up
from tests.gateway.conftest import gateway
from tests.support import eventually
from tests.tracing import OtlpReceiver, arrived, copies, recorded_spans, run_python, traceparent_ids

# A trace a proxy in front of the gateway began.
UPSTREAM_TRACE, UPSTREAM_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


async def test_with_tracing_off_a_request_s_command_carries_no_trace_header(
        accounts: ServiceInstance, gateway_settings: GatewaySettings, amqp_url: str) -> None:
    async with gateway(gateway_settings) as http, copies(amqp_url, COMMANDS_EXCHANGE, "accounts.register") as sent:
        response = await http.post("/api/v1/users", json=sign_up())
        assert response.status_code == 201, response.text
        await eventually(lambda: arrived(sent))
    assert not {"traceparent", "tracestate"} & set(sent[0].headers)
    assert set(sent[0].headers) == {"accept-language"}


async def test_a_request_s_span_is_the_parent_of_its_command_in_the_service(
        accounts: ServiceInstance, gateway_settings: GatewaySettings, amqp_url: str) -> None:
    behind_a_proxy = gateway_settings.model_copy(update={"gateway_trust_trace_context": True})
    with recorded_spans() as recorded:
        async with gateway(behind_a_proxy) as http, \
                copies(amqp_url, COMMANDS_EXCHANGE, "accounts.register") as sent:
            response = await http.post("/api/v1/users", json=sign_up())
            assert response.status_code == 201, response.text
            continued = await http.post("/api/v1/users", json=sign_up(), headers={
                "traceparent": f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"})
            assert continued.status_code == 201, continued.text
            missing = await http.get("/api/v1/no-such-thing")
            assert missing.status_code == 404
            await eventually(lambda: arrived(sent[1:]))
        first, second = recorded.named("POST /api/v1/users", "SERVER")
        [unrouted] = recorded.named("GET", "SERVER")
        clients = recorded.named("accounts.register", "CLIENT")
        handlers = recorded.named("accounts.register", "SERVER")

    # FastAPI's request span → its endpoint's span → the client's command span → the command's span in accounts.
    endpoint = next(span for span in recorded.named("fastapi.endpoint") if span.parent_id == first.span_id)
    client = next(span for span in clients if span.parent_id == endpoint.span_id)
    handler = next(span for span in handlers if span.parent_id == client.span_id)
    assert first.parent_id is None and {endpoint.trace_id, client.trace_id, handler.trace_id} == {first.trace_id}
    assert traceparent_ids(sent[0].headers.get("traceparent")) == (first.trace_id, client.span_id)
    assert first.attributes["http.route"] == "/api/v1/users"
    assert first.attributes["http.response.status_code"] == 201
    assert client.attributes["portal.outcome"] == handler.attributes["portal.outcome"] == "ok"
    # A trace begun by the trusted proxy in front of the gateway goes on through it.
    assert (second.trace_id, second.parent_id) == (UPSTREAM_TRACE, UPSTREAM_SPAN)
    assert traceparent_ids(sent[1].headers.get("traceparent"))[0] == UPSTREAM_TRACE
    assert unrouted.attributes["http.response.status_code"] == 404 and "http.route" not in unrouted.attributes


PROBE = "from contracts.tracing import tracer; tracer().start_span('probe').end()"


def test_the_gateway_process_exports_its_spans_over_otlp_only_when_an_endpoint_is_set() -> None:
    configure = "from contracts.tracing import install; print(install('gateway', '9.9'))"
    with OtlpReceiver() as receiver:
        assert run_python(f"{configure}; {PROBE}").strip() == "False"
        assert run_python(f"{configure}; {PROBE}", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint).strip() == "True"
        # The process flushed its spans as it exited.
        [probe] = receiver.spans
    assert (probe.service, probe.name) == ("gateway", "probe")
