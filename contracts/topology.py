"""Exchange and queue names of the wire (CATALOG §1), shared by services and clients."""

from __future__ import annotations

COMMANDS_EXCHANGE = "portal.commands"
EVENTS_EXCHANGE = "portal.events"
DEAD_LETTER_EXCHANGE = "portal.dlx"

SERVICES = ("accounts", "registration", "metering", "ordering", "ticketing", "notifier")


def health_command(service: str) -> str:
    return f"{service}.health"


def command_queue(command: str) -> str:
    """One durable queue per command, named after it, so each command scales and fails alone."""
    return command


def event_queue(service: str, event: str) -> str:
    """One durable queue per (consuming service, event)."""
    return f"{service}.on.{event}"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"
