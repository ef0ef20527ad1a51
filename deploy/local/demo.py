"""The demo catalogue: the OKI models the seeds name and their consumables, loaded into a fresh local stack.

`make run` loads it once the services answer, signed in as the bootstrap operator; the
tests use the same models and consumables, so the demo and the tests cannot drift apart. Serial
patterns are made up per model (the seeds show one real serial, AK6C004746, for a C332).
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

# The OKI seed's order form for an ES5462 MFP: what an ES5431dn and an ES5462 MFP can order, in the seed's order.
ES54_CONSUMABLES: list[dict[str, Any]] = [
    {"article_number": "44472202", "description": "BELT-UNIT-C310-331/510-531/MC352-562", "kind": "belt"},
    {"article_number": "01282903", "description": "EP-CART-ES5431/3452/5462", "kind": "drum"},
    {"article_number": "44472603", "description": "FUSER-UNIT-C310-331/510-531/MC352-562", "kind": "fuser"},
    {"article_number": "44973511", "description": "TONER-C-ES5431/3452/5462-6K", "kind": "toner", "color": "cyan"},
    {"article_number": "44973512", "description": "TONER-K-ES5431/3452/5462-7K", "kind": "toner", "color": "black"},
    {"article_number": "44973510", "description": "TONER-M-ES5431/3452/5462-6K", "kind": "toner",
     "color": "magenta"},
    {"article_number": "44973509", "description": "TONER-Y-ES5431/3452/5462-6K", "kind": "toner", "color": "yellow"},
]
OKI_CONSUMABLES: dict[str, list[dict[str, Any]]] = {"ES5431dn": ES54_CONSUMABLES, "ES5462 MFP": ES54_CONSUMABLES}


async def load_demo_catalogue(amqp_url: str, settings: Settings) -> int:
    """Upsert the demo models and their consumables (re-running changes nothing); returns how many models."""
    async with PortalClient(amqp_url, timeout=15) as portal:
        session = await portal.call("accounts.login", {
            "login": settings.bootstrap_operator_email,
            "password": settings.bootstrap_operator_password.get_secret_value()})
        token = session["access_token"]
        reply = await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=token)
        for model, items in OKI_CONSUMABLES.items():
            await portal.call("ordering.operator.upsert_consumables", {"model": model, "items": items}, token=token)
        await portal.call("accounts.logout", {}, token=token)
    return int(reply["count"])
