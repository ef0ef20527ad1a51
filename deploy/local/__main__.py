"""The local stack (`make run`): find or start RabbitMQ, a MongoDB-protocol server and an SMTP
sink, then run the six services and the HTTP gateway as child processes until Ctrl-C or SIGTERM.

Nothing needs to be set. Optional variables:

    PORTAL_AMQP_URL            use this broker; else the one on 127.0.0.1:5672; else start RabbitMQ there
    PORTAL_MONGODB_URL         use this database; else start nx-27017 with its data in <data>/mongodb
    PORTAL_SMTP_HOST           use this SMTP server (with PORTAL_SMTP_PORT, ...); else start the mail
                               sink, which writes every mail to <data>/mail/*.eml
    PORTAL_LOCAL_DATA_DIR      <data>, where what this starts keeps its files (default .data)
    PORTAL_LOCAL_MONGODB_PORT  nx-27017's port (default 27017, or a free port when 27017 is taken)
    PORTAL_LOCAL_SMTP_PORT     the mail sink's port (default 8025, or a free port when 8025 is taken)
    PORTAL_GATEWAY_HOST        where the HTTP gateway listens (default 127.0.0.1)
    PORTAL_GATEWAY_PORT        its port (default 8080, or a free port when 8080 is taken)
    PORTAL_LOCAL_METRICS_PORT  the first service's Prometheus port on 127.0.0.1, the next ones count up
                               (default 9101: accounts 9101 ... notifier 9106; a taken one: a free port)

Every other PORTAL_* variable reaches the services unchanged. On stop, only what this process
started is stopped: services first, then the mail sink, nx-27017 and a RabbitMQ it started.
Exit status: 0 after Ctrl-C/SIGTERM, 1 when something could not start or a service died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.base import Health
from contracts.client import PortalClient, PortalError
from contracts.topology import SERVICES
from deploy.local.demo import load_demo_catalogue
from deploy.local.deps import (
    RABBITMQ_HOST,
    RABBITMQ_PORT,
    DependencyError,
    LocalRabbitMQ,
    claim_port,
    free_port,
    rabbitmq_running,
    start_nx_27017,
    stop_process,
)
from deploy.local.mail_sink import start_mail_sink
from services.runtime.settings import Settings

log = logging.getLogger("deploy.local")

STARTUP_TIMEOUT = 30.0  # seconds for all six services to answer health
STOP_TIMEOUT = 15.0  # seconds the services get after SIGTERM before they are killed
POLL_SECONDS = 0.3
MONGODB_PORT, SMTP_PORT, GATEWAY_PORT = 27017, 8025, 8080
METRICS_PORT = 9101  # the first service's; the others follow in SERVICES' order


class StartupFailed(Exception):
    """The stack could not come up; the message says what is missing."""


class Stack:
    """What the runner found or started, and how to stop exactly the part it started."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.amqp_url = self.mongodb_url = ""
        self.smtp_port: int | None = None  # set when the mail sink runs
        self.rabbitmq: LocalRabbitMQ | None = None
        self.mongodb: subprocess.Popen[bytes] | None = None
        self.mail_sink: Any = None  # aiosmtpd's Controller (untyped)
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway_host, self.gateway_port = "127.0.0.1", GATEWAY_PORT  # chosen with the dependencies
        self.metrics_ports: dict[str, int] = {}  # each service's and the gateway's /metrics on 127.0.0.1

    # --- start ----------------------------------------------------------------------------

    def start_dependencies(self) -> None:
        # Chosen first: the services' mails link to the gateway's pages (PORTAL_PUBLIC_URL).
        self.gateway_host = os.environ.get("PORTAL_GATEWAY_HOST", "127.0.0.1")
        self.gateway_port = local_port("PORTAL_GATEWAY_PORT", GATEWAY_PORT)
        self.amqp_url = self._find_or_start_rabbitmq()
        self.mongodb_url = self._find_or_start_mongodb()
        if not os.environ.get("PORTAL_SMTP_HOST"):
            self._start_mail_sink()

    def _find_or_start_rabbitmq(self) -> str:
        if url := os.environ.get("PORTAL_AMQP_URL"):
            return url
        if rabbitmq_running():
            return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/"
        log.info("no RabbitMQ on %s:%d: starting one", RABBITMQ_HOST, RABBITMQ_PORT)
        # Absolute, because rabbitmq-server runs as its own user and need not share our directory.
        # Assigned before start() so that stop() also cleans up a node that failed half-way.
        self.rabbitmq = LocalRabbitMQ(self.data_dir.resolve() / "rabbitmq", port=RABBITMQ_PORT)
        self.rabbitmq.start()
        return self.rabbitmq.url

    def _find_or_start_mongodb(self) -> str:
        if url := os.environ.get("PORTAL_MONGODB_URL"):
            return url
        port = local_port("PORTAL_LOCAL_MONGODB_PORT", MONGODB_PORT)
        with interrupts.deferred():  # for the ~0.5 s until nx-27017 answers
            self.mongodb, url = start_nx_27017(self.data_dir / "mongodb", port)
        return url

    def _start_mail_sink(self) -> None:
        self.smtp_port = local_port("PORTAL_LOCAL_SMTP_PORT", SMTP_PORT)
        try:
            self.mail_sink = start_mail_sink(self.data_dir / "mail", self.smtp_port)
        except OSError as error:
            raise DependencyError(f"the mail sink cannot listen on 127.0.0.1:{self.smtp_port} ({error}); set "
                                  "PORTAL_LOCAL_SMTP_PORT, or PORTAL_SMTP_HOST for a real server") from None

    def _metrics_port(self, name: str, index: int) -> int:
        """The `index`th port from PORTAL_LOCAL_METRICS_PORT (9101) when free, else any free one."""
        first = int(os.environ.get("PORTAL_LOCAL_METRICS_PORT") or METRICS_PORT)
        port = first + index if claim_port(first + index) else free_port()
        self.metrics_ports[name] = port
        return port

    def start_services(self) -> None:
        env = {**os.environ, **self._service_variables()}
        for index, name in enumerate(SERVICES):
            port = self._metrics_port(name, index)
            metrics = {"PORTAL_METRICS_PORT": str(port), "PORTAL_METRICS_HOST": "127.0.0.1"}
            # A session of their own keeps the terminal's Ctrl-C from reaching the services
            # directly: the runner stops them itself, before the broker and database they use.
            with interrupts.deferred():
                self.services[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                                       env=env | metrics, start_new_session=True)

    def start_gateway(self) -> None:
        env = {**os.environ, **self._service_variables(), "PORTAL_GATEWAY_HOST": self.gateway_host,
               "PORTAL_GATEWAY_PORT": str(self.gateway_port), "PORTAL_GATEWAY_METRICS_HOST": "127.0.0.1",
               "PORTAL_GATEWAY_METRICS_PORT": str(self._metrics_port("gateway", len(SERVICES)))}
        with interrupts.deferred():
            self.services["gateway"] = subprocess.Popen([sys.executable, "-m", "gateway"], env=env,
                                                        start_new_session=True)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"

    def _gateway_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.gateway_url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _service_variables(self) -> dict[str, str]:
        variables = {"PORTAL_AMQP_URL": self.amqp_url, "PORTAL_MONGODB_URL": self.mongodb_url,
                     "PORTAL_PUBLIC_URL": os.environ.get("PORTAL_PUBLIC_URL", self.gateway_url)}
        if self.smtp_port is not None:
            variables |= {"PORTAL_SMTP_HOST": "127.0.0.1", "PORTAL_SMTP_PORT": str(self.smtp_port),
                          "PORTAL_SMTP_TLS": "none"}
        return variables

    def wait_until_healthy(self, timeout: float) -> None:
        pending = {*SERVICES, "gateway"}
        deadline = time.monotonic() + timeout
        while True:
            self._fail_if_a_child_died()
            pending -= asyncio.run(healthy(self.amqp_url, pending - {"gateway"}))
            if "gateway" in pending and self._gateway_answers():
                pending.discard("gateway")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StartupFailed(f"not healthy after {timeout:.0f} s: {', '.join(sorted(pending))}")
            time.sleep(POLL_SECONDS)

    # --- run ------------------------------------------------------------------------------

    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        processes = dict(self.services)
        if self.mongodb is not None:
            processes["nx-27017"] = self.mongodb
        if self.rabbitmq is not None and self.rabbitmq.process is not None:
            processes["rabbitmq-server"] = self.rabbitmq.process
        return processes

    def _fail_if_a_child_died(self) -> None:
        for name, process in self.children().items():
            if process.poll() is not None:
                raise StartupFailed(f"{name} (pid {process.pid}) exited with code {process.returncode}")

    def watch(self) -> int:
        """Block until a child dies (exit status 1); Ctrl-C and SIGTERM interrupt it."""
        while True:
            try:
                self._fail_if_a_child_died()
            except StartupFailed as died:
                log.error("%s: stopping everything", died)
                return 1
            time.sleep(POLL_SECONDS)

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop what this runner started, users before what they use; safe to call twice."""
        stop_all(self.services, STOP_TIMEOUT)
        self.services = {}
        if self.mail_sink is not None:
            self.mail_sink.stop()
            log.info("stopped the mail sink")
            self.mail_sink = None
        if self.mongodb is not None:
            stop_process(self.mongodb)
            log.info("stopped nx-27017")
            self.mongodb = None
        if self.rabbitmq is not None:
            self.rabbitmq.stop()
            log.info("stopped rabbitmq-server")
            self.rabbitmq = None


async def healthy(amqp_url: str, services: set[str]) -> set[str]:
    """The services among `services` that answer their health command now."""
    async def answers() -> set[str]:
        async with PortalClient(amqp_url, timeout=2) as portal:
            names = sorted(services)
            replies = await asyncio.gather(*(portal.health(name) for name in names), return_exceptions=True)
        return {name for name, reply in zip(names, replies, strict=True)
                if isinstance(reply, Health) and reply.status == "ok"}

    try:
        return await asyncio.wait_for(answers(), 5)
    except Exception:  # broker not reachable yet, or no service has declared the exchange yet
        return set()


def stop_all(services: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every service at once, so they drain in parallel; kill those still running after `timeout`."""
    for process in services.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for name, process in services.items():
        try:
            code = process.wait(max(0.0, deadline - time.monotonic()))
            log.info("stopped %s (exit code %d)", name, code)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", name, timeout)
            process.kill()
            process.wait()


def load_demo(stack: Stack) -> int:
    """The demo catalogue (models and consumables), loaded by the bootstrap operator of the settings."""
    settings = Settings()
    try:
        return asyncio.run(load_demo_catalogue(stack.amqp_url, settings))
    except PortalError as error:
        raise StartupFailed(
            f"the demo catalogue was not loaded: the bootstrap operator {settings.bootstrap_operator_email} "
            f"could not sign in ({error.code}). Check PORTAL_BOOTSTRAP_OPERATOR_EMAIL and _PASSWORD (an address "
            f"that belongs to a customer's account is not made an operator), or start afresh with `make clean`"
        ) from None


def local_port(variable: str, default: int) -> int:
    """The port named by `variable`; else `default` unless something listens there; else a free one."""
    if value := os.environ.get(variable):
        return int(value)
    return default if claim_port(default) else free_port()


def without_password(url: str) -> str:
    """`url` fit for the terminal: a password set in a variable should not end up in logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def print_summary(stack: Stack, seconds: float) -> None:
    lines = [f"local stack ready in {seconds:.1f} s",
             f"  AMQP     {without_password(stack.amqp_url)}" + (
                 f"  (started rabbitmq-server pid {stack.rabbitmq.process.pid})"
                 if stack.rabbitmq is not None and stack.rabbitmq.process is not None else "")]
    mongodb = f"  MongoDB  {without_password(stack.mongodb_url)}"
    if stack.mongodb is not None:
        mongodb += f"  (nx-27017 pid {stack.mongodb.pid}, data in {stack.data_dir / 'mongodb'})"
    lines.append(mongodb)
    if stack.smtp_port is not None:
        lines.append(f"  mail     SMTP 127.0.0.1:{stack.smtp_port} -> {stack.data_dir / 'mail'}/*.eml")
    else:
        lines.append(f"  mail     SMTP {os.environ['PORTAL_SMTP_HOST']} (PORTAL_SMTP_HOST)")
    lines.append(f"  HTTP     {stack.gateway_url}  (the portal: its pages at /, the API under /api/v1, docs at /docs)")
    lines.append("  services")
    lines += [f"    {name:<13} pid {process.pid}" + (
        f"  metrics http://127.0.0.1:{stack.metrics_ports[name]}/metrics" if name in stack.metrics_ports else "")
        for name, process in stack.services.items()]
    lines.append("Ctrl-C to stop")
    print("\n".join(lines), flush=True)


class Interrupts:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, except inside `deferred()`, which raises it on leaving.

    Deferring covers the moments between starting a process and recording it in the `Stack`:
    interrupted there, the process would be unknown to `stop()` and outlive the runner.
    """

    def __init__(self) -> None:
        self.deferring = self.pending = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.deferring:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt


interrupts = Interrupts()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s local %(levelname)s %(name)s: %(message)s")
    # Health polls that reach the broker before any service declared the exchange make
    # aio-pika log the closed connection as an error; aiosmtpd logs every connection at INFO.
    logging.getLogger("aio_pika").setLevel(logging.CRITICAL)
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # SIGTERM (a supervisor, the tests) takes the same path as Ctrl-C.
    interrupts.install()
    stack = Stack(Path(os.environ.get("PORTAL_LOCAL_DATA_DIR", ".data")))
    began = time.monotonic()
    try:
        stack.start_dependencies()
        stack.start_services()
        stack.start_gateway()
        stack.wait_until_healthy(STARTUP_TIMEOUT)
        log.info("demo catalogue loaded: %d OKI models and their consumables", load_demo(stack))
        print_summary(stack, time.monotonic() - began)
        return stack.watch()
    except (DependencyError, StartupFailed) as error:
        print(f"local stack: {error}", file=sys.stderr, flush=True)
        return 1
    except subprocess.CalledProcessError as error:  # installing rabbitmq-server failed
        print(f"local stack: {error}", file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # one line, not a traceback; the log above has the details
        log.debug("start-up failed", exc_info=True)
        print(f"local stack: start-up failed: {error!r}; see the log above, or start afresh with `make clean`",
              file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not abandon the shutdown half-way and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping")
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
