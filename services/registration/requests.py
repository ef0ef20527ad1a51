"""registration: claims of installed-base devices and address changes, decided by operators."""

from __future__ import annotations

from services.runtime.service import Router

router = Router()
