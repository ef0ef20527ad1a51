"""portal-admin dead-letters: list and replay through the operator commands of a running service."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from admin.auth import operator_token
from contracts.client import PortalClient
from contracts.topology import SERVICES, event_queue
from services.notifier.app import service as notifier
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role, verify_token
from tests.admin.support import portal_admin
from tests.builders import publish_event, token_for
from tests.runtime.sample_service import NoteAdded, listener
from tests.support import dead_letters, eventually, running, settings_env

NOTES_QUEUE = event_queue("listener", NoteAdded.routing_key)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(listener, settings) as instance:
        yield instance


async def dead_undecodable(amqp_url: str, portal: PortalClient, operator: str, count: int,
                           headers: dict[str, Any] | None = None) -> list[str]:
    """`count` undecodable NoteAdded events, waited for until dead-lettered (the runtime's reason: undecodable)."""
    message_ids = [await publish_event(amqp_url, NoteAdded.routing_key, f"garbage {n}".encode(), headers=headers)
                   for n in range(count)]

    async def all_dead() -> bool:
        return len(await dead_letters(portal, "listener", operator, NOTES_QUEUE)) == count
    await eventually(all_dead)
    return message_ids


async def counts(portal: PortalClient, operator: str) -> dict[str | None, int]:
    return {dead["message_id"]: dead["count"] for dead in await dead_letters(portal, "listener", operator)}


async def test_the_cli_lists_a_services_dead_letters_as_a_table_and_as_json(
        service: ServiceInstance, settings: Settings, amqp_url: str, portal: PortalClient, operator: str) -> None:
    [message_id] = await dead_undecodable(amqp_url, portal, operator, 1,
                                          headers={"authorization": "Bearer sender-secret"})

    status, table, _ = await portal_admin(settings_env(settings), "dead-letters", "list", "--service", "listener")
    json_status, document, _ = await portal_admin(settings_env(settings), "dead-letters", "list",
                                                  "--service", "listener", "--queue", NOTES_QUEUE, "--json")

    assert status == 0 and json_status == 0
    assert message_id in table and NOTES_QUEUE in table and "undecodable" in table and "garbage 0" in table
    [dead] = json.loads(document)["listener"]["items"]
    assert (dead["message_id"], dead["body"], dead["headers"]) == (message_id, "garbage 0", {})
    assert "sender-secret" not in table + document


async def test_the_cli_replays_one_dead_letter_and_then_all(
        service: ServiceInstance, settings: Settings, amqp_url: str, portal: PortalClient, operator: str) -> None:
    first, second = await dead_undecodable(amqp_url, portal, operator, 2)

    status, out, _ = await portal_admin(settings_env(settings), "dead-letters", "replay", "--service", "listener",
                                        "--queue", NOTES_QUEUE, "--message-id", first)

    assert status == 0 and "replayed 1" in out

    async def first_back() -> bool:  # still undecodable: dead-lettered again, counted
        return await counts(portal, operator) == {first: 2, second: 1}
    await eventually(first_back)

    status, out, _ = await portal_admin(settings_env(settings), "dead-letters", "replay", "--service", "listener",
                                        "--queue", NOTES_QUEUE, "--all")

    assert status == 0 and "replayed 2" in out

    async def both_back() -> bool:
        return await counts(portal, operator) == {first: 3, second: 2}
    await eventually(both_back)


async def test_without_a_service_the_cli_lists_all_six_and_names_those_not_answering(
        settings: Settings, amqp_url: str, portal: PortalClient, operator: str) -> None:
    queue = event_queue("notifier", "accounts.user.registered")
    async with running(notifier, settings):
        message_id = await publish_event(amqp_url, "accounts.user.registered", b"{}")

        async def listed() -> bool:
            return len(await dead_letters(portal, "notifier", operator)) == 1
        await eventually(listed)

        status, document, err = await portal_admin(settings_env(settings), "dead-letters", "list", "--json")

    listing = json.loads(document)
    assert status == 1  # not every service answered
    assert list(listing) == list(SERVICES)
    assert [(dead["queue"], dead["message_id"]) for dead in listing["notifier"]["items"]] == [(queue, message_id)]
    assert all("not answering" in listing[name]["error"] for name in SERVICES if name != "notifier")
    assert "accounts: not answering" in err


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.DEALER])
async def test_the_cli_with_a_customers_or_dealers_token_is_refused(
        service: ServiceInstance, settings: Settings, role: Role) -> None:
    token, _ = token_for(settings, role)
    env = settings_env(settings, PORTAL_ADMIN_TOKEN=token)

    listed = await portal_admin(env, "dead-letters", "list", "--service", "listener")
    replayed = await portal_admin(env, "dead-letters", "replay", "--service", "listener", "--queue", NOTES_QUEUE,
                                  "--all")

    assert listed[0] == replayed[0] == 1
    assert "listener: forbidden" in listed[2] and "listener: forbidden" in replayed[2]


async def test_in_production_the_cli_mints_no_token() -> None:
    env = {"PATH": os.environ["PATH"], "PORTAL_ENV": "production",
           "PORTAL_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    status, _, err = await portal_admin(env, "dead-letters", "list", "--service", "notifier")
    assert status == 2
    assert "PORTAL_ADMIN_TOKEN" in err


def test_the_minted_token_is_an_operators_that_the_services_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTAL_ENV", raising=False)
    monkeypatch.delenv("PORTAL_TOKEN_SECRET", raising=False)
    assert verify_token(operator_token(None), Settings().token_secret.get_secret_value()).role is Role.OPERATOR
    monkeypatch.setenv("PORTAL_TOKEN_SECRET", "another-secret-of-the-local-stack-7f3a9c")
    assert verify_token(operator_token(None), "another-secret-of-the-local-stack-7f3a9c").role is Role.OPERATOR
    assert operator_token("given") == "given"
