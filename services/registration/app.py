"""registration's composition root: the service declaration its handlers register on."""

from __future__ import annotations

from services.runtime.service import Service

service = Service(
    "registration",
    description="Product models, installed base, registered devices, warranty, bulk Excel registration (CATALOG §3).",
)
