"""Pure rules of accounts: passwords, one-time tokens, lockout, session lifetimes, statuses."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

CONFIRMATION_VALID = timedelta(days=14)  # OMICRON FAQ 1.5: react within 14 days
RESET_VALID = timedelta(hours=1)
SESSION_REMEMBERED = timedelta(hours=12)  # OMICRON FAQ 2.7: the "stay signed in" cookie lasts 12 hours
SESSION_DEFAULT = timedelta(hours=1)
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 10

hasher = PasswordHasher()  # Argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile)


def hash_password(password: str) -> str:
    return hasher.hash(password)


def password_matches(stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str, confirm: str, *, username: str, email: str) -> str | None:
    """The catalogue code of what is wrong with a new password, or None."""
    if password != confirm:
        return "password_mismatch"
    lowered = password.lower()
    email_name = email.split("@", 1)[0].lower()
    if len(password) < MIN_PASSWORD_LENGTH or username.lower() in lowered or (
            len(email_name) >= 3 and email_name in lowered):
        return "weak_password"
    return None


def normalise_login(login: str) -> str:
    return login.strip().lower()


@dataclass(frozen=True)
class OneTimeToken:
    """A random link token: the mail gets `token`, the database only `digest`."""

    token: str
    digest: str
    expires_at: datetime


def new_token(now: datetime, valid_for: timedelta) -> OneTimeToken:
    token = secrets.token_urlsafe(32)  # 256 random bits
    return OneTimeToken(token, token_digest(token), now + valid_for)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt, counted (atomically, under its account) before its secret is checked.

    Counting first is what bounds guessing: of any number of attempts sent at once, only the
    first MAX_FAILURES of a window get a password check; the rest are refused unchecked.
    """

    number: int  # within the current window, this one included; a success resets the window
    locked_until: datetime | None

    def refused(self, now: datetime) -> bool:
        return self.number > MAX_FAILURES or (self.locked_until is not None and now < self.locked_until)

    def locks_on_failure(self) -> bool:
        return self.number >= MAX_FAILURES


def looks_like_email(login: str) -> bool:
    """Usernames cannot hold `@`, so a login with one is an e-mail address and only ever matches e-mails."""
    return "@" in login


def contract_in_force(start: date, end: date | None, today: date) -> bool:
    return start <= today and (end is None or today <= end)


def session_lifetime(remember_me: bool) -> timedelta:
    return SESSION_REMEMBERED if remember_me else SESSION_DEFAULT


def status_after_confirmation(*, role: str, requested_customer: str | None, serial_matches: bool) -> str:
    """Who is active at once and who waits for an operator.

    A customer who named no customer is active (they may claim devices later); one whose
    customer and serial match the installed base joins it; any other customer claim, and
    every dealer (who registers devices for others), waits for an operator's decision.
    """
    if role == "dealer":
        return "pending_verification"
    if requested_customer is None or serial_matches:
        return "active"
    return "pending_verification"


def term_months(start: date, end: date | None) -> int | None:
    if end is None:
        return None
    return (end.year - start.year) * 12 + end.month - start.month + (1 if end.day >= start.day else 0)
