"""Command handling: every command gets exactly one reply, whatever its body or its handler does.

FastStream sends no reply when decoding fails or a handler raises (STACK_NOTES §1), so the
runtime decodes, authorises and validates itself, catches everything, and always returns
the catalogue's envelope. The reply is stored under the command's `message_id`, so a
re-sent copy is answered the same and applied once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from faststream.rabbit import RabbitMessage
from pydantic import BaseModel, ValidationError

from contracts.base import Command
from contracts.errors import ErrorCode, message_for, negotiate_language
from services.runtime.mongo import Database
from services.runtime.tokens import Claims, InvalidToken, Role, bearer_token, verify_token

if TYPE_CHECKING:
    from services.runtime.service import ServiceInstance

log = logging.getLogger(__name__)


class Access(StrEnum):
    ANYONE = "anyone"
    AUTH = "auth"
    OPERATOR = "operator"


class CommandError(Exception):
    """A refusal: becomes `{"ok": false, "error": {...}}` with a catalogue code."""

    def __init__(self, code: str, *, fields: dict[str, str] | None = None, message: str | None = None) -> None:
        super().__init__(code)
        self.code, self.fields, self.message = code, fields or {}, message


@dataclass(frozen=True)
class CommandContext:
    command: str
    message_id: str | None
    correlation_id: str | None
    language: str
    claims: Claims | None
    db: Database
    instance: ServiceInstance

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
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def field_problems(error: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for item in error.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        problems[path] = f"{problems[path]}; {item['msg']}" if path in problems else item["msg"]
    return problems


async def run_command(spec: CommandSpec, msg: RabbitMessage, instance: ServiceInstance) -> None:
    """Answer `msg`, then store the answer; the message is acked after both."""
    language = negotiate_language(msg.headers.get("accept-language"))
    body = msg.body
    if len(body) > instance.settings.max_body_bytes:
        await instance.reply(msg, refused(ErrorCode.VALIDATION_FAILED, language,
                                          fields={"body": f"larger than {instance.settings.max_body_bytes} bytes"}))
        return
    payload = decode_object(body)
    if payload is None:
        await instance.reply(msg, refused(ErrorCode.INVALID_MESSAGE, language))
        return

    claim = await instance.claims.claim(spec.name, msg.message_id) if msg.message_id else None
    if claim is not None and not claim.owned:
        await instance.reply(msg, claim.reply or refused(ErrorCode.INTERNAL, language))
        return
    try:
        reply = await _authorise_validate_handle(spec, msg, payload, language, instance)
    except Exception:
        log.exception("command %s failed: message_id=%s correlation_id=%s",
                      spec.name, msg.message_id, msg.correlation_id)
        if claim is not None:
            await instance.claims.release(claim)  # nothing was applied: a retry may run it afresh
        await instance.reply(msg, refused(ErrorCode.INTERNAL, language))
        return
    # The caller need not wait for the stored copy: a re-sent command arriving meanwhile
    # finds the claim still open and waits for it.
    await instance.reply(msg, reply)
    if claim is not None:
        await instance.claims.complete(claim, reply)


async def _authorise_validate_handle(spec: CommandSpec, msg: RabbitMessage, payload: dict[str, Any],
                                     language: str, instance: ServiceInstance) -> dict[str, Any]:
    claims: Claims | None = None
    if spec.access is not Access.ANYONE:
        token = bearer_token(msg.headers.get("authorization"))
        if token is None:
            return refused(ErrorCode.UNAUTHENTICATED, language)
        try:
            claims = verify_token(token, instance.settings.token_secret.get_secret_value())
        except InvalidToken:
            return refused(ErrorCode.UNAUTHENTICATED, language)
        if await instance.revocations.is_revoked(claims):
            return refused(ErrorCode.UNAUTHENTICATED, language)
        if spec.access is Access.OPERATOR and claims.role is not Role.OPERATOR:
            return refused(ErrorCode.FORBIDDEN, language)
    try:
        request = spec.request.model_validate(payload)
    except ValidationError as error:
        return refused(ErrorCode.VALIDATION_FAILED, language, fields=field_problems(error))

    context = CommandContext(command=spec.name, message_id=msg.message_id, correlation_id=msg.correlation_id,
                             language=language, claims=claims, db=instance.db, instance=instance)
    try:
        result = await spec.handler(request, context)
    except CommandError as error:
        return refused(error.code, language, fields=error.fields, message=error.message)
    instance.relay.wake()
    return ok(result)
