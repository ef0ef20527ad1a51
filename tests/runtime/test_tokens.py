"""Access tokens are verified locally; revoked sessions are refused from the event on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts.accounts import SessionRevoked
from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import InvalidToken, Role, bearer_token, verify_token
from tests.builders import operator_token, publish_event, random_id, token_for
from tests.runtime.sample_service import sample
from tests.support import eventually, outcome, running


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[ServiceInstance]:
    async with running(sample, settings) as instance:
        yield instance


def note() -> dict[str, str]:
    return {"note_id": random_id(), "text": "x"}


async def code_of(portal: PortalClient, command: str, token: str | None) -> str:
    return await outcome(portal, command, note() if command == "sample.add_note" else {}, token)


def test_a_token_round_trips_its_claims() -> None:
    settings = Settings()
    token, claims = token_for(settings, Role.DEALER, contract_number="K-7")
    assert verify_token(token, settings.token_secret.get_secret_value()) == claims


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer    "])
def test_a_missing_bearer_token_is_none(header: str | None) -> None:
    assert bearer_token(header) is None


def test_a_token_signed_with_another_key_is_invalid() -> None:
    settings = Settings()
    token, _ = token_for(settings, secret="another-key-another-key-another-key!")
    with pytest.raises(InvalidToken):
        verify_token(token, settings.token_secret.get_secret_value())


async def test_a_token_signed_with_another_key_expired_or_garbled_is_unauthenticated(
        service: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    foreign, _ = token_for(settings, secret="another-key-another-key-another-key!")
    expired, _ = token_for(settings, now=datetime.now(UTC) - timedelta(hours=2))
    valid, _ = token_for(settings)
    assert await code_of(portal, "sample.add_note", foreign) == "unauthenticated"
    assert await code_of(portal, "sample.add_note", expired) == "unauthenticated"
    assert await code_of(portal, "sample.add_note", "not.a.token") == "unauthenticated"
    assert await code_of(portal, "sample.add_note", None) == "unauthenticated"
    assert await code_of(portal, "sample.add_note", valid) == "ok"


async def test_an_operator_command_is_forbidden_to_other_roles(service: ServiceInstance, portal: PortalClient,
                                                               settings: Settings) -> None:
    customer, _ = token_for(settings, Role.CUSTOMER)
    dealer, _ = token_for(settings, Role.DEALER)
    operator = operator_token(settings)
    assert await code_of(portal, "sample.operator_only", customer) == "forbidden"
    assert await code_of(portal, "sample.operator_only", dealer) == "forbidden"
    assert await code_of(portal, "sample.operator_only", operator) == "ok"


async def test_a_revoked_session_is_refused_from_the_event_on(service: ServiceInstance, portal: PortalClient,
                                                              settings: Settings, amqp_url: str) -> None:
    token, claims = token_for(settings)
    other, _ = token_for(settings, user_id=claims.user_id)
    assert await code_of(portal, "sample.add_note", token) == "ok"
    now = datetime.now(UTC)
    await publish_event(amqp_url, SessionRevoked.routing_key, SessionRevoked(
        session_id=claims.session_id, revoked_at=now, until=claims.expires_at).model_dump(mode="json"))

    async def refused() -> bool:
        return await code_of(portal, "sample.add_note", token) == "unauthenticated"
    await eventually(refused)
    assert await code_of(portal, "sample.add_note", other) == "ok"  # the user's other session goes on


async def test_revoking_all_of_a_users_sessions_spares_those_signed_in_afterwards(
        service: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    now = datetime.now(UTC)
    before, claims = token_for(settings, now=now - timedelta(seconds=1))
    await publish_event(amqp_url, SessionRevoked.routing_key, SessionRevoked(
        user_id=claims.user_id, revoked_at=now, until=now + timedelta(hours=12)).model_dump(mode="json"))

    async def refused() -> bool:
        return await code_of(portal, "sample.add_note", before) == "unauthenticated"
    await eventually(refused)
    after, _ = token_for(settings, user_id=claims.user_id, now=now + timedelta(milliseconds=5))
    assert await code_of(portal, "sample.add_note", after) == "ok"
