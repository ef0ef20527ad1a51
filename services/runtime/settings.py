"""Configuration from `PORTAL_*` variables; the defaults run the local stack with nothing set."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.logs import LogFormat
from contracts.tokens import LOCAL_TOKEN_SECRET

DEVELOPMENT_TOKEN_SECRET = LOCAL_TOKEN_SECRET
DEVELOPMENT_OPERATOR_PASSWORD = "operator-password-change-me"
# HS256 keys shorter than the hash can be guessed offline from one token (RFC 7518 §3.2).
MIN_TOKEN_SECRET_BYTES = 32
MIN_OPERATOR_PASSWORD_LENGTH = 12
# Text that marks a value nobody replaced (sample files, templates, documentation): long enough
# that random output practically never contains it.
PLACEHOLDER_MARKS = ("replace", "change-me", "change_me", "changeme", "placeholder", "example", "secret-here")
# Guessable parts of the bootstrap operator's password, besides its e-mail's name.
GUESSABLE_WORDS = ("password", "passw0rd", "operator", "admin", "portal", "123456", "qwerty")
# What must be left of the password once those parts are taken out: a random password that happens
# to contain "admin" is still strong, "Admin1234567x" is not.
MIN_UNGUESSABLE_CHARACTERS = 8


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PORTAL_", extra="ignore")

    env: Literal["development", "production"] = "development"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    # Each service owns the database `<prefix><service>`; tests use their own prefix.
    database_prefix: str = "portal_"
    mongodb_timeout_ms: int = 10_000

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    mail_from: str = "Service Portal <no-reply@portal.localhost>"
    public_url: str = "http://localhost:8080"  # the gateway, which serves the pages the mails link to

    token_secret: SecretStr = SecretStr(DEVELOPMENT_TOKEN_SECRET)
    bootstrap_operator_email: str = "operator@portal.localhost"
    bootstrap_operator_password: SecretStr = SecretStr(DEVELOPMENT_OPERATOR_PASSWORD)

    # The vendor's current terms and privacy notice: device registration waits until a user has
    # accepted these (accounts.accept_terms); publishing a new version asks everyone again.
    terms_version: str = "1"
    privacy_version: str = "1"

    log_level: str = "INFO"
    log_format: LogFormat = "text"
    # Prometheus metrics on http://<metrics_host>:<metrics_port>/metrics; off unless a port is set (0: any free one).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    prefetch: int = 32
    # `quorum` for a RabbitMQ cluster: replicated queues, and a broker-side limit on redeliveries. The type of an
    # existing queue cannot change: switching needs new queues (README, "Quorum queues").
    queue_type: Literal["classic", "quorum"] = "classic"
    # Quorum queues only: a message handed back this many times (its consumer crashed or stopped before the ack) is
    # dead-lettered by the broker on the next return. A failing event handler's retries do not count (each is a new
    # message); graceful stops and restarts do, so keep it well above a few.
    delivery_limit: int = Field(default=20, ge=1)
    # Bigger command bodies are refused before parsing: a 5 MB upload is ~6.7 MB in base64,
    # so a 7 MB proof of purchase still gets `file_too_large`.
    max_body_bytes: int = 10 * 1024 * 1024
    # Seconds SIGTERM waits for in-flight messages before the process exits anyway.
    graceful_timeout: float = 15.0
    # A failing event handler runs at most this many times, then its message is dead-lettered.
    event_max_attempts: int = 8  # with the base delay: about a minute of retries before the DLQ
    event_retry_base_delay: float = 0.5
    # How long a stored reply answers a re-sent command.
    idempotency_days: int = 7
    # A worker that claimed a message and died frees it after this many seconds.
    claim_lease_seconds: float = 30.0
    outbox_poll_seconds: float = 1.0

    @model_validator(mode="after")
    def refuse_weak_secrets_in_production(self) -> Settings:
        """Production starts only with real secrets: anyone could forge operator tokens otherwise."""
        if self.env == "production":
            if problem := token_secret_problem(self.token_secret.get_secret_value()):
                raise ValueError(f"PORTAL_TOKEN_SECRET {problem}")
            if problem := operator_password_problem(self.bootstrap_operator_password.get_secret_value(),
                                                    self.bootstrap_operator_email):
                raise ValueError(f"PORTAL_BOOTSTRAP_OPERATOR_PASSWORD {problem}")
        return self

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}{service}"


def looks_like_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(mark in lowered for mark in PLACEHOLDER_MARKS) or len(set(value)) < 8


def token_secret_problem(secret: str) -> str | None:
    if secret == DEVELOPMENT_TOKEN_SECRET:
        return "is the development key: set a random one"
    if len(secret.encode()) < MIN_TOKEN_SECRET_BYTES:
        return f"must be at least {MIN_TOKEN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
    if looks_like_placeholder(secret):
        return "looks like a placeholder: set a random one (e.g. `openssl rand -hex 32`)"
    return None


def operator_password_problem(password: str, email: str) -> str | None:
    if password == DEVELOPMENT_OPERATOR_PASSWORD:
        return "is the development password: set a strong one"
    if len(password) < MIN_OPERATOR_PASSWORD_LENGTH:
        return f"must be at least {MIN_OPERATOR_PASSWORD_LENGTH} characters"
    email_name = email.split("@", 1)[0].lower()
    guessable = [*GUESSABLE_WORDS, email_name] if len(email_name) >= 3 else list(GUESSABLE_WORDS)
    unguessable = password.lower()
    for word in guessable:
        unguessable = unguessable.replace(word, "")
    if looks_like_placeholder(password) or len(unguessable) < MIN_UNGUESSABLE_CHARACTERS:
        return "looks like a placeholder or is easy to guess: set a strong one"
    return None
