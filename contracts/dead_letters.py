"""Dead letters: what an operator lists and replays of every service (`<service>.operator.*_dead_letters`).

Every queue dead-letters to `portal.dlx`, into `<queue>.dlq` (CATALOG §1). The shared runtime
answers these two commands for each of the six services, over that service's own queues.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from contracts.base import Command, PageRequest

QueueName = Field(min_length=1, max_length=255, description="One of the service's queues (not its `.dlq`).",
                  examples=["notifier.on.accounts.user.registered"])


def list_dead_letters_command(service: str) -> str:
    return f"{service}.operator.list_dead_letters"


def replay_dead_letters_command(service: str) -> str:
    return f"{service}.operator.replay_dead_letters"


class ListDeadLetters(PageRequest, Command):
    """The messages waiting in the service's dead-letter queues, oldest first, queue by queue; nothing is taken off.

    An unknown queue → `validation_failed` (the queues are the service's declared ones, not a resource that
    may or may not exist)."""

    queue: str | None = Field(default=None, min_length=1, max_length=255,
                              description="Only this queue's dead letters; default: every queue of the service.",
                              examples=["notifier.on.accounts.user.registered"])


class ReplayDeadLetters(Command):
    """Put dead letters back on their own queue (never on `portal.events`), with their attempts reset.

    Give `message_id` (every dead letter of the queue with that id) or `all: true` (what the queue held when
    the command started). A dead letter is removed only once the broker confirmed its copy; an event handled
    already is not handled again (events are deduplicated by `message_id`). No dead letter with that
    `message_id` → `not_found`; an unknown queue → `validation_failed`."""

    queue: str = QueueName
    message_id: str | None = Field(default=None, min_length=1, max_length=255,
                                   description="Replay the dead letters with this `message_id`.")
    all: bool = Field(default=False, description="Replay every dead letter of the queue.")

    @model_validator(mode="after")
    def one_or_all(self) -> ReplayDeadLetters:
        if (self.message_id is None) == (not self.all):
            raise ValueError("give either `message_id` or `all: true`")
        return self


BodyEncoding = Literal["json", "text", "base64", "omitted"]


class DeadLetter(BaseModel):
    """One dead-lettered message, as it was sent (minus secrets) and why it is here."""

    queue: str = Field(description="The queue it was dead-lettered from (its dead letters are in `<queue>.dlq`).")
    message_id: str | None = Field(description="The original's `message_id`: what `replay_dead_letters` takes.")
    correlation_id: str | None = None
    routing_key: str = Field(description="The routing key it was originally published with.",
                             examples=["accounts.user.registered"])
    reason: str = Field(
        description="`undecodable` (not the event's schema) or `failed` (its handler failed every attempt) when "
                    "the runtime dead-lettered it; else the broker's `x-death` reason (`rejected`, `expired`, "
                    "`maxlen`, `delivery_limit`).", examples=["failed"])
    error: str | None = Field(default=None, description="The handler's error (type: message), or why it could "
                                                        "not be decoded, when the runtime knows it.",
                              examples=["RuntimeError: SMTP server unavailable"])
    attempts: int | None = Field(default=None, description="How many times its handler ran before it was "
                                                           "dead-lettered, when the runtime counted them.")
    dead_lettered_at: datetime | None = Field(description="When it was dead-lettered last (UTC).")
    count: int = Field(description="How many times it was dead-lettered from this queue, replays included.")
    headers: dict[str, Any] = Field(description="The original's headers, without `authorization` and other "
                                                "secrets, and without the broker's and runtime's bookkeeping.")
    body: Any = Field(description="The original body: its JSON value, its text, or base64 (see `body_encoding`); "
                                  "null when `omitted`. In JSON, fields named like a password, secret or token, "
                                  "and texts holding a one-time link (`token=`), read `[redacted]`; a replay "
                                  "sends the original.")
    body_encoding: BodyEncoding = Field(description="`json`; `text` when it is UTF-8 but no JSON; `base64` "
                                                    "otherwise; `omitted` when larger than 64 KiB.")
    body_size: int = Field(description="The body's size in bytes.")


class ReplayedDeadLetters(BaseModel):
    replayed: int = Field(description="Dead letters put back on their queue by this command.")
