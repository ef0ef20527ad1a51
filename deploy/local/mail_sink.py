"""A local SMTP sink for development: every mail the services send becomes an `.eml` file.

Nothing is delivered anywhere. Each mail is written to `<directory>/<timestamp>-<n>.eml`
(open it with any mail client) and logged as one line: from, to, subject, file.

    controller = start_mail_sink(Path(".data/mail"), port=8025)
    ...
    controller.stop()
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

log = logging.getLogger(__name__)


class MailSink:
    """An aiosmtpd handler that stores each accepted mail as a file in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        if isinstance(content, str):  # only when the Controller was made with decode_data=True
            content = content.encode()
        # The name is chosen here, on the server's event loop, so the counter needs no lock.
        path = self.directory / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{next(self._numbers)}.eml"
        await asyncio.to_thread(write_atomically, path, content)
        subject = email.message_from_bytes(content, policy=email.policy.default).get("subject", "")
        log.info("mail from %s to %s: %r -> %s",
                 envelope.mail_from, ", ".join(envelope.rcpt_tos), subject, path)
        return "250 Message accepted for delivery"


def write_atomically(path: Path, content: bytes) -> None:
    """Write to a hidden temporary file beside `path`, then rename: readers never see half a mail.

    The file is readable by its owner only (tempfile's mode 0600): mails carry sign-in links.
    """
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", suffix=".tmp", delete=False) as temporary:
        temporary.write(content)
    os.replace(temporary.name, path)


def start_mail_sink(directory: Path, port: int, host: str = "127.0.0.1") -> Controller:
    """Serve SMTP on `host:port` in a background thread; `stop()` the returned controller."""
    controller = Controller(MailSink(directory), hostname=host, port=port)
    controller.start()
    return controller
