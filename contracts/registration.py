"""registration: product models, installed base, devices, warranty (CATALOG §3).

Only what other services consume so far; the commands arrive with the registration issue.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from contracts.base import Event


class DeviceProvisioned(Event):
    """A device of the installed base (from the vendor's ERP) and the customer it belongs to."""

    routing_key: ClassVar[str] = "registration.device.provisioned"
    serial_number: str
    model: str | None = None
    customer_number: str
    contract_number: str | None = None
    version: int = Field(default=1, description="Grows with every change; older copies are ignored.")
