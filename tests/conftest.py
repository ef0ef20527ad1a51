"""Real dependencies for the tests: RabbitMQ (a fresh vhost per test), MongoDB protocol, SMTP.

RabbitMQ: the one on 127.0.0.1:5672, else testcontainers when Docker answers, else a private
node the session starts. MongoDB: PORTAL_MONGODB_URL, else testcontainers, else nx-27017 on a
free port. Every test gets its own vhost and its own database prefix, removed afterwards; a folder that runs its
services once per test module builds on the `module_*` fixtures instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from contracts.client import PortalClient
from deploy.local import deps
from services.runtime.settings import Settings
from tests.builders import operator_token
from tests.support import TEST_QUEUE_TYPE, Mailbox, smtp_server


@dataclass
class Broker:
    url: str
    vhosts: deps.VirtualHosts | None  # None: a throwaway container, whose default vhost is ours


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if deps.rabbitmq_running():
        yield Broker("amqp://guest:guest@127.0.0.1:5672/", deps.VirtualHosts())
    elif deps.docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13") as container:
            params = container.get_connection_params()
            yield Broker(f"amqp://guest:guest@{params.host}:{params.port}/", None)
    else:
        base = Path(tempfile.mkdtemp(prefix="portal-rabbitmq-"))  # reachable by the `rabbitmq` user
        node = deps.LocalRabbitMQ(base)
        node.start()
        try:
            yield Broker(node.url, node.vhosts())
        finally:
            node.stop()
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def fresh_vhost(rabbitmq: Broker) -> Iterator[str]:
    """A vhost of its own while the block runs (the broker's only one where vhosts cannot be made)."""
    if rabbitmq.vhosts is None:
        yield rabbitmq.url
        return
    vhost = f"test-{uuid.uuid4().hex[:12]}"
    rabbitmq.vhosts.create(vhost)
    try:
        yield deps.with_vhost(rabbitmq.url, vhost)
    finally:
        rabbitmq.vhosts.delete(vhost)


@pytest.fixture
def amqp_url(rabbitmq: Broker) -> Iterator[str]:
    with fresh_vhost(rabbitmq) as url:
        yield url


@pytest.fixture(scope="module")
def module_amqp_url(rabbitmq: Broker) -> Iterator[str]:
    """One vhost for a whole test module, for the folders that run their services once per module."""
    with fresh_vhost(rabbitmq) as url:
        yield url


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("PORTAL_MONGODB_URL"):
        yield url
    elif deps.docker_available():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as container:
            yield container.get_connection_url()
    else:
        process, url = deps.start_nx_27017(Path(tmp_path_factory.mktemp("nx-27017")), deps.free_port())
        try:
            yield url
        finally:
            deps.stop_process(process)


@contextlib.contextmanager
def fresh_database_prefix(mongo_url: str) -> Iterator[str]:
    """A database prefix of its own, its databases dropped when the block ends."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    with MongoClient[dict[str, Any]](mongo_url, timeoutMS=10_000) as client:
        for name in client.list_database_names():
            if name.startswith(prefix):
                client.drop_database(name)


@pytest.fixture
def database_prefix(mongo_url: str) -> Iterator[str]:
    with fresh_database_prefix(mongo_url) as prefix:
        yield prefix


@pytest.fixture(scope="module")
def module_database_prefix(mongo_url: str) -> Iterator[str]:
    """One database prefix for a whole test module."""
    with fresh_database_prefix(mongo_url) as prefix:
        yield prefix


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as mailbox:
        yield mailbox


@pytest.fixture(scope="module")
def module_mailbox() -> Iterator[Mailbox]:
    """One SMTP server for a whole test module."""
    with smtp_server() as mailbox:
        yield mailbox


@pytest.fixture
def settings(amqp_url: str, mongo_url: str, database_prefix: str, mailbox: Mailbox) -> Settings:
    return Settings(
        amqp_url=amqp_url, mongodb_url=mongo_url, database_prefix=database_prefix,
        smtp_host=mailbox.host, smtp_port=mailbox.port,
        event_retry_base_delay=0.05, graceful_timeout=5, outbox_poll_seconds=0.5, queue_type=TEST_QUEUE_TYPE,
    )


@pytest.fixture
def operator(settings: Settings) -> str:
    """An operator's access token for the test's settings."""
    return operator_token(settings)


@pytest.fixture
async def portal(amqp_url: str) -> AsyncIterator[PortalClient]:
    async with PortalClient(amqp_url, timeout=10) as client:
        yield client
