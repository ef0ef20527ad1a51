"""The notifier under test: in this process, against its own SMTP server and short retry delays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.notifier.support import SmtpServer
from tests.support import running


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def notifier_settings(settings: Settings, smtp: SmtpServer) -> NotifierSettings:
    pointed = settings.model_copy(update={"smtp_host": smtp.mailbox.host, "smtp_port": smtp.mailbox.port,
                                          "public_url": "https://service.example.test"})
    return NotifierSettings(**dict(pointed), notifier_retry_base_delay=0.2, notifier_retry_max_delay=1.0,
                            notifier_max_attempts=50, notifier_poll_seconds=0.05, notifier_smtp_timeout=2.0,
                            notifier_lease_seconds=5.0)


@pytest.fixture
async def notifier(notifier_settings: NotifierSettings) -> AsyncIterator[ServiceInstance]:
    async with running(service, notifier_settings) as instance:
        yield instance
