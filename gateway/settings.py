"""The gateway's settings: `PORTAL_*` variables with working local defaults, like the services'."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


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
    gateway_retry_after_seconds: int = Field(default=5, ge=1, description="`Retry-After` of a 503.")

    @property
    def secure_cookies(self) -> bool:
        return self.env == "production"
