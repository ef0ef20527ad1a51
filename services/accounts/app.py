"""accounts's composition root: the service declaration its handlers register on."""

from __future__ import annotations

from services.runtime.service import Service

service = Service("accounts", description="People, customers, contracts, sessions and access tokens (CATALOG §2).")
