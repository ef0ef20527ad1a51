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
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aio_pika
from aiosmtpd.controller import Controller

from contracts.client import NotDelivered, PortalClient, PortalError
from contracts.dead_letters import list_dead_letters_command
from contracts.topology import EVENTS_EXCHANGE
from deploy.local.__main__ import stop_all
from deploy.local.deps import LocalRabbitMQ, free_port, start_nx_27017, stop_process
from services.runtime.service import Service, ServiceInstance
from services.runtime.settings import Settings


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


def start_service_process(module: str, settings: Settings, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=settings_env(settings, **extra_env))


@contextlib.contextmanager
def service_processes(names: Iterable[str], settings: Settings, log_dir: Path, *, stop_timeout: float = 20.0,
                      **extra_env: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each service of `names` as its own process (`python -m services.<name>`), its output in `<log_dir>/<name>.log`.

    Afterwards, also when the body failed, all get SIGTERM at once (so they drain in parallel) and those still running
    after `stop_timeout` are killed; then a service that did not stop cleanly (exit code 0) fails the caller.
    """
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in names:
            with open(log_dir / f"{name}.log", "wb") as output:  # the child keeps its own copy of the descriptor
                processes[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                                   env=settings_env(settings, **extra_env),
                                                   stdout=output, stderr=subprocess.STDOUT)
        yield processes
    finally:
        stop_all(processes, stop_timeout)
    unclean = {name: process.returncode for name, process in processes.items() if process.returncode != 0}
    assert not unclean, f"services that did not stop cleanly (exit codes; logs in {log_dir}): {unclean}"


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
    """Every event published on `portal.events` under `pattern`, as the outside world sees it."""

    def __init__(self, amqp_url: str, pattern: str = "#") -> None:
        self.amqp_url, self.pattern = amqp_url, pattern
        self.events: list[tuple[str, dict[str, Any]]] = []

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

    def named(self, routing_key: str) -> list[dict[str, Any]]:
        return [body for key, body in self.events if key == routing_key]

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


# --- service processes under fault: kill, restart, re-send --------------------------------------------------------

class ServiceProcesses:
    """The service processes of one test, by service name and replica: started, killed, restarted, and all stopped
    at the end (`stop_all`, from a fixture's `finally`), so none outlives its test."""

    def __init__(self, settings: Settings, **extra_env: str) -> None:
        self.settings, self.extra_env = settings, extra_env
        self.running: dict[str, list[subprocess.Popen[bytes]]] = {}

    def start(self, *names: str, replicas: int = 1) -> None:
        for name in names:
            self.running.setdefault(name, []).extend(
                start_service_process(f"services.{name}", self.settings, **self.extra_env) for _ in range(replicas))

    def kill(self, name: str) -> None:
        """SIGKILL every replica of `name`: no graceful stop, in-flight messages unacked, claims left held."""
        for process in self.running.pop(name, []):
            process.kill()
            process.wait(10)

    def stop_all(self) -> None:
        """SIGTERM to every process at once, SIGKILL to whichever has not exited after the grace."""
        named = {f"{name}#{index}": process for name, replicas in self.running.items()
                 for index, process in enumerate(replicas)}
        self.running.clear()
        stop_all(named, 20.0)


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
