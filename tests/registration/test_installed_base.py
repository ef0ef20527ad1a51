"""The installed-base import from a vendor's ERP, in batches (CATALOG §3 `import_installed_base`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from contracts.client import PortalClient
from deploy.local.demo import OKI_MODELS
from services.registration.app import service as registration_service
from services.registration.settings import RegistrationSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import operator_token, token_for
from tests.support import EventTap, running

BATCH = 4


@pytest.fixture
async def batched(settings: Settings, portal: PortalClient) -> AsyncIterator[ServiceInstance]:
    """registration importing 4 devices per batch, so a few devices already span several batches."""
    async with running(registration_service, RegistrationSettings(**dict(settings), import_batch_devices=BATCH)) \
            as instance:
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS}, token=operator_token(settings))
        yield instance


def fleet(count: int, city: str = "Berlin") -> list[dict[str, Any]]:
    return [{"serial_number": f"AK5A{number:06d}", "model": "ES5431dn", "customer_number": "C-1",
             "contract_number": "K-1", "location": {"street": "Hauptstr. 1", "postal_code": "10115", "city": city}}
            for number in range(count)]


class Writes:
    """Counts the writes to the devices collection by method, but the outbox relay's (which clears what it sent)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {}
        for method in ("update_one", "insert_one", "insert_many", "bulk_write", "find_one_and_update"):
            self._count(monkeypatch, method)

    def _count(self, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
        original = getattr(AsyncCollection, method)

        async def counted(collection: AsyncCollection[Any], *args: Any, **kwargs: Any) -> Any:
            task = asyncio.current_task()
            if collection.name == "devices" and (task is None or task.get_name() != "outbox-relay"):
                self.calls[method] = self.calls.get(method, 0) + 1
            return await original(collection, *args, **kwargs)
        monkeypatch.setattr(AsyncCollection, method, counted)


async def test_a_large_import_is_written_in_batches_with_one_event_per_device(
        batched: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(monkeypatch)
    async with EventTap(amqp_url, "registration.device.provisioned") as tap:
        first = await portal.call("registration.operator.import_installed_base", {"devices": fleet(10)},
                                  token=operator_token(settings))
        again = await portal.call("registration.operator.import_installed_base", {"devices": fleet(10, "Potsdam")},
                                  token=operator_token(settings))
        await tap.next("registration.device.provisioned", lambda body: body["version"] == 2
                       and body["serial_number"] == "AK5A000009")
    assert first == again == {"imported": 10, "rejected": []}
    # 10 devices in batches of 4: 3 writes inserting, then 3 changing; no write per device.
    assert writes.calls == {"insert_many": 3, "bulk_write": 3}
    events = tap.named("registration.device.provisioned")
    assert sorted((body["serial_number"], body["version"]) for body in events) == sorted(
        (f"AK5A{number:06d}", version) for number in range(10) for version in (1, 2))
    assert {body["location"]["city"] for body in events if body["version"] == 2} == {"Potsdam"}
    assert await batched.db.devices.count_documents({"location.city": "Potsdam", "version": 2}) == 10


async def test_a_serial_named_twice_in_one_import_is_stored_once_and_changed_by_the_later_entry(
        batched: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    devices = fleet(3)
    devices.append({**devices[1], "serial_number": "ak5a 000001", "location": {"city": "Hamburg"}})
    devices.append({**devices[0], "model": "Unknown 9000"})
    reply = await portal.call("registration.operator.import_installed_base", {"devices": devices},
                              token=operator_token(settings))
    assert reply == {"imported": 4, "rejected": [{"index": 4, "code": "unknown_model"}]}
    stored = await batched.db.devices.find_one({"serial_number": "AK5A000001"})
    assert stored is not None and (stored["location"]["city"], stored["version"]) == ("Hamburg", 2)
    assert await batched.db.devices.count_documents({}) == 3


async def test_a_device_changed_between_the_read_and_the_batched_write_is_changed_again_on_top_of_it(
        batched: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await portal.call("registration.operator.import_installed_base", {"devices": fleet(6)},
                      token=operator_token(settings))
    customer = token_for(settings, customer_number="C-1")[0]
    device = await portal.call("registration.get_device", {"serial_number": "AK5A000005"}, token=customer)
    bulk_write = AsyncCollection.bulk_write

    async def renamed_first(collection: AsyncCollection[Any], requests: list[Any], **kwargs: Any) -> Any:
        # A customer renames the device after the import read it at version 1, before its change is written.
        if collection.name == "devices" and any(isinstance(request, UpdateOne) for request in requests):
            monkeypatch.setattr(AsyncCollection, "bulk_write", bulk_write)
            await portal.call("registration.rename_device", {"device_id": device["device_id"],
                                                             "friendly_name": "Empfang"}, token=customer)
        return await bulk_write(collection, requests, **kwargs)
    monkeypatch.setattr(AsyncCollection, "bulk_write", renamed_first)
    async with EventTap(amqp_url, "registration.device.#") as tap:
        reply = await portal.call("registration.operator.import_installed_base",
                                  {"devices": fleet(6, "Potsdam")}, token=operator_token(settings))
        last = await tap.next("registration.device.provisioned", lambda body: body["device_id"] == device["device_id"])
    assert reply == {"imported": 6, "rejected": []}
    stored = await batched.db.devices.find_one({"_id": device["device_id"]})
    assert stored is not None
    assert (stored["friendly_name"], stored["location"]["city"], stored["version"]) == ("Empfang", "Potsdam", 3)
    versions = sorted(body["version"] for _, body in tap.events if body["device_id"] == device["device_id"])
    assert versions == [2, 3] and last["version"] == 3 and last["friendly_name"] == "Empfang"


def with_readings(device: dict[str, Any], mono: int, color: int, on: str) -> dict[str, Any]:
    return {**device, "counters": [{"name": "mono", "value": mono, "date": on},
                                   {"name": "color", "value": color, "date": on}]}


async def test_a_provisioned_device_carries_the_erps_last_readings_and_a_re_import_publishes_the_newer_ones(
        batched: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    [device] = fleet(1)
    async with EventTap(amqp_url, "registration.device.#") as tap:
        await portal.call("registration.operator.import_installed_base",
                          {"devices": [with_readings(device, 1200, 340, "2026-09-30")]}, token=operator_token(settings))
        first = await tap.next("registration.device.provisioned")
        await portal.call("registration.operator.import_installed_base",
                          {"devices": [with_readings(device, 1850, 410, "2026-12-31")]}, token=operator_token(settings))
        again = await tap.next("registration.device.provisioned", lambda body: body["version"] == 2)
        customer = token_for(settings, customer_number="C-1")[0]
        await portal.call("registration.rename_device", {"device_id": first["device_id"], "friendly_name": "Empfang"},
                          token=customer)
        renamed = await tap.next("registration.device.updated")
    assert first["last_readings"] == [{"name": "mono", "value": 1200, "date": "2026-09-30"},
                                      {"name": "color", "value": 340, "date": "2026-09-30"}]
    newer = [{"name": "mono", "value": 1850, "date": "2026-12-31"},
             {"name": "color", "value": 410, "date": "2026-12-31"}]
    assert again["last_readings"] == renamed["last_readings"] == newer
    assert (first["registered_by"], first["claimants"]) == (None, [])
