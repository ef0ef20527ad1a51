"""Sending one stored message over SMTP (aiosmtplib), and telling temporary from permanent failures.

STACK_NOTES §5: a refused connection or a timeout and every 4xx reply are temporary; a 5xx
reply (all recipients refused with 5xx, a refused sender or DATA) is permanent.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

from services.notifier.settings import NotifierSettings
from services.runtime.instance import Instance
from services.runtime.metrics import Counter


class Outcome(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    error: str | None = None


MAIL_OUTCOMES = ("sent", "retrying", "failed")


def mail_attempts(instance: Instance) -> Counter:
    """`portal_notifier_mails_total{outcome}`: each attempt's outcome, and each mail recorded failed unattempted."""
    return instance.metrics.counter("portal_notifier_mails", "Mails by outcome: sent; retrying (a temporary failure, "
                                    "tried again later); failed (for good, or never mailable).", ["outcome"])


def count_mails_from_zero(instance: Instance) -> None:
    """Every outcome shows from the start, at zero (a rate misses a series' first increment)."""
    for outcome in MAIL_OUTCOMES:
        mail_attempts(instance).labels(outcome)


class Mailer:
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.sender = email.utils.parseaddr(settings.mail_from)[1] or settings.mail_from

    async def send(self, raw_message: str, recipient: str) -> SendResult:
        """Hand `raw_message` to the server for `recipient`; never raises for an SMTP or network failure."""
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            errors, _ = await aiosmtplib.send(
                raw_message.encode("utf-8"), sender=self.sender, recipients=[recipient],
                hostname=settings.smtp_host, port=settings.smtp_port,
                username=settings.smtp_username or None, password=password if settings.smtp_username else None,
                use_tls=settings.smtp_tls == "tls", start_tls=settings.smtp_tls == "starttls",
                timeout=settings.notifier_smtp_timeout)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            detail = "; ".join(f"{refused.recipient}: {refused.code} {refused.message}" for refused in error.recipients)
            return _failure(min(codes, default=0), f"recipient refused: {detail}")
        except aiosmtplib.SMTPResponseException as error:
            return _failure(error.code, f"{type(error).__name__}: {error.code} {error.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # No usable reply (refused connection, timeout, dropped connection): the server may be back later.
            return SendResult(Outcome.TEMPORARY, f"{type(error).__name__}: {error}")
        # One recipient: a partial refusal can only be ours, and aiosmtplib reports it without raising.
        if refused := errors.get(recipient):
            return _failure(refused.code, f"recipient refused: {recipient}: {refused.code} {refused.message}")
        return SendResult(Outcome.SENT)


def _failure(code: int, error: str) -> SendResult:
    return SendResult(Outcome.PERMANENT if 500 <= code < 600 else Outcome.TEMPORARY, error)
