"""A service: its commands and event handlers declared once, run as a FastStream application.

`Service` is the declaration a service module builds with decorators; `ServiceInstance` is
one running copy of it (a broker connection, a Mongo client, an outbox relay). Operators
scale out by starting more processes: replicas compete on the same durable queues.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage
from faststream.specification import AsyncAPI
from pydantic import ValidationError

from contracts.accounts import SessionRevoked
from contracts.base import Command, Event, Health, HealthRequest, Reply
from contracts.dead_letters import (
    ListDeadLetters,
    ReplayDeadLetters,
    list_dead_letters_command,
    replay_dead_letters_command,
)
from contracts.logs import configure_logging
from contracts.topology import command_queue, event_queue, health_command
from contracts.tracing import install as install_tracing
from services.runtime import dead_letters
from services.runtime.batching import Lookups
from services.runtime.claims import ClaimStore
from services.runtime.commands import Access, CommandContext, CommandSpec, Replay, run_command
from services.runtime.events import EventContext, EventHandler, EventSpec, run_event
from services.runtime.metrics import Metrics
from services.runtime.mongo import Database, mongo_client
from services.runtime.outbox import OutboxRelay
from services.runtime.revocations import RevocationStore
from services.runtime.settings import Settings
from services.runtime.topology import (
    COMMANDS,
    EVENTS,
    QueueMismatch,
    declare_dead_letter_queue,
    durable_queue,
    explained_queue_mismatch,
)

log = logging.getLogger(__name__)

# A reply whose publish is not confirmed by then fails: its claim is completed and the command redelivered, so the
# caller's re-sent copies get the stored reply rather than waiting on a claim that is never completed. Confirms have
# been seen never to arrive under load (aio-pika #689), and none comes while the broker blocks publishers.
REPLY_TIMEOUT_SECONDS = 10.0

try:
    VERSION = version("service-portal")
except PackageNotFoundError:  # running from a tree that was not installed
    VERSION = "0.0.0"

StartupHook = Callable[["ServiceInstance"], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=Settings)


class Router:
    """Commands and event handlers declared together; a service includes routers (one per feature)."""

    def __init__(self) -> None:
        self.commands: list[CommandSpec] = []
        self.event_handlers: list[tuple[type[Event], EventHandler]] = []

    def command(self, name: str, request: type[Command], *, access: Access, replay: Replay = Replay.STORED,
                prefetch: int | None = None, claim_in_write: bool = False) -> Callable[[F], F]:
        """Register `handler(request, ctx)` for the command `name` (its routing key and queue).

        `replay=Replay.RERUN` for a command that only reads, or whose reply carries a secret;
        `prefetch` bounds how many of its messages one replica holds at once (big bodies: files);
        `claim_in_write=True` for a handler that changes state only through one `ctx.write_once(...)`.
        """
        def register(handler: F) -> F:
            description = inspect.getdoc(handler) or request.__doc__ or name
            self.commands.append(CommandSpec(name, request, handler, access, description, replay, prefetch,
                                             claim_in_write))
            return handler
        return register

    def event(self, model: type[Event]) -> Callable[[F], F]:
        """Register `handler(event, ctx)` for `model.routing_key`, on the service's own durable queue."""
        def register(handler: F) -> F:
            self.event_handlers.append((model, handler))
            return handler
        return register


class Service(Router):
    def __init__(self, name: str, *, description: str = "", outbox_collections: Sequence[str] = (),
                 emits: Sequence[type[Event]] = (), routers: Sequence[Router] = ()) -> None:
        """`outbox_collections` hold documents written `with_events`; `emits` lists their events for the docs."""
        super().__init__()
        self.name, self.description = name, description
        self.outbox_collections = list(outbox_collections)
        self.emits = list(emits)
        self.startup_hooks: list[StartupHook] = []
        self.background_loops: list[StartupHook] = []
        self.command(health_command(name), HealthRequest, access=Access.ANYONE, replay=Replay.RERUN)(self._health)
        self.command(list_dead_letters_command(name), ListDeadLetters, access=Access.OPERATOR,
                     replay=Replay.RERUN)(dead_letters.list_dead_letters)
        # Stored: a re-sent replay command gets the first one's reply and replays nothing more.
        self.command(replay_dead_letters_command(name), ReplayDeadLetters,
                     access=Access.OPERATOR)(dead_letters.replay_dead_letters)
        self.event(SessionRevoked)(_remember_revocation)
        for router in routers:
            self.commands.extend(router.commands)
            self.event_handlers.extend(router.event_handlers)

    @property
    def events(self) -> list[EventSpec]:
        return [EventSpec(model, event_queue(self.name, model.routing_key), handler)
                for model, handler in self.event_handlers]

    def on_startup(self, hook: StartupHook) -> StartupHook:
        """Run once the database is reachable, before consuming (indexes, bootstrap data)."""
        self.startup_hooks.append(hook)
        return hook

    def background(self, loop: StartupHook) -> StartupHook:
        """Run `loop(instance)` while the service consumes (schedulers, retries); cancelled on stop."""
        self.background_loops.append(loop)
        return loop

    async def _health(self, request: HealthRequest, ctx: CommandContext) -> Health:
        """Answers `{"service", "version", "status": "ok"}` once the broker and the database answer."""
        await ctx.db.command("ping")
        # `starting` until every queue is declared and consumed: subscribers start concurrently.
        return Health(service=self.name, version=VERSION, status="ok" if ctx.instance.ready else "starting")

    def instance(self, settings: Settings | None = None) -> ServiceInstance:
        return ServiceInstance(self, settings or Settings())

    def run(self) -> None:
        """The process entry point: `python -m services.<name>`; SIGTERM or Ctrl-C stops it gracefully."""
        try:
            settings = Settings()
        except ValidationError as error:
            problems = "; ".join(str(item["msg"]).removeprefix("Value error, ") for item in error.errors())
            sys.exit(f"{self.name} refuses to start: {problems}")
        configure_logging(level=settings.log_level, log_format=settings.log_format, service=self.name)
        instance = self.instance(settings)
        install_tracing(self.name, VERSION)  # installs nothing unless OTEL_* asks for traces
        try:
            with explained_queue_mismatch(settings):
                asyncio.run(instance.app.run(log_level=logging.INFO))
        except QueueMismatch as error:
            sys.exit(f"{self.name} refuses to start: {error}")


async def _remember_revocation(event: SessionRevoked, ctx: EventContext) -> None:
    await ctx.instance.revocations.add(event)


class ServiceInstance:
    """One running copy of a service."""

    def __init__(self, service: Service, settings: Settings) -> None:
        self.service, self.settings, self.name = service, settings, service.name
        # FastStream's own loggers write to stdout and stderr past the root logger's handler; these go through it,
        # so its lines have the process's format too. Per-message lines stay at DEBUG, below the default level.
        self.broker = RabbitBroker(settings.amqp_url, apply_types=False, graceful_timeout=settings.graceful_timeout,
                                   default_channel=Channel(prefetch_count=settings.prefetch),
                                   log_level=logging.DEBUG, logger=logging.getLogger("faststream_broker"))
        self.metrics = Metrics(service.name, VERSION)
        self.metrics.declare([spec.name for spec in service.commands],
                             [spec.model.routing_key for spec in service.events], service.outbox_collections)
        self.metrics_port: int | None = None  # where `/metrics` is served, once started
        self.mongo = mongo_client(settings.mongodb_url, settings.mongodb_timeout_ms)
        self.db: Database = self.mongo[settings.database_name(service.name)]
        self.claims = ClaimStore(self.db, lease=timedelta(seconds=settings.claim_lease_seconds),
                                 keep=timedelta(days=settings.idempotency_days))
        self.revocations = RevocationStore(self.db)
        self.lookups = Lookups(self.db)
        self.relay = OutboxRelay(self.broker, EVENTS, self.db, service.outbox_collections,
                                 poll_seconds=settings.outbox_poll_seconds, metrics=self.metrics)
        self.queues: dict[str, str] = {}  # each queue of this service and the routing key that binds it
        self.ready = False  # set once every subscriber consumes
        self.state: dict[str, Any] = {}  # what startup hooks prepare for the handlers of this process
        self._background: list[asyncio.Task[None]] = []
        for event_spec in service.events:
            self._subscribe_event(event_spec)
        for spec in service.commands:
            self._subscribe_command(spec)
        for event in service.emits:
            # Publishing goes through the outbox relay; this declaration documents the event.
            self.broker.publisher(routing_key=event.routing_key, exchange=EVENTS, schema=event, title=event.routing_key,
                                  description=event.__doc__)
        self.app = FastStream(
            self.broker,
            specification=AsyncAPI(title=service.name, version=VERSION, description=service.description),
            logger=logging.getLogger("faststream_app"),
            on_startup=[self._serve_metrics, self._connect_database],
            after_startup=[self._after_startup],
            on_shutdown=[self._stop_consuming],
            after_shutdown=[self._close_database, self._stop_metrics],
        )

    def _subscribe_command(self, spec: CommandSpec) -> None:
        queue = command_queue(spec.name)
        self.queues[queue] = spec.name

        async def handle(msg: RabbitMessage) -> None:
            await run_command(spec, msg, self)

        # FastStream documents the payload from the handler's signature; decoding and replying are ours.
        _document(handle, spec.name, spec.request, Reply)
        # run_command acks once answered, or leaves a command whose reply could not be sent for redelivery.
        self.broker.subscriber(
            durable_queue(self.settings, queue, spec.name), COMMANDS, decoder=_raw, title=spec.name,
            description=spec.description, ack_policy=AckPolicy.MANUAL, no_reply=True,
            channel=Channel(prefetch_count=spec.prefetch) if spec.prefetch else None,
        )(handle)

    async def reply(self, msg: RabbitMessage, reply: dict[str, Any]) -> None:
        """Send `reply` to the command's `reply_to` with its correlation id."""
        if not msg.reply_to:
            log.warning("command without reply_to answered into the void: message_id=%s", msg.message_id)
            return
        # Not mandatory: RabbitMQ bounces replies to direct reply-to as unroutable even when delivered.
        # Bounded around the whole publish: a channel waits for a blocked connection before its own timeout starts.
        async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
            await self.broker.publish(reply, routing_key=msg.reply_to, correlation_id=msg.correlation_id,
                                      content_type="application/json", mandatory=False)

    def _subscribe_event(self, spec: EventSpec) -> None:
        self.queues[spec.queue] = spec.model.routing_key

        async def handle(msg: RabbitMessage) -> None:
            await run_event(spec, msg, self)

        _document(handle, spec.queue, spec.model, None)
        self.broker.subscriber(
            durable_queue(self.settings, spec.queue, spec.model.routing_key), EVENTS, decoder=_raw, title=spec.queue,
            description=spec.model.__doc__, ack_policy=AckPolicy.MANUAL, no_reply=True,
        )(handle)

    def settings_as(self, kind: type[S]) -> S:
        """The settings as a service's own Settings subclass (a process gets a plain `Settings`), built once."""
        if isinstance(self.settings, kind):
            return self.settings
        key = f"settings:{kind.__qualname__}"
        if key not in self.state:
            self.state[key] = kind(**dict(self.settings))
        settings: S = self.state[key]
        return settings

    async def _serve_metrics(self) -> None:
        if self.settings.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
            log.info("%s metrics on %s:%d/metrics", self.name, self.settings.metrics_host, self.metrics_port)

    async def _stop_metrics(self) -> None:
        await asyncio.to_thread(self.metrics.close)
        self.metrics_port = None

    async def _connect_database(self) -> None:
        await self.db.command("ping")
        await self.claims.create_indexes()
        await self.revocations.create_indexes()
        for hook in self.service.startup_hooks:
            await hook(self)

    async def _after_startup(self) -> None:
        await self.broker.declare_exchange(EVENTS)
        for queue in self.queues:
            await declare_dead_letter_queue(self.broker, self.settings, queue)
        self.relay.start()
        for loop in self.service.background_loops:
            self._background.append(asyncio.create_task(_keep_running(loop, self), name=loop.__name__))
        self.ready = True
        if self.metrics_port is not None:
            self._background.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        log.info("%s ready: %d queues", self.service.name, len(self.queues))

    async def _heartbeat(self) -> None:
        """Keep `/healthz` (on the metrics port) ok while this process has started consuming (and is not stopping), its
        broker connection is up and its database answers: the container's probe asks this process, not any replica on
        the broker."""
        while True:
            # `ready` asked again after the check: a stop that began meanwhile wins over a check that passed.
            healthy = self.ready and await self._healthy() and self.ready
            self.metrics.healthy_until = time.monotonic() + HEALTH_FRESH_SECONDS if healthy else 0.0
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _healthy(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_CHECK_SECONDS):
                if not await self.broker.ping(HEALTH_CHECK_SECONDS):
                    log.warning("%s unhealthy: the broker connection is down", self.name)
                    return False
                await self.db.command("ping")
        except Exception as error:  # noqa: BLE001 - whatever fails, this process is not healthy
            log.warning("%s unhealthy: %r", self.name, error)
            return False
        return True

    async def _stop_consuming(self) -> None:
        self.ready = False
        self.metrics.healthy_until = 0.0
        # Stop taking messages and let in-flight ones finish (up to graceful_timeout),
        # then publish what they wrote to the outbox while the connection is still open.
        # Every step is bounded: a step that hangs (a consumer cancel the broker never confirms, a
        # loop that does not end) is logged and left behind, so the process still exits.
        grace = self.settings.graceful_timeout
        await asyncio.gather(*(_within(subscriber.stop(), grace + STOP_STEP_SECONDS, "stopping a consumer")
                               for subscriber in self.broker.subscribers))
        for task in self._background:
            task.cancel()
        await _within(asyncio.gather(*self._background, return_exceptions=True), STOP_STEP_SECONDS,
                      "stopping the background loops")
        self._background.clear()
        await _within(self.relay.stop(), grace + STOP_STEP_SECONDS, "the outbox relay's last drain")

    async def _close_database(self) -> None:
        await self.mongo.close()

    async def start(self) -> None:
        """Start without signal handling (tests, benchmarks); `stop()` undoes it."""
        try:
            with explained_queue_mismatch(self.settings):
                await self.app.start()
        except BaseException:
            await self._stop_metrics()  # served by the first startup hook; no after_shutdown hook runs now
            raise

    async def stop(self) -> None:
        await self.app.stop()


STOP_STEP_SECONDS = 5.0
# The heartbeat checks the broker connection and the database this often, each check bounded; a healthy answer
# holds for HEALTH_FRESH_SECONDS, so a hung event loop fails `/healthz` within that.
HEARTBEAT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 3.0
HEALTH_FRESH_SECONDS = 15.0


async def _within(step: Awaitable[Any], seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.error("shutdown: %s took over %.0f s; going on without it", what, seconds)


async def _keep_running(loop: StartupHook, instance: ServiceInstance) -> None:
    """A background loop that raises is logged and started again, never silently gone."""
    while True:
        try:
            await loop(instance)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop %s failed; restarting in 1 s", loop.__name__)
            await asyncio.sleep(1.0)


async def _raw(msg: RabbitMessage, original_decoder: Any = None) -> RabbitMessage:
    return msg


def _document(handle: Callable[..., Any], name: str, payload: type[Any], reply: type[Any] | None) -> None:
    parameter = inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=payload)
    handle.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [parameter], return_annotation=reply if reply is not None else inspect.Signature.empty)
    handle.__annotations__ = {"body": payload, **({"return": reply} if reply else {})}
    handle.__name__ = handle.__qualname__ = name.replace(".", "_")
