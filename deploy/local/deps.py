"""Find or start what the services need on one machine: RabbitMQ, a MongoDB-protocol server, SMTP.

Shared by the local stack (`make run`), the test fixtures and the benchmarks, so all three
find their dependencies the same way.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from pymongo import MongoClient

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672


class DependencyError(RuntimeError):
    """A dependency cannot be found or started; the message says what to install."""


_handed_out: set[int] = set()
_handing_out = threading.Lock()


def free_port() -> int:
    """A port nobody listens on, never one this process handed out before.

    The OS offers a port again as soon as its probe is closed, so two calls before either
    port is bound can return the same one (MongoDB and SMTP once got one port between them).
    """
    with _handing_out:
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port: int = probe.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def claim_port(port: int) -> bool:
    """Take `port` for this process unless something listens there or it was handed out already."""
    with _handing_out:
        if port in _handed_out or port_open("127.0.0.1", port):
            return False
        _handed_out.add(port)
        return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if process is not None and process.poll() is not None:
            raise DependencyError(f"the process meant to listen on {host}:{port} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise DependencyError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.1)


def docker_available() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=2).ping())
    except Exception:
        return False


def executable(name: str) -> str:
    """A command of this virtual environment (next to the interpreter) or of the PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise DependencyError(f"`{name}` is not installed")
    return found


# --- MongoDB protocol: nx-27017 -------------------------------------------------------------

def start_nx_27017(data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start the embedded MongoDB-protocol server with its data, log and pid under `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [executable("nx-27017"), "--data-dir", str(data_dir), "-p", str(port),
         "--log-file", str(data_dir / "nx-27017.log"), "--pid-file", str(data_dir / "nx-27017.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        wait_for_mongo(url, timeout=20, process=process)
    except DependencyError:
        stop_process(process)  # the caller never gets it, so it must not outlive this call
        raise
    return process, url


def wait_for_mongo(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise DependencyError(f"nx-27017 exited with {process.returncode}")
        try:
            with MongoClient[dict[str, Any]](url, timeoutMS=1000) as client:
                client.admin.command("ping")
                return
        except Exception:
            if time.monotonic() > deadline:
                raise DependencyError(f"no MongoDB-protocol server answers at {url}") from None
            time.sleep(0.2)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- RabbitMQ -------------------------------------------------------------------------------

def rabbitmq_running() -> bool:
    return port_open(RABBITMQ_HOST, RABBITMQ_PORT)


def install_rabbitmq_if_missing() -> None:
    if shutil.which("rabbitmq-server"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing rabbitmq-server from Debian's packages ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "rabbitmq-server"], check=True, env=env)
        return
    raise DependencyError(
        "No RabbitMQ listens on 127.0.0.1:5672 and `rabbitmq-server` is not installed. Install it "
        "(Debian/Ubuntu: `sudo apt-get install rabbitmq-server`), start one, or set PORTAL_AMQP_URL.")


class LocalRabbitMQ:
    """A private RabbitMQ node on its own port and directories, for when none runs already.

    The node has its own name, ports, data and config, so it never touches a system node.
    """

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base, self.port = base, port or free_port()
        self.node = f"portal{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
        }

    def start(self, timeout: float = 60) -> None:
        install_rabbitmq_if_missing()
        for folder in ("mnesia", "log"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        _hand_to_rabbitmq_user(self.base)
        self.process = subprocess.Popen([executable("rabbitmq-server")], env=self._env(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout, self.process)
        self._ctl("await_startup", "--timeout", str(int(timeout)))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self._ctl("stop", check=False)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def block_publishers(self, blocked: bool = True) -> None:
        """Raise (or lift) a memory alarm: the node stops reading from every connection that publishes, so a
        publish gets no confirm until it is lifted (RabbitMQ's "blocked connections")."""
        self._ctl("set_vm_memory_high_watermark", "0" if blocked else "0.4")

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([executable("rabbitmqctl"), "-n", self.node, *args], env=self._env(), check=check,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def vhosts(self) -> VirtualHosts:
        return VirtualHosts(self.node, self._env())


def _hand_to_rabbitmq_user(base: Path) -> None:
    """As root, `rabbitmq-server` drops to the `rabbitmq` user, which must own its directories."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("rabbitmq")
    except KeyError:
        return
    for folder, _dirs, files in os.walk(base):
        os.chown(folder, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)


class VirtualHosts:
    """Creates and deletes vhosts with `rabbitmqctl` (the management plugin may be off)."""

    def __init__(self, node: str | None = None, env: dict[str, str] | None = None) -> None:
        self.node, self.env = node, env

    def _ctl(self, *args: str) -> None:
        node = ["-n", self.node] if self.node else []
        result = subprocess.run([executable("rabbitmqctl"), *node, *args], env=self.env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise DependencyError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")

    def create(self, name: str, user: str = "guest") -> None:
        self._ctl("add_vhost", name)
        self._ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")

    def delete(self, name: str) -> None:
        self._ctl("delete_vhost", name)


def with_vhost(amqp_url: str, vhost: str) -> str:
    parts = urllib.parse.urlsplit(amqp_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))
