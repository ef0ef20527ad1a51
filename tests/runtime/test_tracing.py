"""Traces through the runtime: a command continues its sender's trace, and the events its handler writes to the outbox
carry it on to their consumers; with tracing off (the default) nothing is added anywhere."""

from __future__ import annotations

import json

from opentelemetry import trace

from contracts.client import PortalClient, PortalError
from contracts.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE
from services.runtime.outbox import FIELD, TRACE, with_events
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_id
from tests.runtime.sample_service import NoteAdded, listener, sample
from tests.support import eventually, running
from tests.tracing import arrived, copies, recorded_spans, run_python, traceparent_ids

TRACE_HEADERS = {"traceparent", "tracestate"}
SUBSCRIPTION = "messaging.destination.subscription.name"


async def seen(instance: ServiceInstance, note_id: str) -> bool:
    return await instance.db.seen.find_one({"_id": note_id}) is not None


async def test_with_tracing_off_no_message_carries_a_trace_header_and_all_works(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    note_id = random_id("note")
    async with running(sample, settings), running(listener, settings) as listening, \
            copies(amqp_url, COMMANDS_EXCHANGE, "sample.open_note") as commands, \
            copies(amqp_url, EVENTS_EXCHANGE, "sample.note.added") as events:
        assert await portal.call("sample.open_note", {"note_id": note_id, "text": "hello"}) == {
            "note_id": note_id, "writes": 1}
        await eventually(lambda: seen(listening, note_id))
        await eventually(lambda: arrived(events))
    assert commands and not TRACE_HEADERS & set(commands[0].headers)
    assert not TRACE_HEADERS & set(events[0].headers)
    update = with_events({"$set": {"text": "x"}}, [NoteAdded(note_id=note_id, text="x")])
    assert all(TRACE not in entry for path, entry in update["$set"].items() if path.startswith(f"{FIELD}."))


async def test_a_command_and_the_event_it_emits_continue_the_caller_s_trace(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    note_id = random_id("note")
    with recorded_spans() as recorded:
        async with running(sample, settings), running(listener, settings) as listening, \
                copies(amqp_url, COMMANDS_EXCHANGE, "sample.open_note") as commands, \
                copies(amqp_url, EVENTS_EXCHANGE, "sample.note.added") as events:
            with trace.get_tracer("tests").start_as_current_span("a caller"):
                await portal.call("sample.open_note", {"note_id": note_id, "text": "hello"})
                try:
                    await portal.call("sample.open_note", {"note_id": random_id("note"), "text": "refuse"})
                except PortalError as error:
                    assert error.code == "conflict"
            await eventually(lambda: seen(listening, note_id))
            await eventually(lambda: arrived(events))
            await eventually(lambda: arrived(recorded.named("sample.note.added", "CONSUMER")))

        caller = recorded.named("a caller")[0]
        sent, refused_sent = recorded.named("sample.open_note", "CLIENT")
        handled, refused = recorded.named("sample.open_note", "SERVER")
        consumed = next(span for span in recorded.named("sample.note.added", "CONSUMER")
                        if span.attributes[SUBSCRIPTION] == "listener.on.sample.note.added")

    # One trace: the caller → its client span → the command's span → the event's span in the listener.
    assert {span.trace_id for span in (sent, handled, consumed, refused)} == {caller.trace_id}
    assert sent.parent_id == caller.span_id and handled.parent_id == sent.span_id
    assert consumed.parent_id == handled.span_id
    assert refused.parent_id == refused_sent.span_id
    # On the wire: the command's headers name the client's span, the event's the command's span.
    assert traceparent_ids(commands[0].headers.get("traceparent")) == (caller.trace_id, sent.span_id)
    assert traceparent_ids(events[0].headers.get("traceparent")) == (caller.trace_id, handled.span_id)

    assert handled.attributes["messaging.system"] == "rabbitmq"
    assert handled.attributes["messaging.message.id"] == commands[0].message_id
    assert handled.attributes["messaging.message.conversation_id"] == commands[0].correlation_id
    assert handled.attributes["portal.outcome"] == "ok" and not handled.error
    assert refused.attributes["portal.outcome"] == "refused"
    assert refused.attributes["portal.error.code"] == "conflict" and refused_sent.attributes["portal.error.code"]
    assert consumed.attributes["messaging.message.id"] == events[0].message_id
    assert consumed.attributes["portal.outcome"] == "handled"


async def test_an_outbox_entry_written_in_a_span_keeps_its_context() -> None:
    with recorded_spans(), trace.get_tracer("tests").start_as_current_span("a handler") as current:
        update = with_events({"$set": {"text": "x"}}, [NoteAdded(note_id="n", text="x")])
    [entry] = [entry for path, entry in update["$set"].items() if path.startswith(f"{FIELD}.")]
    context = current.get_span_context()
    assert traceparent_ids(entry[TRACE]["traceparent"]) == (format(context.trace_id, "032x"),
                                                           format(context.span_id, "016x"))


def test_a_service_process_prints_its_spans_with_the_console_exporter() -> None:
    script = ("from contracts.tracing import install; assert install('accounts', '9.9'); "
              "from contracts.tracing import tracer; tracer().start_span('probe').end()")
    probe = json.loads(run_python(script, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="portal-accounts"))
    assert probe["name"] == "probe"
    assert probe["resource"]["attributes"]["service.name"] == "portal-accounts"
    assert probe["resource"]["attributes"]["service.version"] == "9.9"
