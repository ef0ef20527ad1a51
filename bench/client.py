"""The load generator: one raw aio-pika connection as in STACK_NOTES §2 and §7.

Direct reply-to, persistent messages, publisher confirms and a ~280-byte JSON body with a
fresh key and message_id per call, so a service can never answer from a stored reply.
`concurrency` callers each wait for their reply before sending the next command. A benchmark of a
real command passes its own bodies (`payload`, per caller) and headers, and which replies count. `measure` runs a
cell of any other client's calls the same way (the gateway's HTTP and `PortalClient`, `bench.gateway`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection, HeadersType

from contracts.topology import COMMANDS_EXCHANGE

REPLY_QUEUE = "amq.rabbitmq.reply-to"
BODY_BYTES = 280
CALL_TIMEOUT = 10.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The body of a caller's next command, given the caller's index (0 .. concurrency - 1) and the concurrency.
Payload = Callable[[int, int], bytes]
# One call of caller i of c, by whatever means (`measure`): True when it was accepted.
Call = Callable[[int, int], Awaitable[bool]]


def body(count: int) -> bytes:
    """A JSON object of about BODY_BYTES, the baseline's body: the raw server echoes it."""
    fields = {"key": uuid.uuid4().hex, "count": count, "note": ""}
    fields["note"] = "x" * max(0, BODY_BYTES - len(json.dumps(fields)))
    return json.dumps(fields).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc); 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN when nothing was measured."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(share * len(sorted_values)) - 1)]


@dataclass
class Cell:
    """One (server, concurrency) measurement; only calls completed after the warm-up count."""

    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    replies: int = 0  # accepted replies, warm-up included (each stands for one stored change and its event)
    errors: int = 0
    cpu_percent: dict[str, float] = field(default_factory=dict)  # of one core, during the window

    @property
    def calls_per_s(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile_ms(self, share: float) -> float:
        return percentile(sorted(self.latencies_ms), share)

    def summary(self) -> dict[str, object]:
        return {"concurrency": self.concurrency, "calls": len(self.latencies_ms),
                "calls_per_s": round(self.calls_per_s, 1), "p50_ms": round(self.percentile_ms(0.50), 2),
                "p99_ms": round(self.percentile_ms(0.99), 2), "errors": self.errors,
                "cpu_percent": self.cpu_percent}


class Caller:
    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._waiting: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None

    async def __aenter__(self) -> Caller:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        # RabbitMQ refuses publishing with direct reply-to before its pseudo-queue is consumed.
        replies = await channel.get_queue(REPLY_QUEUE, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)
        self._exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)

    async def call(self, routing_key: str, payload: bytes, headers: HeadersType | None = None) -> bytes | None:
        """Send one command and wait for its reply's body; None on a timeout or a refused publish."""
        assert self._exchange is not None, "use `async with Caller(...)`"
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            await self._exchange.publish(
                aio_pika.Message(payload, content_type="application/json", correlation_id=correlation_id,
                                 message_id=uuid.uuid4().hex, reply_to=REPLY_QUEUE, headers=headers or {},
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=routing_key, mandatory=True)
            reply = await asyncio.wait_for(future, CALL_TIMEOUT)
            return bytes(reply.body)
        except (TimeoutError, aio_pika.exceptions.AMQPError):
            return None
        finally:
            self._waiting.pop(correlation_id, None)

    async def cell(self, routing_key: str, concurrency: int, seconds: float, warmup: float,
                   watch: dict[str, int], payload: Payload | None = None,
                   accept: Callable[[bytes], bool] | None = None, headers: HeadersType | None = None) -> Cell:
        """`measure` these commands: `payload(caller, concurrency)` makes each body (default: `body(1)`); a reply
        `accept` refuses counts as an error."""
        make = payload or (lambda _caller, _concurrency: body(1))

        async def call(index: int, concurrency: int) -> bool:
            reply = await self.call(routing_key, make(index, concurrency), headers)
            return reply is not None and (accept is None or accept(reply))

        return await measure(call, concurrency, seconds, warmup, watch)


async def measure(call: Call, concurrency: int, seconds: float, warmup: float, watch: dict[str, int]) -> Cell:
    """Run `concurrency` callers of `call` for warmup + seconds; `watch` names the pids whose CPU to report."""
    cell = Cell(concurrency, seconds)
    started = time.perf_counter()
    window_start, window_end = started + warmup, started + warmup + seconds

    async def caller(index: int) -> None:
        while (sent := time.perf_counter()) < window_end:
            if not await call(index, concurrency):
                cell.errors += 1
                continue
            cell.replies += 1
            done = time.perf_counter()
            if window_start <= done <= window_end:
                cell.latencies_ms.append((done - sent) * 1000)

    async def cpu_meter() -> None:
        await asyncio.sleep(warmup)
        before = {name: cpu_seconds(pid) for name, pid in watch.items()}
        await asyncio.sleep(seconds)
        for name, pid in watch.items():
            cell.cpu_percent[name] = round((cpu_seconds(pid) - before[name]) / seconds * 100)

    await asyncio.gather(cpu_meter(), *(caller(index) for index in range(concurrency)))
    return cell
