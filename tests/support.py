"""Test helpers shared by every test module: running services, the SMTP mailbox, raw AMQP."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import aio_pika
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from contracts.client import NotDelivered, PortalClient, PortalError
from contracts.dead_letters import list_dead_letters_command
from contracts.topology import EVENTS_EXCHANGE
from deploy.local.__main__ import stop_all
from deploy.local.deps import LocalRabbitMQ, free_port, start_nx_27017, stop_process
from services.runtime.service import Service, ServiceInstance
from services.runtime.settings import Settings

# `PORTAL_TEST_QUEUE_TYPE=quorum` runs the tests on quorum queues (`make test-quorum`); settings fixtures pass it on.
TEST_QUEUE_TYPE: Literal["classic", "quorum"] = "quorum" if os.environ.get("PORTAL_TEST_QUEUE_TYPE") == "quorum" \
    else "classic"


@dataclass
class Mailbox:
    """What an aiosmtpd server on a free port received."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """The mails received for `address` (any case), oldest first."""
        return [message for message in self.messages
                if address.lower() in [recipient.addr_spec.lower() for recipient in message["To"].addresses]]


def plain_text(mail: EmailMessage) -> str:
    """The plain-text part of a mail the notifier sent (multipart/alternative, maybe inside multipart/mixed)."""
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None, "no plain-text part"
    return str(body.get_content())


@contextlib.contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """An aiosmtpd server on a free port while the block runs; what it received."""
    mailbox = Mailbox(port=free_port())
    controller = Controller(mailbox, hostname=mailbox.host, port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def running(service: Service, settings: Settings) -> AsyncIterator[ServiceInstance]:
    """One instance of `service` in this process, connected and consuming, stopped afterwards."""
    instance = service.instance(settings)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, step: float = 0.05) -> None:
    """Wait until `check()` holds; fail the test if it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a service process these settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            env[f"PORTAL_{name.upper()}"] = str(raw)
    return {**env, **extra}


def start_service_process(module: str, settings: Settings, *args: str, extra_env: Mapping[str, str] | None = None,
                          log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m <module> <args>` with these settings (and `extra_env`); its output appended to `log_file`, else
    shared with pytest's."""
    command, env = [sys.executable, "-m", module, *args], settings_env(settings, **(extra_env or {}))
    if log_file is None:
        return subprocess.Popen(command, env=env)
    with open(log_file, "ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


class ServiceProcesses:
    """Service processes (`python -m services.<name>`) by service name and replica: started, killed, restarted, and
    all stopped at the end, so none outlives its test or module. Each one's output goes to `<log_dir>/<name>.log` when
    a `log_dir` is given.

    `stop_all` sends every process SIGTERM at once (so they drain in parallel) and kills those still running after
    `stop_timeout`. Used as a context manager, it stops them when the block ends and then, if the block itself
    succeeded, fails the caller for a service that did not stop cleanly (exit code 0); a test that kills processes on
    purpose calls `stop_all` from its own `finally` instead."""

    def __init__(self, settings: Settings, *, extra_env: Mapping[str, str] | None = None, log_dir: Path | None = None,
                 stop_timeout: float = 20.0) -> None:
        self.settings, self.log_dir, self.stop_timeout = settings, log_dir, stop_timeout
        self.extra_env = dict(extra_env or {})
        self.running: dict[str, list[subprocess.Popen[bytes]]] = {}

    def start(self, *names: str, replicas: int = 1) -> None:
        for name in names:
            log_file = self.log_dir / f"{name}.log" if self.log_dir else None
            self.running.setdefault(name, []).extend(
                start_service_process(f"services.{name}", self.settings, extra_env=self.extra_env, log_file=log_file)
                for _ in range(replicas))

    def kill(self, name: str) -> None:
        """SIGKILL every replica of `name`: no graceful stop, in-flight messages unacked, claims left held."""
        for process in self.running.pop(name, []):
            process.kill()
            process.wait(10)

    def stop_all(self) -> dict[str, int]:
        """Every process stopped; their exit codes by `<name>#<replica>`."""
        named = {f"{name}#{index}": process for name, replicas in self.running.items()
                 for index, process in enumerate(replicas)}
        self.running.clear()
        stop_all(named, self.stop_timeout)
        return {name: process.returncode for name, process in named.items()}

    def __enter__(self) -> ServiceProcesses:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        unclean = {name: code for name, code in self.stop_all().items() if code != 0}
        if exc_type is None:  # else the block's own failure is the news
            logs = f"; logs in {self.log_dir}" if self.log_dir else ""
            assert not unclean, f"services that did not stop cleanly (exit codes{logs}): {unclean}"


async def retried_while(codes: Iterable[str], call: Callable[[], Awaitable[dict[str, Any]]],
                        timeout: float = 30.0) -> dict[str, Any]:
    """The reply of `call` once it is no longer refused with one of `codes`: what a service answers while the read
    model it decides from has not caught up with another service's events yet (`not_found`, `terms_not_accepted`).
    A refused command changes nothing, so sending it again is safe."""
    waiting_for = set(codes)
    replies: list[dict[str, Any]] = []

    async def answered() -> bool:
        try:
            replies.append(await call())
        except PortalError as error:
            if error.code not in waiting_for:
                raise
            return False
        return True
    await eventually(answered, timeout=timeout, step=0.3)
    return replies[-1]


async def wait_healthy(portal: PortalClient, service: str, timeout: float = 20.0) -> None:
    async def healthy() -> bool:
        try:
            return (await portal.health(service)).status == "ok"
        except (TimeoutError, PortalError, NotDelivered):
            return False
    await eventually(healthy, timeout=timeout, step=0.1)


class EventTap:
    """Every event published on `portal.events` under `pattern`, as the outside world sees it.

    Events are delivered at least once: two replicas' outbox relays may both publish an entry, with the same
    message id, which consumers drop (ARCHITECTURE "Idempotent events"). `handled` is what such a consumer sees."""

    def __init__(self, amqp_url: str, pattern: str = "#") -> None:
        self.amqp_url, self.pattern = amqp_url, pattern
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.message_ids: list[str | None] = []

    async def __aenter__(self) -> EventTap:
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=self.pattern)
        await queue.consume(self._collect, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _collect(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.events.append((message.routing_key or "", json.loads(message.body)))
        self.message_ids.append(message.message_id)

    def named(self, routing_key: str) -> list[dict[str, Any]]:
        return [body for key, body in self.events if key == routing_key]

    def handled(self, routing_key: str) -> list[dict[str, Any]]:
        """The events of that name once each by message id, as an idempotent consumer handles them."""
        seen: set[str | None] = set()
        once = []
        for (key, body), message_id in zip(self.events, self.message_ids, strict=True):
            if key == routing_key and message_id not in seen:
                seen.add(message_id)
                once.append(body)
        return once

    async def next(self, routing_key: str, where: Callable[[dict[str, Any]], bool] = lambda body: True,
                   timeout: float = 10.0) -> dict[str, Any]:
        """The first event of that name matching `where`, waiting for it if need be."""
        found: list[dict[str, Any]] = []

        async def arrived() -> bool:
            found[:] = [body for body in self.named(routing_key) if where(body)]
            return bool(found)
        await eventually(arrived, timeout=timeout)
        return found[0]


async def outcome(portal: PortalClient, command: str, body: Mapping[str, Any] | None = None,
                  token: str | None = None) -> str:
    """`ok`, or the error code the command was refused with."""
    try:
        await portal.call(command, dict(body or {}), token=token)
    except PortalError as error:
        return error.code
    return "ok"


async def dead_letters(portal: PortalClient, service: str, token: str,
                       queue: str | None = None) -> list[dict[str, Any]]:
    """The first page of `service`'s dead letters (of `queue`, if given), as the operator command lists them."""
    page = await portal.call(list_dead_letters_command(service), {"queue": queue} if queue else {}, token=token)
    items: list[dict[str, Any]] = page["items"]
    return items


# --- under fault: re-sent commands, a broker and a database of one's own ------------------------------------------

async def send_until_answered(portal: PortalClient, command: str, body: Mapping[str, Any], *,
                              token: str | None = None, message_id: str | None = None,
                              attempt_timeout: float = 3.0, give_up_after: float = 120.0) -> dict[str, Any]:
    """The reply envelope of `command`, re-sent with the same `message_id` while no reply comes (the service is
    down, restarting, or the broker is away), as a gateway does; fails the test if none comes in `give_up_after`."""
    message_id = message_id or uuid.uuid4().hex
    deadline = asyncio.get_running_loop().time() + give_up_after
    payload = json.dumps(dict(body)).encode()
    while True:
        try:
            return await portal.send(command, payload, token=token, message_id=message_id, timeout=attempt_timeout)
        except (TimeoutError, NotDelivered):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{command} ({message_id}) got no reply within {give_up_after} s") from None
            await asyncio.sleep(0.2)


def mails_by_recipient_and_subject(mailbox: Mailbox) -> Counter[tuple[str, str]]:
    """How many mails the SMTP server accepted per (recipient address, subject)."""
    return Counter((str(message["To"].addresses[0].addr_spec).lower(), str(message["Subject"]))
                   for message in mailbox.messages)


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[LocalRabbitMQ]:
    """A RabbitMQ node of the caller's own, so restarting it disturbs nobody; stopped and removed afterwards."""
    # Not under pytest's tmp_path: run as root, the node drops to the `rabbitmq` user,
    # which cannot enter pytest's private temporary folders.
    base = Path(tempfile.mkdtemp(prefix="portal-rabbitmq-"))
    node = LocalRabbitMQ(base)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


class PrivateMongo:
    """An nx-27017 of the caller's own on a fixed port and data directory, to kill, restart, pause and resume."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        self.process, self.url = start_nx_27017(self.data_dir, self.port)

    def kill(self) -> None:
        """SIGKILL: connections refused until `start` brings it back on the same port and data."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and every request hangs until `resume`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()  # a stopped process cannot act on SIGTERM
            stop_process(self.process)
            self.process = None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """What a service's `/metrics` on 127.0.0.1:`port` shows: each sample's value by its name and labels."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            return str(response.read().decode())
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(await asyncio.to_thread(get)) for sample in family.samples}


def sample_value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))
