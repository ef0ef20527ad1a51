"""What every part of the benchmark shares: the broker and nx-27017, the services as processes, tokens, events.

One run brings its own world: an nx-27017 on a free port in a temp dir, and a fresh vhost per part on the RabbitMQ at
127.0.0.1:5672 (or a private node when none listens), all removed at the end. Each service runs as its own process
(`bench.server`), a fresh database per part.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiosmtpd.controller import Controller

from bench.server import launched
from contracts.base import Event
from contracts.client import NotDelivered, PortalClient
from contracts.topology import EVENTS_EXCHANGE
from deploy.local import deps
from services.runtime.mongo import Database, mongo_client
from services.runtime.tokens import Role, issue_token

TIMEOUT = 900.0  # for a command or its events: generous, so a missed goal is still measured
T = TypeVar("T")


@contextmanager
def rabbitmq(tmp: Path) -> Iterator[Callable[[], AbstractContextManager[str]]]:
    """The RabbitMQ at 127.0.0.1:5672, or a private node when none listens: a maker of fresh vhosts on it."""
    node: deps.LocalRabbitMQ | None = None
    if deps.rabbitmq_running():
        base_url = f"amqp://guest:guest@{deps.RABBITMQ_HOST}:{deps.RABBITMQ_PORT}/"
        vhosts = deps.VirtualHosts()
    else:
        node = deps.LocalRabbitMQ(tmp / "rabbitmq")
        node.start()
        base_url, vhosts = node.url, node.vhosts()

    @contextmanager
    def fresh_vhost() -> Iterator[str]:
        """The URL of a fresh vhost, deleted afterwards, so the broker keeps nothing of ours."""
        vhost = f"bench-{uuid.uuid4().hex[:12]}"
        vhosts.create(vhost)
        try:
            yield deps.with_vhost(base_url, vhost)
        finally:
            vhosts.delete(vhost)

    try:
        yield fresh_vhost
    finally:
        if node is not None:
            node.stop()


@contextmanager
def nx_27017(tmp: Path) -> Iterator[tuple[str, int]]:
    """A private nx-27017: its URL and pid (the services' writes cost CPU there too)."""
    process, url = deps.start_nx_27017(tmp / "nx-27017", deps.free_port())
    try:
        yield url, process.pid
    finally:
        deps.stop_process(process)


@dataclass(frozen=True)
class World:
    amqp_url: str
    mongo_url: str
    nx_pid: int
    secret: str  # the run's token secret, given to every service
    profile: Path | None = None  # where each service process writes its pyinstrument profile, if anywhere

    def env(self, prefix: str, **extra: str) -> dict[str, str]:
        """A service process's variables: the run's broker, database prefix and token secret, quiet logs; `extra`
        as PORTAL_<NAME> (e.g. smtp_port="2525")."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
        return {**inherited, "PORTAL_AMQP_URL": self.amqp_url, "PORTAL_MONGODB_URL": self.mongo_url,
                "PORTAL_DATABASE_PREFIX": prefix, "PORTAL_TOKEN_SECRET": self.secret, "PORTAL_LOG_LEVEL": "WARNING",
                **{f"PORTAL_{name.upper()}": value for name, value in extra.items()}}

    @contextmanager
    def service(self, name: str, prefix: str, **extra: str) -> Iterator[int]:
        """`services.NAME` as its own process until the block ends; its pid."""
        profile = () if self.profile is None else ("--profile", str(self.profile / f"{name}-{uuid.uuid4().hex[:6]}"))
        with launched("service", name, *profile, env=self.env(prefix, **extra)) as pid:
            yield pid

    @contextmanager
    def services(self, names: Sequence[str], prefix: str, **extra: str) -> Iterator[list[int]]:
        with ExitStack() as stack:
            yield [stack.enter_context(self.service(name, prefix, **extra)) for name in names]

    def token(self, role: Role = Role.CUSTOMER, customer_number: str | None = None,
              user_id: str | None = None) -> str:
        token, _ = issue_token(self.secret, user_id=user_id or f"bench-{uuid.uuid4().hex[:8]}", role=role,
                               now=datetime.now(UTC), lifetime=timedelta(hours=2), customer_number=customer_number)
        return token

    async def with_db(self, database: str, use: Callable[[Database], Awaitable[T]]) -> T:
        client = mongo_client(self.mongo_url, 120_000)
        try:
            return await use(client[database])
        finally:
            await client.close()


def fresh_prefix(part: str) -> str:
    return f"bench{part}{uuid.uuid4().hex[:6]}_"


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_ready(portal: PortalClient, *services: str) -> None:
    for service in services:
        for _ in range(600):
            try:
                if (await portal.health(service)).status == "ok":
                    break
            except (TimeoutError, NotDelivered):
                pass
            await asyncio.sleep(0.1)
        else:
            raise deps.DependencyError(f"{service} did not get ready")


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise deps.DependencyError(f"timed out waiting until {what}")
        await asyncio.sleep(0.2)


async def publish_events(amqp_url: str, events: Sequence[Event]) -> None:
    """Publish as their services would (persistent, confirmed, a message id each)."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for event in events:
            await exchange.publish(aio_pika.Message(event.model_dump_json().encode(), content_type="application/json",
                                                    message_id=uuid.uuid4().hex,
                                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   routing_key=event.routing_key)


async def drained(amqp_url: str, queues: Sequence[str]) -> None:
    """Wait until these queues hold no message ready: the consumers took in what was published (the last few of a
    prefetch may still be in hand)."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()

        async def empty() -> bool:
            for name in queues:
                queue = await channel.declare_queue(name, passive=True)
                if queue.declaration_result.message_count:
                    return False
            return True

        await wait_until(empty, f"{', '.join(queues)} drained")


class EventCounter:
    """The events under one routing key on `portal.events`, kept (bodies) or just counted, with the last arrival."""

    def __init__(self, amqp_url: str, routing_key: str, *, keep: bool = False) -> None:
        self.amqp_url, self.routing_key, self.keep = amqp_url, routing_key, keep
        self.count, self.last = 0, 0.0
        self.bodies: list[bytes] = []

    async def __aenter__(self) -> EventCounter:
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=self.routing_key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.count += 1
        self.last = time.monotonic()
        if self.keep:
            self.bodies.append(message.body)

    async def reached(self, target: int, timeout: float = TIMEOUT) -> float | None:
        """The monotonic time the `target`-th event arrived; None when it did not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.count < target:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.last


class MailSink:
    """An SMTP sink that counts: when each mail arrived, and which carried an attachment."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.attached: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        self.arrived.append(now)
        if b"multipart/mixed" in envelope.content:
            self.attached.append(now)
        return "250 accepted"


@contextmanager
def smtp_sink() -> Iterator[tuple[MailSink, int]]:
    """A MailSink on a free port of 127.0.0.1, in this process; the sink and its port."""
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=deps.free_port())
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()
