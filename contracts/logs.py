"""Log lines of every process (services and gateway): plain text or JSON, each with the message it was written for.

Here rather than in the runtime because the gateway, which imports only `contracts`, writes the same lines: the
field names are a contract with whoever reads the logs. The runtime sets `message_context` while it handles a
command or an event; every record logged meanwhile, by any logger, carries its fields (`LOG_FIELDS`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

# What a record carries while a message is handled: the service, the command or event, the ids its sender set.
LOG_FIELDS = ("service", "command", "event", "message_id", "correlation_id")

_context: ContextVar[dict[str, str] | None] = ContextVar("portal_log_context", default=None)


def printable(value: str) -> str:
    """`value` with anything that is not printable escaped (`\\n`, `\\u2028`): a sender's id cannot start a log
    line of its own."""
    return value if value.isprintable() else "".join(char if char.isprintable() else ascii(char)[1:-1]
                                                     for char in value)


@contextlib.contextmanager
def message_context(**fields: str | None) -> Iterator[None]:
    """Within the block, log records carry `fields` (the unset ones left out; a sender's ids made printable)."""
    token = _context.set({key: printable(value) for key, value in fields.items() if value})
    try:
        yield
    finally:
        _context.reset(token)


def current_field(name: str) -> str | None:
    """A field of the message being handled (`correlation_id`, say), if one is."""
    return (_context.get() or {}).get(name)


class MessageFields(logging.Filter):
    """Puts the handled message's fields on each record; `service` stays the process's own outside a message."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _context.get() or {}
        if self.service and "service" not in fields and not hasattr(record, "service"):
            record.service = self.service
        for key, value in fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """`time service LEVEL logger: message [command m=<message_id> c=<correlation_id>]`."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # One record, one line (a traceback aside): whatever a sender put in a value the message names (an id with a
        # newline in it) is escaped, so it cannot start a line that looks like the service's own.
        return printable(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        service = getattr(record, "service", None)
        head = f"{self.formatTime(record)} {service + ' ' if service else ''}{record.levelname} {record.name}: "
        name = getattr(record, "command", None) or getattr(record, "event", None)
        ids = [f"{short}={value}" for short, key in (("m", "message_id"), ("c", "correlation_id"))
               if (value := getattr(record, key, None))]
        tail = f" [{' '.join([name, *ids] if name else ids)}]" if name or ids else ""
        first, newline, rest = line.partition("\n")  # a traceback follows the bracket, not the other way round
        return f"{head}{first}{tail}{newline}{rest}"


def json_formatter() -> logging.Formatter:
    """One object a line: level, logger, message, the message's fields, any `extra=`, the traceback as `exception`,
    and `time` (ISO 8601 in UTC, with microseconds)."""
    return JsonFormatter("{levelname}{name}{message}", style="{", timestamp="time", json_ensure_ascii=False,
                         rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"})


def configure_logging(*, level: str | int, log_format: LogFormat, service: str | None = None) -> None:
    """Log to stderr in `log_format`, replacing what was configured before (one call at the process's start)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MessageFields(service))
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter("%(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
