"""registration: bulk registration from Excel files, processed in the background."""

from __future__ import annotations

from services.runtime.service import Router

router = Router()
