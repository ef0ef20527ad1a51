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

A command whose handler changes one document can skip the claim before its handler
(`claim_in_write=True`): the handler hands its write and its reply to `ctx.write_once`, which
claims, writes and stores the reply in one round trip (claims.py). Until then the handler only
reads; a copy that finds the message id taken changes nothing and gets the same answers as
above, so the guarantees hold with one database round trip instead of three.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from faststream.rabbit import RabbitMessage
from pydantic import BaseModel, ValidationError

from contracts.base import Command
from contracts.errors import DEFAULT_LANGUAGE, ErrorCode, message_for, negotiate_language
from contracts.logs import current_field, message_context
from services.runtime import tracing
from services.runtime.claims import Claim, ClaimStore, Write, operations
from services.runtime.instance import Instance
from services.runtime.mongo import Database
from services.runtime.outbox import placed, tracking_emissions
from services.runtime.tokens import Claims, InvalidToken, Role, bearer_token, verify_token

log = logging.getLogger(__name__)

MESSAGE_ID_TAKEN = "already used for another command or by another caller"


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


class Answered(Exception):  # noqa: N818 - not an error: the command was answered before
    """Raised by `write_once` when an earlier copy of the command was applied: the runtime sends its reply."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__("answered by an earlier copy")
        self.reply = reply


@dataclass
class ClaimInWrite:
    """What `write_once` needs to claim the command with its write; `reply` once this copy applied it."""

    claims: ClaimStore
    scope: str
    message_id: str
    fingerprint: str
    # Whether the caller's session was revoked, looked up while the handler reads; awaited before the write.
    revoked: asyncio.Future[bool] | None = None
    reply: dict[str, Any] | None = None


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
    # Set for a command declared `claim_in_write`: its claim rides on its one write.
    claim_in_write: ClaimInWrite | None = field(default=None, repr=False)

    def namespace(self, collection: str) -> str:
        """`<database>.<collection>`: `write_once` takes an operation that names its collection this way."""
        return f"{self.db.name}.{collection}"

    async def write_once(self, write: Write | Sequence[Write], reply: BaseModel | dict[str, Any] | None) -> None:
        """Apply `write` (its `namespace` set; several operations are applied in order, the first failure stopping
        them) and store `reply` as the command's answer, in the same round trip as the command's claim. Return
        `reply` from the handler: the runtime sends it. A write that fails (a `DuplicateKeyError`, say) leaves
        nothing claimed: the handler may read again and call `write_once` anew.

        A copy of a command that was applied already changes nothing and ends the handler here: it gets the stored
        reply, or `conflict` when the message id is another caller's or another body's. A crash between the claim
        and the stored reply lets a copy take the command over and apply `write` again: filter it with
        `not_applied(ctx.message_id)` and mark it with `with_events(..., command_id=ctx.message_id)` (outbox.py),
        so the copy finds it applied and answers with its own `reply`."""
        pending = self.claim_in_write
        assert pending is not None, f"{self.command} is not declared claim_in_write"
        assert pending.reply is None, "a command declared claim_in_write writes once"
        await self.ensure_signed_in()
        answer = ok(reply)
        writes = operations(write)
        try:
            claim = await pending.claims.claim_with_write(pending.scope, pending.message_id, pending.fingerprint,
                                                          writes, answer, marker=self.message_id)
        except BaseException:
            placed(writes, written=False)
            raise
        placed(writes, written=claim.owned)
        if claim.foreign:
            raise CommandError(ErrorCode.CONFLICT, fields={"message_id": MESSAGE_ID_TAKEN})
        if not claim.owned:
            raise Answered(claim.reply or refused(ErrorCode.INTERNAL, self.language))
        pending.reply = answer

    async def ensure_signed_in(self) -> None:
        """Refuse (`unauthenticated`) a caller whose session was revoked. A `claim_in_write` handler reads while the
        revocation is looked up; `write_once` asks this first, and so must the handler before any write of its own
        before it (a number taken from a counter, a guard healed): a revoked caller changes nothing."""
        pending = self.claim_in_write
        if pending is not None and pending.revoked is not None and await pending.revoked:
            raise CommandError(ErrorCode.UNAUTHENTICATED)

    async def copy_under_way(self) -> bool:
        """For a `claim_in_write` handler whose `write_once` failed (its claim given back): whether another copy of the
        command has claimed it since, or answered it. Only when none has may the handler remove what a copy that died
        half-way left behind: anything else may be that other copy's work."""
        pending = self.claim_in_write
        assert pending is not None, f"{self.command} is not declared claim_in_write"
        return await pending.claims.exists(pending.scope, pending.message_id)

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
    # Its handler changes state only through one `ctx.write_once`, which carries the claim (module docstring).
    claim_in_write: bool = False


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
    started = time.perf_counter()
    # Every line logged while the command is handled names it and the ids its sender set.
    with message_context(service=instance.name, command=spec.name, message_id=sent_message_id(msg),
                         correlation_id=sent_correlation_id(msg)), tracing.handling_command(spec.name, msg):
        sent = await _run_command(spec, msg, instance)
    instance.metrics.command_answered(spec.name, sent, time.perf_counter() - started)


async def _run_command(spec: CommandSpec, msg: RabbitMessage, instance: Instance) -> dict[str, Any] | None:
    """`run_command`'s work; the reply sent, or None when it could not be."""
    try:
        reply, claim = await _answer(spec, msg, instance)
    except Exception as error:
        log.exception("command %s failed: message_id=%s correlation_id=%s",  # the ids made printable
                      spec.name, current_field("message_id"), current_field("correlation_id"))
        tracing.failed(error)
        reply, claim = refused(ErrorCode.INTERNAL, _language(msg)), None
    tracing.replied(reply)
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
        return None
    if claim is not None:
        await _complete(instance, claim, reply)
    await msg.ack()
    return reply


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


def sent_correlation_id(msg: RabbitMessage) -> str | None:
    """The `correlation_id` the sender set, if any; FastStream invents one when there is none."""
    correlation_id = msg.raw_message.correlation_id
    return correlation_id if isinstance(correlation_id, str) and correlation_id else None


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
    revoked: asyncio.Future[bool] | None = None
    if spec.access is not Access.ANYONE:
        claims = _verified_caller(msg, instance)
        if claims is None:
            return refused(ErrorCode.UNAUTHENTICATED, language), None
        # Looked up while the body is validated and the command claimed: one round trip fewer in sequence.
        revoked = asyncio.ensure_future(instance.revocations.is_revoked(claims))
    try:
        return await _answer_caller(spec, msg, instance, language, payload, claims, revoked)
    finally:
        if revoked is not None and not revoked.done():
            revoked.cancel()


async def _answer_caller(spec: CommandSpec, msg: RabbitMessage, instance: Instance, language: str,
                         payload: dict[str, Any], claims: Claims | None,
                         revoked: asyncio.Future[bool] | None) -> tuple[dict[str, Any], Claim | None]:
    """`_answer` once the caller's token is verified; `revoked` tells whether its session was revoked since.
    Every refusal waits for it first: a revoked caller is told `unauthenticated` whatever else is wrong."""
    unauthenticated = refused(ErrorCode.UNAUTHENTICATED, language)
    if revoked is not None and spec.access is Access.OPERATOR and claims is not None \
            and claims.role is not Role.OPERATOR:
        return unauthenticated if await revoked else refused(ErrorCode.FORBIDDEN, language), None
    try:
        request = spec.request.model_validate(payload)
    except ValidationError as error:
        if revoked is not None and await revoked:
            return unauthenticated, None
        return refused(ErrorCode.VALIDATION_FAILED, language, fields=field_problems(error)), None
    message_id = sent_message_id(msg)
    if message_id is None and spec.replay is Replay.STORED:
        if revoked is not None and await revoked:
            return unauthenticated, None
        # Without it a redelivered copy could not be told from a new command.
        return refused(ErrorCode.VALIDATION_FAILED, language, fields={
            "message_id": "required for a command that changes state"}), None

    sender = fingerprint(claims, payload)
    claim: Claim | None = None
    in_write: ClaimInWrite | None = None
    if message_id is not None and spec.replay is Replay.STORED and spec.claim_in_write:
        # Its handler only reads before `write_once`: the revocation is looked up meanwhile, and asked before the
        # write and before any answer.
        in_write = ClaimInWrite(instance.claims, spec.name, message_id, sender, revoked)
    elif message_id is not None and spec.replay is Replay.STORED:
        claiming = asyncio.ensure_future(instance.claims.claim(spec.name, message_id, sender))
        if revoked is not None and await _revoked_or_cancel(revoked, claiming):
            await _release_if_owned(instance, claiming)
            return unauthenticated, None
        claim = await claiming
        if claim.foreign:
            return refused(ErrorCode.CONFLICT, language, fields={"message_id": MESSAGE_ID_TAKEN}), None
        if not claim.owned:
            return claim.reply or refused(ErrorCode.INTERNAL, language), None
    if revoked is not None and in_write is None and await revoked:
        return unauthenticated, None
    context = CommandContext(
        command=spec.name, message_id=command_id(spec.name, message_id, sender) if message_id else None,
        correlation_id=msg.correlation_id, language=language, claims=claims, db=instance.db, instance=instance,
        claim_in_write=in_write)
    try:
        async with instance.claims.held(claim):
            with tracking_emissions() as emissions:
                result = await spec.handler(request, context)
    except Answered as answered:
        return answered.reply, None
    except BaseException as error:
        if claim is not None:
            # A refused or failed command changed nothing: a copy may run afresh, and refusals
            # (which anyone can provoke with new ids) take no room.
            await instance.claims.release(claim)
        if isinstance(error, Exception) and in_write is not None and revoked is not None and await revoked:
            return unauthenticated, None
        if isinstance(error, CommandError):
            return refused(error.code, language, fields=error.fields, message=error.message), None
        raise
    if emissions.any:
        instance.relay.wake(emissions.due)
    if in_write is not None and in_write.reply is not None:
        return in_write.reply, None  # stored already, with the write: what every copy gets
    if in_write is not None and revoked is not None and await revoked:
        return unauthenticated, None  # answered without writing (a read, or a re-run's earlier answer)
    return ok(result), claim


def _language(msg: RabbitMessage) -> str:
    header = msg.headers.get("accept-language")
    return negotiate_language(header) if isinstance(header, str) else DEFAULT_LANGUAGE


def _verified_caller(msg: RabbitMessage, instance: Instance) -> Claims | None:
    """The caller of a valid bearer token, else None; whether its session was revoked is asked apart."""
    header = msg.headers.get("authorization")
    token = bearer_token(header) if isinstance(header, str) else None
    if token is None:
        return None
    try:
        return verify_token(token, instance.settings.token_secret.get_secret_value())
    except InvalidToken:
        return None


async def _revoked_or_cancel(revoked: asyncio.Future[bool], claiming: asyncio.Future[Claim]) -> bool:
    """Whether the session was revoked; the claim going on meanwhile is awaited by the caller (or released)."""
    try:
        return await revoked
    except BaseException:
        claiming.cancel()
        await asyncio.gather(claiming, return_exceptions=True)
        raise


async def _release_if_owned(instance: Instance, claiming: asyncio.Future[Claim]) -> None:
    """A revoked caller's command is refused: give back the claim it took meanwhile (a refusal stores nothing)."""
    claim = await claiming
    if claim.owned:
        await instance.claims.release(claim)
