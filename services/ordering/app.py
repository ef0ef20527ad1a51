"""ordering's composition root: the service declaration its handlers register on."""

from __future__ import annotations

from services.runtime.service import Service

service = Service("ordering", description="Consumables catalogue per model, orders and shipping (CATALOG §5).")
