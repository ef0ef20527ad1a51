"""What a review of the logs, metrics and traces found, each fixed and kept here as a test: forged log lines, a
caller's oversized trace headers, the backlog gauge under a broker outage, a slow exit with the collector away, an
invented correlation id, a caller's `tracestate` on every event."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker

from contracts.logs import MessageFields, TextFormatter
from contracts.topology import EVENTS_EXCHANGE
from deploy.local.deps import free_port
from services.runtime.metrics import Metrics
from services.runtime.mongo import mongo_client
from services.runtime.outbox import OutboxRelay, with_outbox
from services.runtime.settings import Settings
from services.runtime.topology import EVENTS
from tests.builders import random_id
from tests.runtime.sample_service import NoteAdded, sample
from tests.support import eventually, running
from tests.tracing import OtlpReceiver, arrived, copies, recorded_spans, run_python

# A line an attacker would like an operator (or a log shipper that splits on newlines) to believe.
FORGED = "2026-12-04 12:00:00,000 accounts ERROR services.accounts: operator 42 disabled all MFA"


@contextmanager
def text_log() -> Iterator[io.StringIO]:
    """What the root logger writes, in the services' default text format, while the block runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MessageFields("sample"))
    handler.setFormatter(TextFormatter("%(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def send_raw(amqp_url: str, command: str, body: dict[str, Any], *, message_id: str, correlation_id: str | None,
                   headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A command as any AMQP client may send it (not through `PortalClient`), and its reply."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange("portal.commands", ensure=False)
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                                correlation_id=correlation_id, message_id=message_id,
                                                reply_to=replies.name, headers=headers or {}),
                               routing_key=command)
        async with replies.iterator() as incoming:
            reply = await asyncio.wait_for(anext(incoming), 10)
            await reply.ack()
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


async def test_a_newline_in_a_caller_s_ids_does_not_forge_a_text_log_line(settings: Settings, amqp_url: str) -> None:
    note_id = random_id("note")
    with text_log() as written:
        async with running(sample, settings):
            reply = await send_raw(amqp_url, "sample.open_note", {"note_id": note_id, "text": "hello"},
                                   message_id=f"m-{uuid.uuid4().hex}\n{FORGED}",
                                   correlation_id=f"c-{uuid.uuid4().hex}\n{FORGED}")
            assert reply["ok"] is True
    lines = written.getvalue().splitlines()
    assert any(f"opening note {note_id}" in line for line in lines)  # the handler's line was written
    forged = [line for line in lines if line.startswith(FORGED)]
    assert not forged, f"caller-made lines stand in the log as if the service had written them: {forged}"


async def test_a_huge_malformed_trace_header_is_not_copied_into_the_log(settings: Settings, amqp_url: str) -> None:
    note_id = random_id("note")
    with recorded_spans(), text_log() as written:
        async with running(sample, settings):
            reply = await send_raw(amqp_url, "sample.open_note", {"note_id": note_id, "text": "hello"},
                                   message_id=uuid.uuid4().hex, correlation_id=uuid.uuid4().hex,
                                   headers={"baggage": "=" * 30_000, "tracestate": "a=" + "x" * 30_000})
            assert reply["ok"] is True  # the headers are ignored, as they should be
    longest = max(len(line) for line in written.getvalue().splitlines())
    assert longest < 4_000, f"a log line of {longest} characters, made by the caller's headers"


async def test_the_pending_gauge_counts_the_whole_backlog_while_the_broker_is_away(settings: Settings) -> None:
    mongo = mongo_client(settings.mongodb_url, settings.mongodb_timeout_ms)
    try:
        db = mongo[settings.database_name("review")]
        await db.notes.insert_many([
            with_outbox({"_id": f"n{i}", "text": "x"}, [NoteAdded(note_id=f"n{i}", text="x")]) for i in range(300)])
        metrics = Metrics("review", "0")
        # A broker that is away: nothing listens on its port, every publish fails.
        away = RabbitBroker(f"amqp://guest:guest@127.0.0.1:{free_port()}/")
        relay = OutboxRelay(away, EVENTS, db, ["notes"], poll_seconds=60, metrics=metrics)
        with pytest.raises(Exception):  # noqa: B017 - whatever the unconnected broker raises
            await relay.drain()
        pending = metrics.registry.get_sample_value("portal_outbox_pending_events", {"collection": "notes"})
    finally:
        await mongo.close()
    assert pending == 300, f"the gauge says {pending} events wait; 300 do"


SPAN_THEN_EXIT = ("from contracts.tracing import install; assert install('accounts', '9.9'); "
                  "from contracts.tracing import tracer; tracer().start_span('probe').end()")


def _seconds_to_run(**otel: str) -> float:
    started = time.monotonic()
    run_python(SPAN_THEN_EXIT, **otel)
    return time.monotonic() - started


def test_a_process_whose_collector_is_away_exits_as_promptly_as_with_it_up() -> None:
    with OtlpReceiver() as receiver:
        up = _seconds_to_run(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        assert receiver.spans  # the span went out as the process exited
    away = _seconds_to_run(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert away - up < 3.0, f"{away:.1f} s with the collector away, {up:.1f} s with it up"


class Kept(logging.Handler):
    """The records the root logger passes on while installed, with the message fields on them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(MessageFields("sample"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_command_without_a_correlation_id_is_logged_without_one(settings: Settings, amqp_url: str) -> None:
    note_id, kept = random_id("note"), Kept()
    root = logging.getLogger()
    level = root.level
    root.addHandler(kept)
    root.setLevel(logging.INFO)
    try:
        async with running(sample, settings):
            reply = await send_raw(amqp_url, "sample.open_note", {"note_id": note_id, "text": "hello"},
                                   message_id=uuid.uuid4().hex, correlation_id=None)
            assert reply["ok"] is True
    finally:
        root.removeHandler(kept)
        root.setLevel(level)
    [opened] = [record for record in kept.records if record.getMessage() == f"opening note {note_id}"]
    assert getattr(opened, "correlation_id", None) is None, "an id the sender never set"


# A valid `tracestate` and `baggage` as large as OpenTelemetry takes them (8,192 characters each). The baggage does
# not reach the events (the command's span is begun on the current context, not the extracted one); the state does.
BIG_TRACESTATE = ",".join(f"k{i}=" + "v" * 240 for i in range(32))[:8190]
BIG_BAGGAGE = ",".join(f"b{i}=" + "x" * 40 for i in range(180))[:8190]


async def test_a_caller_s_big_trace_state_does_not_ride_on_every_event(
        settings: Settings, amqp_url: str) -> None:
    note_id = random_id("note")
    with recorded_spans():
        async with running(sample, settings), copies(amqp_url, EVENTS_EXCHANGE, "sample.note.added") as events:
            reply = await send_raw(
                amqp_url, "sample.open_note", {"note_id": note_id, "text": "hello"}, message_id=uuid.uuid4().hex,
                correlation_id=uuid.uuid4().hex, headers={
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    "tracestate": BIG_TRACESTATE, "baggage": BIG_BAGGAGE})
            assert reply["ok"] is True
            await eventually(lambda: arrived(events))
    headers = events[0].headers
    assert "traceparent" in headers  # the event continues the trace, as it should
    size = sum(len(str(value)) for value in headers.values())
    assert size <= 1024, f"the event carries {size} characters of the caller's trace headers: {sorted(headers)}"
