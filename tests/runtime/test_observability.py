"""Each service's /metrics counts and times what it handles; its JSON log lines name the message being handled."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import uuid
from pathlib import Path

import aio_pika
import pytest

from contracts.client import NotDelivered, PortalClient, ValidationFailed
from contracts.logs import MessageFields, TextFormatter, message_context
from deploy.local.deps import free_port
from services.runtime.metrics import Metrics
from services.runtime.settings import Settings
from tests.builders import publish_event, random_id, token_for
from tests.runtime.sample_service import Flaky, listener, sample
from tests.support import eventually, running, sample_value, scrape, start_service_process, wait_healthy


async def test_metrics_count_commands_by_outcome_and_code_time_them_and_know_no_other_names(
        settings: Settings, portal: PortalClient, amqp_url: str) -> None:
    sample_port, listener_port = free_port(), free_port()
    token, _ = token_for(settings)
    async with running(sample, settings.model_copy(update={"metrics_port": sample_port,
                                                           "metrics_host": "127.0.0.1"})), \
            running(listener, settings.model_copy(update={"metrics_port": listener_port,
                                                          "metrics_host": "127.0.0.1"})):
        before = await scrape(sample_port)
        assert sample_value(before, "portal_commands_total", command="sample.add_note", outcome="ok",
                            code="none") == 0

        await portal.call("sample.add_note", {"note_id": random_id(), "text": "hello"}, token=token)
        with pytest.raises(ValidationFailed):
            await portal.call("sample.add_note", {"note_id": "", "text": "hello"}, token=token)
        with pytest.raises(NotDelivered):  # no queue takes it: no series gets its name
            await portal.call("sample.no_such_command", {})
        flaky = random_id()
        await publish_event(amqp_url, Flaky.routing_key, {"key": flaky, "failures": 1})

        async def published() -> bool:  # and both commands counted: that comes just after their replies
            samples = await scrape(sample_port)
            return sample_value(samples, "portal_outbox_published_events_total", collection="notes") == 1 and \
                sample_value(samples, "portal_command_duration_seconds_count", command="sample.add_note") == 2

        async def both_handled() -> bool:
            heard = await scrape(listener_port)
            return all(sample_value(heard, "portal_events_total", event=event, outcome="handled") == 1
                       for event in (Flaky.routing_key, "sample.note.added"))
        await eventually(published)
        await eventually(both_handled)
        samples, heard = await scrape(sample_port), await scrape(listener_port)

    add_note = {"command": "sample.add_note"}
    assert sample_value(samples, "portal_commands_total", **add_note, outcome="ok", code="none") == 1
    assert sample_value(samples, "portal_commands_total", **add_note, outcome="refused", code="validation_failed") == 1
    assert sample_value(samples, "portal_command_duration_seconds_count", **add_note) == 2
    assert (sample_value(samples, "portal_command_duration_seconds_sum", **add_note) or 0) > 0
    assert sample_value(samples, "portal_command_duration_seconds_bucket", **add_note, le="+Inf") == 2
    commands = {dict(labels)["command"] for name, labels in samples if name == "portal_commands_total"}
    assert commands == {spec.name for spec in sample.commands}
    assert sample_value(samples, "portal_outbox_pending_events", collection="notes") == 0
    assert sample_value(samples, "portal_service_info", service="sample", version=_version(samples)) == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)

    # The listener took the note's event, and the flaky one: failed once, retried, handled.
    assert sample_value(heard, "portal_events_total", event="sample.note.added", outcome="handled") == 1
    assert sample_value(heard, "portal_events_total", event=Flaky.routing_key, outcome="retried") == 1
    assert sample_value(heard, "portal_event_duration_seconds_count", event=Flaky.routing_key) == 2


def _version(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> str:
    return next(dict(labels)["version"] for name, labels in samples if name == "portal_service_info")


async def test_a_service_process_writes_json_lines_that_carry_the_ids_the_caller_sent_and_its_events_too(
        settings: Settings, amqp_url: str, portal: PortalClient, tmp_path: Path) -> None:
    log_file = tmp_path / "sample.log"
    process = start_service_process("tests.runtime.sample_service", settings, "sample",
                                    extra_env={"PORTAL_LOG_FORMAT": "json"}, log_file=log_file)
    message_id, correlation_id, note_id = f"m-{uuid.uuid4().hex}", f"c-{uuid.uuid4().hex}", random_id()
    try:
        await wait_healthy(portal, "sample")
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            events = await channel.declare_queue(exclusive=True)
            await events.bind("portal.events", routing_key="sample.note.added")
            reply = await _send(amqp_url, "sample.open_note", {"note_id": note_id, "text": "logged"},
                                message_id=message_id, correlation_id=correlation_id)
            assert reply["ok"] is True
            async with events.iterator() as incoming:
                event = await asyncio.wait_for(anext(incoming), 10)
                await event.ack()
        # The event the command caused goes out (through the outbox) with the command's correlation id.
        assert json.loads(event.body)["note_id"] == note_id
        assert event.correlation_id == correlation_id
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0

    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]  # every line is JSON
    opened = [line for line in lines if line["message"] == f"opening note {note_id}"]
    assert len(opened) == 1
    assert opened[0] | {"time": None} == {
        "time": None, "level": "INFO", "logger": "__main__", "message": f"opening note {note_id}",
        "service": "sample", "command": "sample.open_note", "message_id": message_id,
        "correlation_id": correlation_id}
    # Lines outside a message name the service only; FastStream's own lines go the same way.
    ready = [line for line in lines if line["message"].startswith("sample ready")]
    assert ready and ready[0]["service"] == "sample" and "message_id" not in ready[0]
    assert any(line["logger"].startswith("faststream") for line in lines)


async def _send(amqp_url: str, command: str, body: dict[str, object], *, message_id: str,
                correlation_id: str) -> dict[str, object]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange("portal.commands", ensure=False)
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                                correlation_id=correlation_id, message_id=message_id,
                                                reply_to=replies.name), routing_key=command)
        async with replies.iterator() as incoming:
            reply = await asyncio.wait_for(anext(incoming), 10)
            await reply.ack()
    assert reply.correlation_id == correlation_id
    answer: dict[str, object] = json.loads(reply.body)
    return answer


def test_text_lines_show_the_message_compactly_after_the_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MessageFields("sample"))
    handler.setFormatter(TextFormatter("%(message)s"))
    logger = logging.getLogger(f"test.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    with message_context(service="sample", command="sample.open_note", message_id="m1", correlation_id="c1"):
        logger.info("opening note %s", "n1")
    logger.info("idle")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" sample INFO " + logger.name + ": opening note n1 [sample.open_note m=m1 c=c1]")
    assert second.endswith(" sample INFO " + logger.name + ": idle")


def test_a_refusal_code_outside_the_catalogue_is_counted_as_other() -> None:
    metrics = Metrics("sample", "0")
    metrics.command_answered("sample.open_note", {"ok": False, "error": {"code": "made_up_by_a_handler"}}, 0.01)
    metrics.command_answered("sample.open_note", {"ok": False, "error": {"code": "conflict"}}, 0.01)
    metrics.command_answered("sample.open_note", None, 0.01)
    counted = {tuple(sorted(sample.labels.items())): sample.value
               for family in metrics.registry.collect() if family.name == "portal_commands"
               for sample in family.samples if sample.name == "portal_commands_total"}
    assert counted == {
        (("code", "other"), ("command", "sample.open_note"), ("outcome", "refused")): 1,
        (("code", "conflict"), ("command", "sample.open_note"), ("outcome", "refused")): 1,
        (("code", "none"), ("command", "sample.open_note"), ("outcome", "unsent")): 1}
