"""Recipients: kept from accounts events; a late, older profile update never overwrites a newer one."""

from __future__ import annotations

from typing import Any

from contracts.accounts import UserActivated
from services.runtime.service import ServiceInstance
from tests.builders import random_email, random_id
from tests.notifier.support import profile_updated, publish, registered
from tests.support import eventually


async def recipient(instance: ServiceInstance, user_id: str) -> dict[str, Any] | None:
    return await instance.db.recipients.find_one({"_id": user_id})


async def wait_for_recipient(instance: ServiceInstance, user_id: str) -> None:
    async def known() -> bool:
        return await recipient(instance, user_id) is not None
    await eventually(known)


async def test_an_older_profile_update_does_not_overwrite_a_newer_one(
        notifier: ServiceInstance, amqp_url: str) -> None:
    user_id, marker = random_id("u"), random_id("u")
    newer, older = random_email(), random_email()
    await publish(amqp_url, profile_updated(user_id, newer, version=3, language="nb"))
    await publish(amqp_url, profile_updated(user_id, older, version=2, language="de"))
    await publish(amqp_url, profile_updated(marker, random_email(), version=1))

    # One queue delivers in order: once the marker is stored, the older update has been handled.
    await wait_for_recipient(notifier, marker)
    stored = await recipient(notifier, user_id)
    assert stored is not None
    assert (stored["email"], stored["language"], stored["version"]) == (newer, "nb", 3)


async def test_a_registration_gives_the_basics_and_a_later_activation_does_not_overwrite_a_profile(
        notifier: ServiceInstance, amqp_url: str) -> None:
    event = registered(random_email(), "de", first_name="Kari", last_name="Nordmann")
    await publish(amqp_url, event)
    await wait_for_recipient(notifier, event.user_id)
    stored = await recipient(notifier, event.user_id)
    assert stored is not None
    assert (stored["email"], stored["language"], stored["first_name"], stored["last_name"], stored["version"]) == (
        event.email, "de", "Kari", "Nordmann", 0)

    changed = random_email()
    await publish(amqp_url, profile_updated(event.user_id, changed, version=1, language="nb"))

    async def updated() -> bool:
        found = await recipient(notifier, event.user_id)
        return found is not None and found["version"] == 1
    await eventually(updated)
    activation = UserActivated(user_id=event.user_id, email=event.email, language="de", username="kari",
                               role="customer")
    marker = random_id("u")
    await publish(amqp_url, activation)
    await publish(amqp_url, UserActivated(user_id=marker, email=random_email(), username="m", role="customer"))
    await wait_for_recipient(notifier, marker)
    stored = await recipient(notifier, event.user_id)
    assert stored is not None
    assert (stored["email"], stored["language"]) == (changed, "nb")
