"""notifier's composition root: the service declaration its handlers register on."""

from __future__ import annotations

from services.runtime.service import Service

service = Service("notifier", description="E-mail for every event above, in the recipient's language (CATALOG §7).")
