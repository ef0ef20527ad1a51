"""Terms before devices: registration counts only an acceptance of the vendor's current versions (CATALOG §2
`accounts.accept_terms`: "device registration is refused until both are accepted")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts.client import PortalClient
from deploy.local.demo import OKI_MODELS
from services.registration.app import service as registration_service
from services.registration.settings import RegistrationSettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import device_registration, operator_token, token_for
from tests.registration.flows import accept_terms, terms_handled
from tests.registration.test_bulk import upload_body, valid_rows, workbook
from tests.support import outcome, running


@pytest.fixture
async def version_2(settings: Settings, portal: PortalClient) -> AsyncIterator[ServiceInstance]:
    """registration after the vendor published terms and privacy notice "2"."""
    published = RegistrationSettings(**{**dict(settings), "terms_version": "2", "privacy_version": "2"})
    async with running(registration_service, published) as instance:
        await portal.call("registration.operator.upsert_models", {"models": OKI_MODELS},
                          token=operator_token(settings))
        yield instance


async def registering(portal: PortalClient, token: str) -> tuple[str, str]:
    """The outcomes of a single registration and of a bulk upload."""
    return (await outcome(portal, "registration.register_device", device_registration(), token),
            await outcome(portal, "registration.bulk_upload", upload_body(workbook(valid_rows(1))), token))


async def test_without_any_acceptance_both_kinds_of_registration_are_refused(
        version_2: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings)
    assert await registering(portal, token) == ("terms_not_accepted", "terms_not_accepted")
    assert await version_2.db.devices.count_documents({}) == 0
    assert await version_2.db.uploads.count_documents({}) == 0


async def test_an_acceptance_of_the_previous_versions_is_refused_once_new_ones_are_published(
        version_2: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token, claims = token_for(settings)
    now = datetime.now(UTC)
    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id, terms_version="1",
                                                      privacy_version="1", accepted_at=now - timedelta(days=30)))
    assert await registering(portal, token) == ("terms_not_accepted", "terms_not_accepted")
    # Both must be the current ones: the new terms with the old privacy notice are not enough.
    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id, terms_version="2",
                                                      privacy_version="1", accepted_at=now - timedelta(days=1)))
    assert await registering(portal, token) == ("terms_not_accepted", "terms_not_accepted")
    assert await version_2.db.devices.count_documents({}) == 0

    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id, accepted_at=now))
    assert await registering(portal, token) == ("ok", "ok")


async def test_a_late_older_acceptance_does_not_undo_a_newer_one_and_duplicates_are_harmless(
        version_2: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token, claims = token_for(settings)
    now = datetime.now(UTC)
    current = await accept_terms(version_2, amqp_url, claims.user_id, accepted_at=now)
    await terms_handled(version_2, current)
    # The acceptance of version 1, a month older, is delivered only now; then the current one again (a new copy).
    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id, terms_version="1",
                                                      privacy_version="1", accepted_at=now - timedelta(days=30)))
    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id, accepted_at=now))
    assert await registering(portal, token) == ("ok", "ok")


async def test_an_acceptance_without_a_date_counts_as_older_than_any_dated_one(
        version_2: ServiceInstance, portal: PortalClient, settings: Settings, amqp_url: str) -> None:
    token, claims = token_for(settings)
    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id,
                                                      accepted_at=datetime.now(UTC)))
    await terms_handled(version_2, await accept_terms(version_2, amqp_url, claims.user_id, terms_version="1",
                                                      privacy_version="1"))
    assert await registering(portal, token) == ("ok", "ok")
