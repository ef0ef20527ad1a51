"""Devices and customers as registration and accounts announce them, for the tests of every service that keeps them
as read models (`devices` and `customers` in its database, see services/runtime/readmodels.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from contracts.accounts import Contract, CustomerProvisioned
from contracts.registration import CounterReading, DeviceProvisioned, ReminderRecipient
from services.runtime.service import ServiceInstance
from tests.builders import publish_event, random_id, random_serial
from tests.support import eventually


def today() -> date:
    return datetime.now(UTC).date()


async def provision_customer(amqp_url: str, service: ServiceInstance, customer_number: str, *,
                             billing_period: str = "quarterly", contract_number: str = "K-1",
                             start_date: date | None = None, end_date: date | None = None,
                             includes_consumables: bool = False, contracts: list[Contract] | None = None,
                             version: int = 1, wait: bool = True) -> None:
    """The customer with one contract (or `contracts`), once `service` has stored it."""
    contract = Contract(contract_number=contract_number, type="page_price", billing_period=billing_period,
                        start_date=start_date or date(2010, 1, 1), end_date=end_date,
                        includes_consumables=includes_consumables)
    event = CustomerProvisioned(customer_number=customer_number, customer_name="Zimmermann GmbH",
                                contracts=[contract] if contracts is None else contracts, version=version)
    await publish_event(amqp_url, CustomerProvisioned.routing_key, event.model_dump(mode="json"))
    if wait:
        async def known() -> bool:
            stored = await service.db.customers.find_one({"_id": customer_number})
            return stored is not None and stored.get("version") == version
        await eventually(known)


async def provision_device(amqp_url: str, service: ServiceInstance, *, customer_number: str | None = "C-1000",
                           contract_number: str | None = "K-1", counters: tuple[str, ...] = ("mono", "color"),
                           last: dict[str, int] | None = None, last_date: date | None = None, version: int = 1,
                           routing_key: str = DeviceProvisioned.routing_key, wait: bool = True,
                           **fields: Any) -> dict[str, Any]:
    """A device of the installed base as registration announces it, once `service` has stored it; the event's body."""
    device_id = fields.pop("device_id", random_id("d"))
    readings = [CounterReading(name=name, value=value, date=last_date or today() - timedelta(days=90))
                for name, value in (last or {}).items()]
    recipients = fields.pop("reminder_recipients", [ReminderRecipient(customer_number=customer_number)])
    event = DeviceProvisioned(device_id=device_id, serial_number=fields.pop("serial_number", random_serial()),
                              model=fields.pop("model", "ES5431dn"), counters=list(counters),
                              customer_number=customer_number, contract_number=contract_number,
                              last_readings=readings, version=version, reminder_recipients=recipients, **fields)
    body = event.model_dump(mode="json")
    await publish_event(amqp_url, routing_key, body)
    if wait:
        async def known() -> bool:
            stored = await service.db.devices.find_one({"_id": device_id})
            return stored is not None and stored.get("version") == version
        await eventually(known)
    return body
