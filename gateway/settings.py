"""The gateway's settings: `PORTAL_*` variables with working local defaults, like the services'."""

from __future__ import annotations

from typing import Literal
from zoneinfo import available_timezones

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.logs import LogFormat

MIB = 1024 * 1024
# Files of a zoneinfo tree that are no zone a portal is in (the host's own zone, a template, a placeholder).
NO_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PORTAL_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    env: Literal["development", "production"] = "development"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    # Bounds the request and the command it becomes (a file as base64, text with JSON's escapes): a 5 MB proof of
    # purchase is 6.4 MiB as base64, and every command stays under the services' 10 MiB.
    gateway_max_body_bytes: int = Field(default=7 * MIB, ge=1024)
    gateway_command_timeout: float = Field(default=15.0, gt=0, description="Seconds to wait for a service's reply.")
    gateway_ready_timeout: float = Field(default=3.0, gt=0, description="Seconds `/readyz` waits for each health.")
    # Continue a trace a proxy in front of the gateway began (its `traceparent`); off, a request's trace headers are
    # dropped: an internet client would otherwise decide whether its requests are traced.
    gateway_trust_trace_context: bool = False
    gateway_retry_after_seconds: int = Field(default=5, ge=1, description="`Retry-After` of a 503.")
    # Prometheus metrics on http://<gateway_metrics_host>:<gateway_metrics_port>/metrics, apart from the public port;
    # off unless a port is set (0: any free one).
    gateway_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    gateway_metrics_host: str = "0.0.0.0"  # noqa: S104 - a container's port, reached by the scraper from outside it
    log_level: str = "INFO"
    log_format: LogFormat = "text"

    # White-label: every vendor runs its own portal under its own name, colours, contact and legal texts.
    brand_name: str = Field(default="Service Portal", min_length=1, max_length=80)
    brand_logo_url: str | None = Field(default=None, description="An image shown beside the name; none: the name.")
    brand_colour: str = Field(default="#0b4f8a", pattern=r"^#[0-9a-fA-F]{6}$",
                              description="Buttons, the header and links; against white (white text on it, links "
                                          "on the white page and notices) it must reach 4.5:1 (WCAG AA).")
    brand_contact_email: str = "support@portal.localhost"
    brand_contact_phone: str | None = None
    brand_terms_url: str = "/legal/terms"
    brand_privacy_url: str = "/legal/privacy"
    brand_imprint_url: str | None = None
    time_zone: str = Field(default="UTC", description="The IANA zone the pages show times in (`Europe/Oslo`).")

    @field_validator("brand_colour")
    @classmethod
    def readable_on_white_text(cls, colour: str) -> str:
        # White is every background links sit on too (portal.css keeps the notices white for that): one check.
        if contrast_with_white(colour) < 4.5:
            raise ValueError(f"white text on {colour} (and {colour} on white) has a contrast below 4.5:1 (WCAG AA): "
                             "pick a darker colour")
        return colour

    @field_validator("time_zone")
    @classmethod
    def known_zone(cls, zone: str) -> str:
        # The list, not ZoneInfo(zone) alone: that also opens a relative path if a file happens to be there. Not the
        # list's files that name no zone: the server's own (Debian's `localtime` link), `posixrules`, `Factory`.
        if zone in NO_ZONES or zone not in available_timezones():
            raise ValueError(f"{zone!r} is no IANA time zone name (such as Europe/Oslo or UTC)")
        return zone

    @property
    def secure_cookies(self) -> bool:
        return self.env == "production"


def contrast_with_white(colour: str) -> float:
    """WCAG 2.1's contrast ratio of white against an `#rrggbb` colour."""
    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (int(colour[index:index + 2], 16) for index in (1, 3, 5))
    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    return 1.05 / (luminance + 0.05)
