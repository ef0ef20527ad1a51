"""One benchmark server in its own process, so it has a core to itself like a deployed service.

    python -m bench.server raw AMQP_URL
    python -m bench.server service NAME [--profile DIR]   # services.NAME, its settings from PORTAL_* variables
    python -m bench.server gateway                        # the HTTP gateway (`gateway`), from PORTAL_* variables

It prints `ready` on stdout once it consumes (the gateway: once it listens), and stops cleanly on SIGTERM.
`launched(...)` starts one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pyinstrument import Profiler

from contracts.topology import COMMANDS_EXCHANGE
from deploy.local import deps

if TYPE_CHECKING:  # imported where used, so the raw server loads none of the runtime
    from services.runtime.service import Service
    from services.runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RAW_QUEUE = "bench.raw"
RAW_PREFETCH = 32


@contextmanager
def launched(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Iterator[int]:
    """`python -m bench.server ARGS` once it prints `ready`; its pid. SIGTERM and wait at the end."""
    process = subprocess.Popen([sys.executable, "-m", "bench.server", *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if readable else b""
        if line.strip() != b"ready":
            raise deps.DependencyError(f"bench.server {args[0]} did not get ready (exit {process.poll()})")
        yield process.pid
    finally:
        deps.stop_process(process, timeout=30)


async def serve_raw(amqp_url: str, stopped: asyncio.Event) -> None:
    """The baseline: the least a consumer can do to answer over the same wire (STACK_NOTES §2, §7)."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=RAW_PREFETCH)
        exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(RAW_QUEUE, durable=True)
        await queue.bind(exchange, routing_key=RAW_QUEUE)

        async def echo(message: AbstractIncomingMessage) -> None:
            # Acks once the reply is out, like the runtime. aio-pika's default mandatory=True, as in
            # FastStream's replies: RabbitMQ 3.10 also returns each direct reply-to reply (Basic.Return).
            async with message.process():
                await channel.default_exchange.publish(
                    aio_pika.Message(message.body, content_type="application/json",
                                     correlation_id=message.correlation_id),
                    routing_key=message.reply_to or "")

        await queue.consume(echo)
        print("ready", flush=True)
        await stopped.wait()


async def serve_named(name: str, profile: Path | None, stopped: asyncio.Event) -> None:
    """A real service (`services.NAME.app`, or a module named in full such as `bench.service`), its settings from the
    environment as `Service.run` reads them."""
    from services.runtime.service import Service
    from services.runtime.settings import Settings

    service = importlib.import_module(name if "." in name else f"services.{name}.app").service
    assert isinstance(service, Service)
    await serve_service(service, Settings(), profile, stopped)


async def serve_service(service: Service, settings: Settings, profile: Path | None, stopped: asyncio.Event) -> None:
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s {service.name} %(levelname)s %(name)s: %(message)s")
    instance = service.instance(settings)
    await instance.start()
    # Profile only the serving, not imports and connecting; wall-clock, so idle waits show as `select`.
    profiler = Profiler(interval=0.001, async_mode="disabled") if profile else None
    if profiler is not None:
        profiler.start()
    print("ready", flush=True)
    await stopped.wait()
    if profiler is not None and profile is not None:
        profiler.stop()
        write_profile(profiler, profile)
    await instance.stop()


def write_profile(profiler: Profiler, folder: Path) -> None:
    """The call tree, then self time per function (where repeated small costs add up)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.txt").write_text(
        profiler.output_text(unicode=True, show_all=False)
        + "\n\nSelf time by function:\n\n" + profiler.output_text(unicode=True, flat=True))
    (folder / "profile.html").write_text(profiler.output_html())
    if profiler.last_session is not None:  # for own queries: pyinstrument.session.Session.load(path)
        profiler.last_session.save(str(folder / "profile.pyisession"))


async def serve_gateway() -> None:
    """The gateway as `python -m gateway` runs it; uvicorn stops it on SIGTERM."""
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    settings = GatewaySettings()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.gateway_host,
                                           port=settings.gateway_port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # listening, its PortalClient connected (the app's lifespan)
        if serving.done():
            serving.result()
            return
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await serving


async def serve(args: argparse.Namespace) -> None:
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    if args.kind == "raw":
        await serve_raw(args.amqp_url, stopped)
    elif args.kind == "gateway":
        await serve_gateway()
    else:
        await serve_named(args.name, args.profile, stopped)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    kinds = parser.add_subparsers(dest="kind", required=True)
    kinds.add_parser("raw").add_argument("amqp_url")
    kinds.add_parser("gateway")
    named = kinds.add_parser("service")
    named.add_argument("name", help="a service under services/, e.g. metering, or a module: bench.service")
    named.add_argument("--profile", type=Path, help="write profile.txt/html of the serving here")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
