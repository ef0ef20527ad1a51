"""Property-based fuzzing of every command's body and headers, published with raw aio-pika to the six services running
in this process: valid example bodies (tests/isolation/examples.py) mutated with wrong types, missing and extra
fields, huge strings up to and beyond the runtime's body limit, deep nesting and unicode oddities, or replaced by
non-JSON bytes and non-object JSON; headers missing, garbled, forged, expired, signed with another secret, of the
wrong role, in odd languages or huge.

Every message gets exactly one reply carrying a catalogue error code (or `ok` where the input happens to be valid),
never `internal`; the generic codes come in the runtime's order (size, JSON object, token, role). Afterwards every
service and every command queue still answers, the memory of this process (which holds all six services) has grown by
less than a generous bound, and known-good commands get their right answers.

`HYPOTHESIS_PROFILE=deep` runs many more examples (tests/isolation/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import aio_pika
import jwt
import pytest
import pytest_asyncio
from hypothesis import example, given
from hypothesis import strategies as st

from contracts.client import PortalClient
from contracts.errors import SERVICE_CODES, ErrorCode
from contracts.topology import COMMANDS_EXCHANGE
from services.runtime.commands import Access, CommandSpec
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import token_for
from tests.isolation.conftest import SERVICES
from tests.isolation.examples import example_bodies
from tests.isolation.world import PASSWORD, World, build_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMMANDS: dict[str, CommandSpec] = {spec.name: spec for service in SERVICES for spec in service.commands}
CODE_ENUMS: tuple[type[StrEnum], ...] = (ErrorCode, *SERVICE_CODES)
CATALOGUE_CODES = {str(code) for codes in CODE_ENUMS for code in codes}
REPLY_TIMEOUT = 30.0
# This process holds all six services. Objects still alive after the fuzzing, of all six: keeping the bodies (dozens
# of 10 MB) or a few KB per message would pass it (measured: 2.5 MiB after 2,100 messages, 6.5 MiB after 16,100).
OBJECTS_BOUND_BYTES = 64 * 1024 * 1024
# The resident set besides: freed 10 MB bodies stay with the allocator, so only a generous bound.
RESIDENT_BOUND_BYTES = 1536 * 1024 * 1024


# --- a raw client ---------------------------------------------------------------------------------------------------

class EmptyMessageId(str):
    """An empty `message_id` that aiormq sends as is: it replaces every falsy id with a random one, so a client that
    sends none cannot otherwise be played with aio-pika. The runtime treats empty as missing."""

    def __bool__(self) -> bool:
        return True


@dataclass
class Sent:
    command: str
    body: bytes
    headers: dict[str, Any]
    message_id: str
    expects_reply: bool
    expected: str | None  # the one code the runtime must answer with, None: any catalogue code or ok


class RawPortal:
    """Publishes any bytes and headers to `portal.commands`; collects every reply by correlation id."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.replies: dict[str, int] = {}  # correlation id -> replies that came
        self.sent: dict[str, tuple[str, bool]] = {}  # correlation id -> command, whether it named a reply_to
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example: not every reply
        return f"RawPortal({len(self.sent)} sent)"

    async def __aenter__(self) -> RawPortal:
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel(publisher_confirms=True)
        self.queue = await channel.declare_queue(exclusive=True)
        await self.queue.consume(self._on_reply, no_ack=True)
        self.exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id or ""
        try:
            reply = json.loads(message.body)
        except ValueError:
            reply = {"undecodable": message.body[:200].decode("latin-1")}
        self.replies[correlation_id] = self.replies.get(correlation_id, 0) + 1
        future = self._waiting.pop(correlation_id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def send(self, sent: Sent, content_type: str | None = "application/json") -> dict[str, Any] | None:
        """The first reply, or None for a message without `reply_to`."""
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if sent.expects_reply:
            self._waiting[correlation_id] = future
        await self.exchange.publish(aio_pika.Message(
            sent.body, content_type=content_type, correlation_id=correlation_id, message_id=sent.message_id,
            reply_to=self.queue.name if sent.expects_reply else None, headers=sent.headers), routing_key=sent.command)
        self.sent[correlation_id] = sent.command, sent.expects_reply  # not the body: some are 10 MB
        if not sent.expects_reply:
            return None
        return await asyncio.wait_for(future, REPLY_TIMEOUT)

    async def quiet(self, seconds: float = 2.0) -> None:
        """Time for a second reply to any message to arrive, if one were sent."""
        await asyncio.sleep(seconds)

    def replies_per_message(self) -> dict[str, int]:
        """The messages that did not get exactly the replies they asked for (one, or none without `reply_to`)."""
        return {f"{command} {correlation_id}": self.replies.get(correlation_id, 0)
                for correlation_id, (command, expects_reply) in self.sent.items()
                if self.replies.get(correlation_id, 0) != int(expects_reply)}


# --- fixtures -------------------------------------------------------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(stack: dict[str, ServiceInstance], portal: PortalClient, settings: Settings, amqp_url: str) -> World:
    return await build_world(portal, settings, stack, amqp_url)


def resident_bytes() -> int:
    """This process's resident set: all six services live in it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass(frozen=True)
class Memory:
    traced: int  # bytes Python holds in objects allocated since tracing started
    resident: int


def memory_now() -> Memory:
    gc.collect()
    return Memory(tracemalloc.get_traced_memory()[0], resident_bytes())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def memory_at_start(world: World) -> AsyncIterator[Memory]:
    tracemalloc.start()
    try:
        yield memory_now()
    finally:
        tracemalloc.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def raw(amqp_url: str, stack: dict[str, ServiceInstance], memory_at_start: Memory) -> AsyncIterator[RawPortal]:
    async with RawPortal(amqp_url) as client:
        yield client


# --- strategies -----------------------------------------------------------------------------------------------------

# Text that has broken parsers, databases, templates and spreadsheets before.
ODD_PIECES = ["\u202e", "\u200f", "\u200b", "\ufeff", "\u0301" * 40, "\x00", "\x1b[31m", "\U0001f4a9", "İ", "ß", "ﬃ",
              "\r\n", "\t", "\\", '"', "'", "{{ 7*7 }}", "{% raw %}", "=HYPERLINK(\"x\")", "<script>", "%s%n",
              "../../etc/passwd", "$where", "$gt", "a.b", "\u2028", "\ud7ff", "\uffff", "Ω" * 3, "𝔘𝔫𝔦"]
odd_text = st.lists(st.sampled_from(ODD_PIECES) | st.text(max_size=4), min_size=1, max_size=6).map("".join)
leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30), odd_text)
json_values = st.recursive(leaves, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8) | odd_text, children, max_size=4), max_leaves=10)

# JSON tokens Python's parser accepts beyond the standard, and numbers no database stores.
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "123456789012345678901234567890", "-0", "0.0",
              '"\\ud800"', '"\\udfff"', '"\\ud83d"', '"x\\ud800y"', '"\\u0000"', '"\\ud83d\\ude00"']
NOT_OBJECTS = [b"", b" ", b"null", b"true", b"0", b"[]", b'"{}"', b"[{}]", b"{", b"}", b"{}}", b'{"a":}',
               b"\xff\xfe{\x00}\x00", b"\xef\xbb\xbf{}", b"{}\x00", '{"ä": 1}'.encode("latin-1"),
               '{"a": 1}'.encode("utf-16"), b"\x80abc", b"<xml/>", b"%PDF-1.4"]
PLACEHOLDER = "\u0007placeholder\u0007"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key or index inside `value`, as a path from the top."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def set_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = set_at(copy[path[0]], path[1:], new)
    return copy


def drop_at(value: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        copy: Any = dict(value) if isinstance(value, dict) else list(value)
        del copy[path[0]]
        return copy
    return set_at(value, path[:1], drop_at(value[path[0]], path[1:]))


def nested(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


def nested_bytes(depth: int) -> bytes:
    """Deeper than Python builds recursively: written out as text."""
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def bodies(draw: st.DrawFn, example_body: dict[str, Any], max_body: int) -> bytes:
    """The example body, mutated one way (or kept)."""
    where = draw(st.sampled_from([(), *paths(example_body)]))
    how = draw(st.sampled_from(["keep", "replace", "drop", "extra", "odd", "huge", "deep", "deeper", "token",
                                "not_object", "binary"]))
    body: Any = example_body
    if how == "replace":
        body = set_at(body, where, draw(json_values))
    elif how == "drop" and where:
        body = drop_at(body, where)
    elif how == "extra":
        body = {**body, draw(st.text(max_size=12) | odd_text): draw(json_values)}
    elif how == "odd":
        body = set_at(body, where, draw(odd_text))
    elif how == "huge":
        # About that many bytes once escaped (up to 12 per character): around the runtime's limit, not far beyond.
        size = draw(st.sampled_from([10_000, 300_000, max_body - 100, max_body + 1, max_body + 1_000_000]))
        character = draw(st.sampled_from(["x", "ä", "\u0301", "\U0001f4a9"]))
        body = set_at(body, where, character * (size // (len(json.dumps(character)) - 2)))
    elif how == "deep":
        body = set_at(body, where, nested(draw(st.sampled_from([20, 200, 900])), draw(leaves), draw(st.booleans())))
    elif how == "deeper":
        return nested_bytes(draw(st.sampled_from([1_000, 5_000, 100_000])))
    elif how == "token":
        text = json.dumps(set_at(body, where, PLACEHOLDER))
        return text.replace(json.dumps(PLACEHOLDER), draw(st.sampled_from(RAW_TOKENS))).encode()
    elif how == "not_object":
        return draw(st.sampled_from(NOT_OBJECTS) | json_values.map(lambda value: json.dumps(value).encode())
                    | st.binary(max_size=64))
    elif how == "binary":
        return draw(st.binary(min_size=1, max_size=256))
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Identity:
    """Whose token a draw is minted for: fresh sessions, so a fuzzed logout ends none of the world's."""

    role: Role
    user_id: str
    customer_number: str | None = None
    contract_number: str | None = None


def identities(world: World) -> dict[str, Identity]:
    a, b = world.a, world.b
    return {"a": Identity(Role.CUSTOMER, a.user_id, a.number), "b": Identity(Role.CUSTOMER, b.user_id, b.number),
            "dealer": Identity(Role.DEALER, world.identities["dealer"]),
            "contract": Identity(Role.CUSTOMER, world.identities["contract"], a.number, a.contracts[1]),
            "operator": Identity(Role.OPERATOR, "operator-fuzz")}


def mint(settings: Settings, who: Identity, **options: Any) -> str:
    return token_for(settings, who.role, user_id=who.user_id, customer_number=who.customer_number,
                     contract_number=who.contract_number, **options)[0]


def tampered(token: str, **claims: Any) -> str:
    """The token with its claims changed and its signature kept."""
    head, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{head}.{changed}.{signature}"


@st.composite
def authorizations(draw: st.DrawFn, settings: Settings, world: World) -> tuple[Any, Role | None]:
    """An `authorization` header value (or None: no header) and the role it really proves (None: no valid token)."""
    who = draw(st.sampled_from(sorted(identities(world).items())))[1]
    good = mint(settings, who)
    kind = draw(st.sampled_from(["valid", "valid", "valid", "lowercase", "missing", "empty", "scheme_only",
                                 "basic", "garbled", "expired", "other_secret", "alg_none", "tampered_role",
                                 "unknown_role", "no_expiry", "not_a_string", "huge", "odd"]))
    if kind == "valid":
        return f"Bearer {good}", who.role
    if kind == "lowercase":
        return f"bearer   {good}  ", who.role
    if kind == "expired":
        return f"Bearer {mint(settings, who, lifetime=timedelta(hours=-1))}", None
    if kind == "other_secret":
        return f"Bearer {mint(settings, who, secret='another-secret-of-enough-length-0123456789')}", None
    if kind == "alg_none":
        claims = jwt.decode(good, options={"verify_signature": False})
        return f"Bearer {jwt.encode({**claims, 'role': 'operator'}, '', algorithm='none')}", None
    if kind == "tampered_role":
        return f"Bearer {tampered(good, role='operator', cus=world.a.number)}", None
    if kind == "unknown_role":
        claims = {**jwt.decode(good, options={"verify_signature": False}), "role": "administrator"}
        return f"Bearer {jwt.encode(claims, settings.token_secret.get_secret_value(), algorithm='HS256')}", None
    if kind == "no_expiry":
        claims = jwt.decode(good, options={"verify_signature": False})
        claims.pop("exp")
        return f"Bearer {jwt.encode(claims, settings.token_secret.get_secret_value(), algorithm='HS256')}", None
    value: Any = {
        "missing": None, "empty": "", "scheme_only": "Bearer", "basic": "Basic dXNlcjpwYXNz",
        "garbled": f"Bearer {draw(st.text(max_size=60))}", "huge": "Bearer " + "A" * 30_000,
        "odd": f"Bearer {draw(odd_text)}",
        "not_a_string": draw(st.sampled_from([7, 2**40, 1.5, True, ["Bearer", good], {"token": good}])),
    }[kind]
    return value, None


languages = st.one_of(st.none(), st.sampled_from(["de", "en", "nb", "nb-NO,nb;q=0.9,en;q=0.8", "*", "DE-de", "xx",
                                                  "de;q=abc", ",,,", "\u202ede", "a" * 20_000]),
                      st.text(max_size=40), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                      st.lists(st.text(max_size=3), max_size=2))
message_ids = st.one_of(st.uuids().map(str), st.just(EmptyMessageId("")), st.text(min_size=1, max_size=60),
                        st.just("m" * 255))
extra_headers = st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=50),
    # No infinities: RabbitMQ's own header parser crashes the channel on them, before any service sees the message.
    st.floats(width=32, allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)), max_size=3)


def expected_code(spec: CommandSpec, body: bytes, role: Role | None, max_body: int) -> str | None:
    """The generic code the runtime must answer with, in its order of checks; None when the command decides."""
    if len(body) > max_body:
        return ErrorCode.VALIDATION_FAILED
    try:
        is_object = isinstance(json.loads(body.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError, RecursionError):
        is_object = False
    if not is_object:
        return ErrorCode.INVALID_MESSAGE
    if spec.access is not Access.ANYONE and role is None:
        return ErrorCode.UNAUTHENTICATED
    if spec.access is Access.OPERATOR and role is not Role.OPERATOR:
        return ErrorCode.FORBIDDEN
    return None


def check_reply(sent: Sent, reply: dict[str, Any] | None) -> None:
    if not sent.expects_reply:
        return
    assert isinstance(reply, dict), reply
    if reply.get("ok") is True:
        assert isinstance(reply.get("data"), dict), reply
        assert sent.expected is None, f"{sent.command} answered ok, expected {sent.expected}"
        return
    error = reply.get("error") or {}
    assert reply.get("ok") is False and isinstance(error.get("message"), str) and error["message"], reply
    assert isinstance(error.get("fields"), dict), reply
    code = error.get("code")
    assert code in CATALOGUE_CODES, f"{sent.command}: {code} is no catalogue code"
    assert code != ErrorCode.INTERNAL, f"{sent.command} failed unexpectedly on {sent.body[:300]!r}"
    if sent.expected is not None:
        assert code == sent.expected, f"{sent.command}: {code}, expected {sent.expected}: {sent.body[:300]!r}"


# --- the properties -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(world: World) -> dict[str, dict[str, Any]]:
    return example_bodies(world)


@given(data=st.data(), command=st.sampled_from(sorted(COMMANDS)))
async def test_any_body_gets_one_reply_with_a_catalogue_code(
        raw: RawPortal, world: World, settings: Settings, examples: dict[str, dict[str, Any]], command: str,
        data: st.DataObject) -> None:
    spec, max_body = COMMANDS[command], settings.max_body_bytes
    body = data.draw(bodies(examples[command], max_body), label="body")
    role = data.draw(st.sampled_from([Role.CUSTOMER, Role.DEALER, Role.OPERATOR]), label="role")
    who = {Role.CUSTOMER: identities(world)["a"], Role.DEALER: identities(world)["dealer"],
           Role.OPERATOR: identities(world)["operator"]}[role]
    sent = Sent(command, body, {"authorization": f"Bearer {mint(settings, who)}"}, uuid.uuid4().hex, True,
                expected_code(spec, body, role, max_body))
    check_reply(sent, await raw.send(sent))


@given(data=st.data(), command=st.sampled_from(sorted(COMMANDS)))
async def test_any_headers_get_one_reply_with_the_code_the_token_earns(
        raw: RawPortal, world: World, settings: Settings, examples: dict[str, dict[str, Any]], command: str,
        data: st.DataObject) -> None:
    spec = COMMANDS[command]
    authorization, role = data.draw(authorizations(settings, world), label="authorization")
    headers: dict[str, Any] = data.draw(extra_headers, label="extra headers")
    language = data.draw(languages, label="accept-language")
    for name, value in (("authorization", authorization), ("accept-language", language)):
        if value is not None:
            headers[name] = value
    body = json.dumps(examples[command]).encode()
    expects_reply = data.draw(st.sampled_from([True, True, True, False]), label="reply_to")  # False: none
    content_type = data.draw(st.sampled_from(["application/json", None, "text/plain", "application/x-garbage"]))
    sent = Sent(command, body, headers, data.draw(message_ids, label="message_id"), expects_reply,
                expected_code(spec, body, role, settings.max_body_bytes))
    check_reply(sent, await raw.send(sent, content_type=content_type))


@example(body=nested_bytes(100_000))
@example(body=b'{"token": "\\ud800"}')
@example(body=b'{"\\ud800": 1, "\\u0000": 2, "a\\u202eb": {"$gt": ""}}')
@example(body=b'{"name": "x\\udfff", "email": "a@example.com"}')
@given(body=st.binary(max_size=512) | st.sampled_from(NOT_OBJECTS))
async def test_raw_bytes_to_every_service_are_answered(raw: RawPortal, settings: Settings, body: bytes) -> None:
    """The same bytes to one command of each service (with an operator's token, so the token is no barrier)."""
    token = token_for(settings, Role.OPERATOR, customer_number=None)[0]
    for command in ("accounts.add_contact", "registration.rename_device", "metering.submit_reading",
                    "ordering.place_order", "ticketing.open_ticket", "notifier.unsubscribe"):
        sent = Sent(command, body, {"authorization": f"Bearer {token}"}, uuid.uuid4().hex, True,
                    expected_code(COMMANDS[command], body, Role.OPERATOR, settings.max_body_bytes))
        check_reply(sent, await raw.send(sent))


# --- afterwards -----------------------------------------------------------------------------------------------------

async def test_every_message_got_exactly_one_reply(raw: RawPortal) -> None:
    await raw.quiet()
    assert len(raw.sent) > 0
    assert raw.replies_per_message() == {}


async def test_every_service_and_every_command_queue_still_answers(raw: RawPortal, portal: PortalClient) -> None:
    for service in SERVICES:
        assert (await portal.health(service.name)).status == "ok"
    for command in sorted(COMMANDS):
        sent = Sent(command, b"[]", {}, uuid.uuid4().hex, True, ErrorCode.INVALID_MESSAGE)
        check_reply(sent, await raw.send(sent))


async def test_known_good_commands_get_the_right_answers_afterwards(world: World, portal: PortalClient) -> None:
    b1 = world.b.devices["b1"]
    device = await portal.call("registration.get_device", {"device_id": b1.device_id}, token=world.b.token)
    assert device["serial_number"] == b1.serial_number
    history = await portal.call("metering.history", {"device_id": b1.device_id}, token=world.b.token)
    assert [reading["reading_id"] for reading in history["readings"]] == [world.b.reading_id]
    order = await portal.call("ordering.get_order", {"order_number": world.b.order_number}, token=world.b.token)
    assert order["lines"][0]["device_id"] == b1.device_id
    session = await portal.call("accounts.login", {"login": world.b.email, "password": PASSWORD})
    assert session["user"]["id"] == world.b.user_id
    ticket = await portal.call("ticketing.get_ticket", {"ticket_number": world.b.ticket_number},
                               token=session["access_token"])
    assert ticket["device"]["device_id"] == b1.device_id


async def test_memory_stays_bounded(raw: RawPortal, memory_at_start: Memory) -> None:
    """What Python objects hold is the leak test; the resident set also keeps what the allocator does not give back
    after 10 MB bodies (a deep run: 584 MiB more resident, 6.5 MiB more in objects)."""
    now = memory_now()
    traced, resident = now.traced - memory_at_start.traced, now.resident - memory_at_start.resident
    print(f"after {len(raw.sent)} messages: objects grew by {traced / 2**20:.1f} MiB, "  # measured, for the README
          f"the resident set by {resident / 2**20:.0f} MiB")
    assert traced < OBJECTS_BOUND_BYTES
    assert resident < RESIDENT_BOUND_BYTES
