"""Command handling, in one place: decode, authenticate, validate, claim, handle, reply.

Every command gets exactly one reply in the catalogue's envelope, whatever its body, headers
or handler do: FastStream sends none when decoding fails or a handler raises (STACK_NOTES
§1), so the runtime does all of it itself. Only an answer that could not be sent leaves the
message unacknowledged, for redelivery.

Idempotency: a command that changes state claims its `message_id` before its handler runs,
and the handler's reply is stored with the claim, bound to a fingerprint of the caller and
the body. A re-sent copy from the same caller with the same body gets that reply and changes
nothing; the same id from another caller or with another body is refused (`conflict`).
Refusals, read-only answers and answers that carry a secret are not stored: a refused
command changed nothing, so running any of these again is harmless, and storing them would
let anyone grow the store with new ids or read a secret back by its id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from faststream.rabbit import RabbitMessage
from pydantic import BaseModel, ValidationError

from contracts.base import Command
from contracts.errors import DEFAULT_LANGUAGE, ErrorCode, message_for, negotiate_language
from services.runtime.claims import Claim
from services.runtime.instance import Instance
from services.runtime.mongo import Database
from services.runtime.tokens import Claims, InvalidToken, Role, bearer_token, verify_token

log = logging.getLogger(__name__)


class Access(StrEnum):
    ANYONE = "anyone"
    AUTH = "auth"
    OPERATOR = "operator"


class Replay(StrEnum):
    """What a re-sent copy of a command (same `message_id`) gets."""

    STORED = "stored"  # it changes state: applied once, the stored reply answers every copy
    RERUN = "rerun"  # it only reads, or its reply carries a secret: nothing is stored, a copy runs again


class CommandError(Exception):
    """A refusal: becomes `{"ok": false, "error": {...}}` with a catalogue code."""

    def __init__(self, code: str, *, fields: dict[str, str] | None = None, message: str | None = None) -> None:
        super().__init__(code)
        self.code, self.fields, self.message = code, fields or {}, message


@dataclass(frozen=True)
class CommandContext:
    command: str
    # The command's identity (`command_id`): the sender's message id bound to command, caller and
    # body. Derive new ids from it and mark applied commands with it.
    message_id: str | None
    correlation_id: str | None
    language: str
    claims: Claims | None
    db: Database
    instance: Instance

    @property
    def caller(self) -> Claims:
        """The signed-in caller; only for commands whose access is `auth` or `operator`."""
        assert self.claims is not None, "caller asked for in a command open to anyone"
        return self.claims


Handler = Callable[[Any, CommandContext], Awaitable[BaseModel | dict[str, Any] | None]]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    request: type[Command]
    handler: Handler
    access: Access
    description: str
    replay: Replay = Replay.STORED
    # Messages one replica takes at once from this command's queue; None: PORTAL_PREFETCH.
    prefetch: int | None = None


def ok(data: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return {"ok": True, "data": data or {}}


def refused(code: str, language: str, *, fields: dict[str, str] | None = None,
            message: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message or message_for(code, language),
                                   "fields": fields or {}}}


def decode_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not UTF-8 JSON holding an object."""
    try:
        value = json.loads(body.decode("utf-8"))  # decode first: json.loads(bytes) guesses UTF-16/32
    except (UnicodeDecodeError, ValueError, RecursionError):  # nested deeper than Python's parser recurses
        return None
    return value if isinstance(value, dict) else None


def field_problems(error: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for item in error.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        problems[path] = f"{problems[path]}; {item['msg']}" if path in problems else item["msg"]
    return problems


def fingerprint(claims: Claims | None, payload: dict[str, Any]) -> str:
    """Who sent which body: a stored reply answers only a copy with the same fingerprint."""
    caller = [claims.user_id, claims.session_id] if claims else None
    return hashlib.sha256(json.dumps([caller, payload], sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def run_command(spec: CommandSpec, msg: RabbitMessage, instance: Instance) -> None:
    """Answer `msg` once, then ack it; a reply that could not be sent leaves it for one redelivery."""
    try:
        reply, claim = await _answer(spec, msg, instance)
    except Exception:
        log.exception("command %s failed: message_id=%s correlation_id=%s",
                      spec.name, sent_message_id(msg), msg.correlation_id)
        reply, claim = refused(ErrorCode.INTERNAL, _language(msg)), None
    try:
        # The caller need not wait for the stored copy: a re-sent command arriving meanwhile
        # finds the claim still open and waits for it.
        await instance.reply(msg, reply)
    except Exception:
        if claim is not None:
            await _complete(instance, claim, reply)  # applied: the redelivery gets this reply
        if msg.raw_message.redelivered:  # a second failure: no hot loop, the dead-letter queue keeps it
            log.exception("reply to %s not sent again, dead-lettered: message_id=%s", spec.name, sent_message_id(msg))
            await msg.reject()
        else:
            log.exception("reply to %s not sent, redelivering: message_id=%s", spec.name, sent_message_id(msg))
            await msg.nack()
        return
    if claim is not None:
        await _complete(instance, claim, reply)
    await msg.ack()


COMPLETE_RETRY_SECONDS = (0.1, 0.5, 2.0)


async def _complete(instance: Instance, claim: Claim, reply: dict[str, Any]) -> None:
    """Store the reply of an applied command, retried briefly.

    The reply has gone out, so failing the message would gain nothing; if the database stays
    away, the claim's lease runs out and a re-sent copy runs the handler again, which its
    `not_applied` filter makes harmless.
    """
    for delay in (*COMPLETE_RETRY_SECONDS, None):
        try:
            await instance.claims.complete(claim, reply)
            return
        except Exception:
            if delay is None:
                log.exception("reply of %s not stored", claim.key)
                return
            await asyncio.sleep(delay)


def sent_message_id(msg: RabbitMessage) -> str | None:
    """The `message_id` the sender set; FastStream invents one when there is none, which would defeat idempotency."""
    message_id = msg.raw_message.message_id
    return message_id if isinstance(message_id, str) and message_id else None


def command_id(name: str, message_id: str, sender: str) -> str:
    """The command's identity: its message id bound to command, caller and body, so ids derived from it
    (new users, devices, uploads) and the `not_applied` markers made with it are never another caller's."""
    return hashlib.sha256(f"{name}\n{message_id}\n{sender}".encode()).hexdigest()[:32]


async def _answer(spec: CommandSpec, msg: RabbitMessage,
                  instance: Instance) -> tuple[dict[str, Any], Claim | None]:
    """The reply, and the claim to complete with it once sent (None when nothing is to be stored)."""
    language = _language(msg)
    if len(msg.body) > instance.settings.max_body_bytes:
        return refused(ErrorCode.VALIDATION_FAILED, language,
                       fields={"body": f"larger than {instance.settings.max_body_bytes} bytes"}), None
    payload = decode_object(msg.body)
    if payload is None:
        return refused(ErrorCode.INVALID_MESSAGE, language), None
    claims: Claims | None = None
    if spec.access is not Access.ANYONE:
        claims = await _authenticate(msg, instance)
        if claims is None:
            return refused(ErrorCode.UNAUTHENTICATED, language), None
        if spec.access is Access.OPERATOR and claims.role is not Role.OPERATOR:
            return refused(ErrorCode.FORBIDDEN, language), None
    try:
        request = spec.request.model_validate(payload)
    except ValidationError as error:
        return refused(ErrorCode.VALIDATION_FAILED, language, fields=field_problems(error)), None
    message_id = sent_message_id(msg)
    if message_id is None and spec.replay is Replay.STORED:
        # Without it a redelivered copy could not be told from a new command.
        return refused(ErrorCode.VALIDATION_FAILED, language, fields={
            "message_id": "required for a command that changes state"}), None

    sender = fingerprint(claims, payload)
    claim: Claim | None = None
    if message_id is not None and spec.replay is Replay.STORED:
        claim = await instance.claims.claim(spec.name, message_id, sender)
        if claim.foreign:
            return refused(ErrorCode.CONFLICT, language, fields={
                "message_id": "already used for another command or by another caller"}), None
        if not claim.owned:
            return claim.reply or refused(ErrorCode.INTERNAL, language), None
    context = CommandContext(
        command=spec.name, message_id=command_id(spec.name, message_id, sender) if message_id else None,
        correlation_id=msg.correlation_id, language=language, claims=claims, db=instance.db, instance=instance)
    try:
        async with instance.claims.held(claim):
            result = await spec.handler(request, context)
    except BaseException as error:
        if claim is not None:
            # A refused or failed command changed nothing: a copy may run afresh, and refusals
            # (which anyone can provoke with new ids) take no room.
            await instance.claims.release(claim)
        if isinstance(error, CommandError):
            return refused(error.code, language, fields=error.fields, message=error.message), None
        raise
    instance.relay.wake()
    return ok(result), claim


def _language(msg: RabbitMessage) -> str:
    header = msg.headers.get("accept-language")
    return negotiate_language(header) if isinstance(header, str) else DEFAULT_LANGUAGE


async def _authenticate(msg: RabbitMessage, instance: Instance) -> Claims | None:
    """The caller of a valid, unrevoked bearer token, else None."""
    header = msg.headers.get("authorization")
    token = bearer_token(header) if isinstance(header, str) else None
    if token is None:
        return None
    try:
        claims = verify_token(token, instance.settings.token_secret.get_secret_value())
    except InvalidToken:
        return None
    return None if await instance.revocations.is_revoked(claims) else claims
