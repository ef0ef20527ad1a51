"""ticketing's composition root: the service declaration its handlers register on."""

from __future__ import annotations

from services.runtime.service import Service

service = Service("ticketing", description="Service requests and their life cycle (CATALOG §6).")
