"""The demo catalogue: the OKI models the seeds name, loaded into a fresh local stack.

`make run` loads it once the services answer, signed in as the bootstrap operator; the
tests use the same models, so the demo and the tests cannot drift apart. Serial patterns
are made up per model (the seeds show one real serial, AK6C004746, for a C332).
"""

from __future__ import annotations

from typing import Any

from contracts.client import PortalClient
from services.runtime.settings import Settings

OKI_MODELS: list[dict[str, Any]] = [
    {"model": "C332", "article_number": "46403102", "serial_pattern": "^AK6C[0-9]{6}$", "counters": ["mono", "color"],
     "serial_hint": "On the label inside the front cover."},
    {"model": "ES5431dn", "article_number": "01332801", "serial_pattern": "^AK5A[0-9]{6}$",
     "counters": ["mono", "color"], "serial_hint": "On the rating plate at the back."},
    {"model": "ES5462 MFP", "article_number": "01332901", "serial_pattern": "^AK5M[0-9]{6}$",
     "counters": ["mono", "color", "scan"], "serial_hint": "On the rating plate below the scanner."},
]


async def load_demo_catalogue(amqp_url: str, settings: Settings) -> int:
    """Upsert the demo models (re-running changes nothing); returns how many."""
    async with PortalClient(amqp_url, timeout=15) as portal:
        session = await portal.call("accounts.login", {
            "login": settings.bootstrap_operator_email,
            "password": settings.bootstrap_operator_password.get_secret_value()})
        reply = await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS},
                                  token=session["access_token"])
        await portal.call("accounts.logout", {}, token=session["access_token"])
    return int(reply["count"])
