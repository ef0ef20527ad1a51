"""Steps many ordering tests take: the seed's consumables, covered customers, their devices, an order's body."""

from __future__ import annotations

from typing import Any

from contracts.client import PortalClient
from deploy.local.demo import OKI_CONSUMABLES
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import random_id, token_for
from tests.readmodels import provision_customer, provision_device

TONER_K, TONER_C, FUSER = "44973512", "44973511", "44472603"
# The OKI seed's two machines: same street, postcode and city, different site names.
HANSAALLEE = {"name": "Büro", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf",
              "country": "DE"}
CONTACT = {"name": "Claudia Zimmermann", "email": "c.zimmermann@example.com"}


def operator(settings: Settings) -> str:
    return token_for(settings, Role.OPERATOR, customer_number=None)[0]


async def load_consumables(portal: PortalClient, settings: Settings) -> None:
    """The demo catalogue's consumables, as `make run` loads them."""
    for model, items in OKI_CONSUMABLES.items():
        await portal.call("ordering.operator.upsert_consumables", {"model": model, "items": items},
                          token=operator(settings))


async def covered_customer(amqp_url: str, ordering: ServiceInstance, **contract: Any) -> str:
    """A new customer whose contract `K-1` runs and includes consumables (unless `contract` says otherwise)."""
    customer = random_id("C-")
    await provision_customer(amqp_url, ordering, customer, **{"includes_consumables": True, **contract})
    return customer


async def es5462(amqp_url: str, ordering: ServiceInstance, customer: str | None, **fields: Any) -> dict[str, Any]:
    """An ES5462 MFP of `customer` at the Hansaallee (unless `model` or `location` say otherwise); the event's body."""
    return await provision_device(amqp_url, ordering, customer_number=customer,
                                  **{"model": "ES5462 MFP", "location": HANSAALLEE, **fields})


def line(device: dict[str, Any], article_number: str = TONER_K, quantity: int = 1) -> dict[str, Any]:
    return {"device_id": device["device_id"], "article_number": article_number, "quantity": quantity}


def order(*lines: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"lines": list(lines), "contact": CONTACT, **extra}
