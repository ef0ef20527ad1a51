"""Builders for test data: tokens, ids, raw AMQP messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aio_pika

from contracts.base import FileObject
from contracts.topology import EVENTS_EXCHANGE
from services.runtime.settings import Settings
from services.runtime.tokens import Claims, Role, issue_token


def random_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def token_for(settings: Settings, role: Role = Role.CUSTOMER, *, lifetime: timedelta = timedelta(hours=1),
              now: datetime | None = None, secret: str | None = None, **claims: Any) -> tuple[str, Claims]:
    secret = secret or settings.token_secret.get_secret_value()
    return issue_token(secret, user_id=claims.pop("user_id", random_id("u")), role=role,
                       now=now or datetime.now(UTC), lifetime=lifetime,
                       customer_number=claims.pop("customer_number", "C-1000"), **claims)



def operator_token(settings: Settings) -> str:
    """An operator's access token, signed with the settings' secret."""
    return token_for(settings, Role.OPERATOR)[0]


@asynccontextmanager
async def amqp_channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def publish_event(amqp_url: str, routing_key: str, body: dict[str, Any] | bytes,
                        message_id: str | None = None, headers: dict[str, Any] | None = None) -> str:
    message_id = message_id or uuid.uuid4().hex
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with amqp_channel(amqp_url) as channel:
        exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await exchange.publish(aio_pika.Message(raw, content_type="application/json", message_id=message_id,
                                                headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                               routing_key=routing_key)
    return message_id


async def drain_queue(amqp_url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting in `queue`, taken off it."""
    taken = []
    async with amqp_channel(amqp_url) as channel:
        declared = await channel.get_queue(queue, ensure=True)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


def random_email() -> str:
    return f"{random_id('p')}@example.com"


def sign_up(**overrides: Any) -> dict[str, Any]:
    """A valid `accounts.register` body; override what the test is about."""
    username = overrides.pop("username", random_id("user"))
    return {"email": random_email(), "username": username, "password": "correct horse battery",
            "password_confirm": "correct horse battery", "language": "en", "country": "DE",
            "accept_terms": True, "accept_privacy": True, **overrides}


def token_in(url: str) -> str:
    return url.split("token=", 1)[1]


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def proof(content: bytes = PDF, filename: str = "receipt.pdf", content_type: str = "application/pdf") -> dict[str, str]:
    return FileObject.from_bytes(filename, content_type, content).model_dump()


def random_serial(prefix: str = "AK6C") -> str:
    return f"{prefix}{uuid.uuid4().int % 1_000_000:06d}"


def device_registration(**overrides: Any) -> dict[str, Any]:
    """A valid `registration.register_device` body for a C332 bought today."""
    return {"serial_number": random_serial(), "purchase_date": date.today().isoformat(), "proof_of_purchase": proof(),
            "warranty_accepted": True, "location": {"same_as_contact": True}, **overrides}
