"""Helpers of the notifier tests: an SMTP server that can refuse and restart, account events, mails."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiosmtpd.controller import Controller

from contracts.accounts import (
    EmailChangeRequested,
    EmailConfirmationRequested,
    Language,
    PasswordChanged,
    PasswordResetRequested,
    ProfileUpdated,
    UsernameReminderRequested,
    UserRegistered,
    VerificationDecided,
)
from contracts.base import Event, Page
from contracts.client import PortalClient
from contracts.notifier import Delivery, ListDeliveries
from deploy.local.deps import free_port
from tests.builders import publish_event, random_id
from tests.support import Mailbox


@dataclass
class RefusingMailbox(Mailbox):
    """A mailbox that answers RCPT for the addresses in `refuse` with the given reply."""

    refuse: dict[str, str] = field(default_factory=dict)
    raw: list[bytes] = field(default_factory=list)  # each message as it came over the wire

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.content)
        return await super().handle_DATA(server, session, envelope)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if reply := self.refuse.get(address.lower()):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on one fixed port, stopped and started again by the test."""

    def __init__(self) -> None:
        self.mailbox = RefusingMailbox(port=free_port())
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname=self.mailbox.host, port=self.mailbox.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def registered(email: str, language: Language = "en", **fields: Any) -> UserRegistered:
    values: dict[str, Any] = {
        "user_id": random_id("u"), "email": email, "language": language, "first_name": "Christine",
        "last_name": "Zimmermann", "username": "czimmermann",
        "confirmation_url": f"https://portal.example.test/confirm/{random_id()}",
        "expires_at": datetime.now(UTC) + timedelta(days=14), **fields}
    return UserRegistered(**values)


def confirmation_requested(email: str, language: Language = "en", *,
                           email_change: bool = False) -> EmailConfirmationRequested:
    return EmailConfirmationRequested(
        user_id=random_id("u"), email=email, language=language, username="czimmermann",
        confirmation_url=f"https://portal.example.test/confirm/{random_id()}",
        expires_at=datetime.now(UTC) + timedelta(days=14), email_change=email_change)


def password_changed(email: str, language: Language = "en") -> PasswordChanged:
    return PasswordChanged(user_id=random_id("u"), email=email, language=language, first_name="Christine")


def email_change_requested(email: str, language: Language = "en") -> EmailChangeRequested:
    return EmailChangeRequested(user_id=random_id("u"), email=email, language=language, username="czimmermann",
                                new_email="new.address@example.org")


def reset_requested(email: str, language: Language = "en") -> PasswordResetRequested:
    return PasswordResetRequested(
        user_id=random_id("u"), email=email, language=language, first_name="Christine",
        reset_url=f"https://portal.example.test/reset/{random_id()}", expires_at=datetime.now(UTC) + timedelta(hours=1))


def reminder_requested(email: str, language: Language = "en",
                       username: str = "czimmermann") -> UsernameReminderRequested:
    return UsernameReminderRequested(user_id=random_id("u"), email=email, language=language, username=username)


def verification_decided(email: str, language: Language = "en", *, approved: bool,
                         reason: str | None = None) -> VerificationDecided:
    return VerificationDecided(user_id=random_id("u"), email=email, language=language, username="czimmermann",
                               approved=approved, reason=reason)


def profile_updated(user_id: str, email: str, version: int, language: Language = "en") -> ProfileUpdated:
    return ProfileUpdated(user_id=user_id, email=email, language=language, username="czimmermann", version=version)


async def publish(amqp_url: str, event: Event, message_id: str | None = None) -> str:
    return await publish_event(amqp_url, event.routing_key, event.model_dump(mode="json"), message_id=message_id)


async def list_deliveries(portal: PortalClient, token: str, **filters: Any) -> Page[Delivery]:
    data = await portal.call(ListDeliveries.routing_key, filters, token=token)
    return Page[Delivery].model_validate(data)
