"""The typed async client for gateways: post a command, get its data or a typed error.

    async with PortalClient("amqp://guest:guest@127.0.0.1:5672/") as portal:
        health = await portal.health("metering")
        data = await portal.call("accounts.login", {"login": "...", "password": "..."}, lang="de")

It speaks only the wire of CATALOG §1 (raw aio-pika, direct reply-to), so it needs nothing
of the services' code.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from pydantic import BaseModel

from contracts.base import Health
from contracts.errors import ErrorCode
from contracts.topology import COMMANDS_EXCHANGE, health_command
from contracts.tracing import record_reply, sending_command

REPLY_QUEUE = "amq.rabbitmq.reply-to"


class PortalError(Exception):
    """A refused command: `code` is the catalogue's error code."""

    def __init__(self, code: str, message: str = "", fields: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message, self.fields = code, message, fields or {}


class InvalidMessage(PortalError): ...
class ValidationFailed(PortalError): ...
class Unauthenticated(PortalError): ...
class Forbidden(PortalError): ...
class NotFound(PortalError): ...
class Conflict(PortalError): ...
class RateLimited(PortalError): ...
class InternalError(PortalError): ...


class NotDelivered(Exception):
    """The command did not reach a queue: the broker is unavailable, or no service declared its queue yet."""


ERROR_TYPES: dict[str, type[PortalError]] = {
    ErrorCode.INVALID_MESSAGE: InvalidMessage,
    ErrorCode.VALIDATION_FAILED: ValidationFailed,
    ErrorCode.UNAUTHENTICATED: Unauthenticated,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.INTERNAL: InternalError,
}


def data_of(envelope: dict[str, Any]) -> dict[str, Any]:
    """A reply envelope's `data`, or the `PortalError` subclass of its code raised."""
    if not envelope.get("ok"):
        raise error_from(envelope.get("error") or {})
    data: dict[str, Any] = envelope.get("data") or {}
    return data


def error_from(error: dict[str, Any]) -> PortalError:
    code = str(error.get("code", ErrorCode.INTERNAL))
    return ERROR_TYPES.get(code, PortalError)(code, str(error.get("message", "")), error.get("fields") or {})


class PortalClient:
    def __init__(self, amqp_url: str, *, timeout: float = 10.0) -> None:
        self.amqp_url, self.timeout = amqp_url, timeout
        self._waiting: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._connection: AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._opening = asyncio.Lock()

    async def __aenter__(self) -> PortalClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection, or open it again after it was lost (a broker restart).

        A plain connection reopened on demand, rather than aio-pika's robust one: the
        direct reply-to consumer must exist before the first publish on the new channel.
        """
        async with self._opening:
            if self._connection is not None and not self._connection.is_closed:
                return
            connection = await aio_pika.connect(self.amqp_url)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            replies = await channel.get_queue(REPLY_QUEUE, ensure=False)
            await replies.consume(self._on_reply, no_ack=True)
            # Declared, not just named: a client may start before any service has declared it.
            self._exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                            durable=True)
            self._connection = connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None  # forgotten even if closing it fails
        if connection is not None:
            await connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)

    async def send(self, command: str, body: bytes, *, token: str | None = None, lang: str | None = None,
                   message_id: str | None = None, timeout: float | None = None,
                   transient: bool = False) -> dict[str, Any]:
        """Post raw bytes and return the whole decoded reply envelope.

        `transient`: not persistent, and expired by the broker once the caller stops waiting (`timeout`), so an
        unanswered command is neither left in its durable queue nor run after nobody wants its answer.
        """
        try:
            await self.connect()
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError) as error:
            raise NotDelivered(f"the broker is unavailable: {error!r}") from error
        correlation_id, message_id = uuid.uuid4().hex, message_id or uuid.uuid4().hex
        headers: dict[str, Any] = {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if lang:
            headers["accept-language"] = lang
        # `traceparent` (and `tracestate`) join the headers when tracing is on: optional headers, unknown to no one.
        with sending_command(command, headers, message_id=message_id, correlation_id=correlation_id) as span:
            envelope = await self._send(command, body, headers, message_id, correlation_id, timeout, transient)
            record_reply(span, envelope)
        return envelope

    async def _send(self, command: str, body: bytes, headers: dict[str, Any], message_id: str, correlation_id: str,
                    timeout: float | None, transient: bool = False) -> dict[str, Any]:
        assert self._exchange is not None
        wait = timeout or self.timeout
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            try:
                await self._exchange.publish(
                    aio_pika.Message(body, content_type="application/json", correlation_id=correlation_id,
                                     message_id=message_id, reply_to=REPLY_QUEUE,
                                     headers=headers, expiration=wait if transient else None,
                                     delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT if transient
                                     else aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=command, mandatory=True)
            except aio_pika.exceptions.DeliveryError as error:
                raise NotDelivered(f"nothing consumes {command!r}") from error
            # A channel the broker closed (a restart) raises ChannelInvalidStateError, no AMQPError: without closing
            # here, the connection still looked open and every later call failed on that channel.
            except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError,
                    ConnectionError) as error:
                await self.close()  # reopened by the next call
                raise NotDelivered(f"the broker is unavailable: {error!r}") from error
            reply = await asyncio.wait_for(future, wait)
        finally:
            self._waiting.pop(correlation_id, None)
        envelope: dict[str, Any] = json.loads(reply.body)
        return envelope

    async def call(self, command: str, payload: dict[str, Any] | BaseModel | None = None, *,
                   token: str | None = None, lang: str | None = None, message_id: str | None = None,
                   timeout: float | None = None) -> dict[str, Any]:
        """Post a command; return its `data`, or raise the `PortalError` subclass of its code."""
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json", exclude_none=True)
        return data_of(await self.send(command, json.dumps(payload or {}).encode(), token=token, lang=lang,
                                       message_id=message_id, timeout=timeout))

    async def health(self, service: str, *, timeout: float | None = None) -> Health:
        """`<service>.health`, sent transient: a probe nobody answers in `timeout` leaves nothing behind."""
        return Health.model_validate(data_of(await self.send(health_command(service), b"{}", timeout=timeout,
                                                             transient=True)))
