"""A message id is no key: replaying someone's id gets nothing of theirs, and no token is kept to be replayed."""

from __future__ import annotations

import json
import uuid

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from tests.accounts.flows import active_user
from tests.support import EventTap


async def test_a_sign_in_replayed_with_the_victims_message_id_and_a_wrong_password_gets_no_token(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    victim, _ = await active_user(portal, tap)
    message_id = uuid.uuid4().hex
    signed_in = await portal.call("accounts.login", {"login": victim["email"], "password": victim["password"]},
                                  message_id=message_id)
    assert signed_in["access_token"]

    replayed = await portal.send("accounts.login", json.dumps(
        {"login": victim["email"], "password": "not-the-password"}).encode(), message_id=message_id)

    assert replayed["ok"] is False and replayed["error"]["code"] == "invalid_credentials"
    assert "access_token" not in json.dumps(replayed)


async def test_a_re_sent_sign_in_signs_in_again_and_no_access_token_is_stored(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    user, _ = await active_user(portal, tap)
    message_id, body = uuid.uuid4().hex, {"login": user["username"], "password": user["password"]}
    first = await portal.call("accounts.login", body, message_id=message_id)
    again = await portal.call("accounts.login", body, message_id=message_id)
    assert first["access_token"] != again["access_token"]  # two sessions, both valid
    for token in (first["access_token"], again["access_token"]):
        assert (await portal.call("accounts.get_profile", token=token))["email"] == user["email"]
    stored = [claim async for claim in accounts.db.message_claims.find({})]
    assert stored  # the sign-up and confirmation replies are kept
    assert all("access_token" not in json.dumps(claim, default=str) for claim in stored)


async def test_a_profile_read_replayed_after_logout_by_its_message_id_is_unauthenticated(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    user, _ = await active_user(portal, tap)
    token = (await portal.call("accounts.login", {"login": user["email"], "password": user["password"]}))[
        "access_token"]
    message_id = uuid.uuid4().hex
    assert (await portal.call("accounts.get_profile", token=token, message_id=message_id))["email"] == user["email"]
    await portal.call("accounts.logout", token=token)

    without_token = await portal.send("accounts.get_profile", b"{}", message_id=message_id)
    revoked_token = await portal.send("accounts.get_profile", b"{}", token=token, message_id=message_id)

    assert without_token["error"]["code"] == revoked_token["error"]["code"] == "unauthenticated"
