"""Password reset and change, username reminder (CATALOG §2, OMICRON FAQ 2.x, OneRicoh FAQ)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from tests.accounts.flows import active_user, signed_in
from tests.builders import random_email, token_in
from tests.support import EventTap, outcome


async def reset_token(portal: PortalClient, tap: EventTap, email: str, user_id: str) -> str:
    assert await portal.call("accounts.request_password_reset", {"email": email}) == {}
    event = await tap.next("accounts.password_reset.requested", lambda body: body["user_id"] == user_id)
    assert event["email"] == email
    return token_in(event["reset_url"])


async def test_a_reset_link_sets_a_new_password_once_and_revokes_every_session(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    session = await portal.call("accounts.login", {"login": request["email"], "password": request["password"]})
    token = await reset_token(portal, tap, request["email"], user_id)
    new = {"token": token, "password": "a brand new passphrase", "password_confirm": "a brand new passphrase"}
    assert await outcome(portal, "accounts.reset_password", new) == "ok"
    assert await outcome(portal, "accounts.reset_password", new) == "token_invalid"  # single-use
    assert await outcome(portal, "accounts.get_profile", {}, session["access_token"]) == "unauthenticated"
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": request["password"]}) \
        == "invalid_credentials"
    assert await outcome(portal, "accounts.login", {"login": request["email"],
                                                    "password": "a brand new passphrase"}) == "ok"
    revoked = await tap.next("accounts.session.revoked", lambda body: body["user_id"] == user_id
                             and body["session_id"] is None)
    assert revoked["until"]


async def test_a_reset_link_expires_after_an_hour(accounts: ServiceInstance, portal: PortalClient,
                                                  tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    token = await reset_token(portal, tap, request["email"], user_id)
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None
    await accounts.db.users.update_one({"_id": user_id}, {"$set": {
        "reset_expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    assert await outcome(portal, "accounts.reset_password", {
        "token": token, "password": "a brand new passphrase", "password_confirm": "a brand new passphrase"}) \
        == "token_invalid"


@pytest.mark.parametrize(("password", "confirm", "code"), [
    ("a brand new passphrase", "something else entirely", "password_mismatch"),
    ("tooshort", "tooshort", "weak_password"),
])
async def test_a_reset_to_a_bad_password_is_refused_and_the_link_still_works(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, password: str, confirm: str,
        code: str) -> None:
    request, user_id = await active_user(portal, tap)
    token = await reset_token(portal, tap, request["email"], user_id)
    assert await outcome(portal, "accounts.reset_password", {
        "token": token, "password": password, "password_confirm": confirm}) == code
    assert await outcome(portal, "accounts.reset_password", {
        "token": token, "password": "a brand new passphrase", "password_confirm": "a brand new passphrase"}) == "ok"


async def test_a_reset_for_an_unknown_address_answers_ok_and_mails_nothing(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    assert await portal.call("accounts.request_password_reset", {"email": random_email()}) == {}
    request, user_id = await active_user(portal, tap)
    await reset_token(portal, tap, request["email"], user_id)  # a known one goes out, so the tap works
    assert len(tap.named("accounts.password_reset.requested")) == 1


async def test_reset_links_to_one_address_are_capped_per_hour(accounts: ServiceInstance, portal: PortalClient,
                                                              tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    for _ in range(8):
        assert await portal.call("accounts.request_password_reset", {"email": request["email"]}) == {}
    await tap.next("accounts.password_reset.requested")
    await accounts.relay.drain()
    assert len(tap.named("accounts.password_reset.requested")) <= 5


async def test_changing_the_password_needs_the_current_one(accounts: ServiceInstance, portal: PortalClient,
                                                           tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    change = {"current_password": "not the password", "password": "another fine passphrase",
              "password_confirm": "another fine passphrase"}
    assert await outcome(portal, "accounts.change_password", change, token) == "invalid_credentials"
    assert await outcome(portal, "accounts.change_password", {**change, "current_password": request["password"],
                                                              "password_confirm": "x" * 12}, token) \
        == "password_mismatch"
    assert await outcome(portal, "accounts.change_password", {
        "current_password": request["password"], "password": request["username"] + "12345",
        "password_confirm": request["username"] + "12345"}, token) == "weak_password"
    assert await outcome(portal, "accounts.change_password", {**change, "current_password": request["password"]},
                         token) == "ok"
    assert await outcome(portal, "accounts.login", {"login": request["email"],
                                                    "password": "another fine passphrase"}) == "ok"
    await tap.next("accounts.password.changed")


async def test_changing_the_password_ends_every_other_session_but_not_this_one(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    credentials = {"login": request["username"], "password": request["password"]}
    others = [(await portal.call("accounts.login", credentials))["access_token"] for _ in range(2)]
    await portal.call("accounts.change_password", {"current_password": request["password"],
                                                   "password": "another fine passphrase",
                                                   "password_confirm": "another fine passphrase"}, token=token)
    assert await outcome(portal, "accounts.get_profile", {}, token) == "ok"
    for other in others:
        assert await outcome(portal, "accounts.get_profile", {}, other) == "unauthenticated"
    await tap.next("accounts.session.revoked")
    await accounts.relay.drain()
    assert len(tap.named("accounts.session.revoked")) == 2


async def test_wrong_current_passwords_count_toward_the_lockout(accounts: ServiceInstance, portal: PortalClient,
                                                                tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    change = {"current_password": "not the password", "password": "another fine passphrase",
              "password_confirm": "another fine passphrase"}
    codes = await asyncio.gather(*(outcome(portal, "accounts.change_password", change, token) for _ in range(8)))
    assert sorted(codes) == ["account_locked"] * 3 + ["invalid_credentials"] * 5
    assert await outcome(portal, "accounts.change_password", {**change, "current_password": request["password"]},
                         token) == "account_locked"
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": request["password"]}) \
        == "account_locked"


async def test_a_password_reset_cancels_a_pending_email_change(accounts: ServiceInstance, portal: PortalClient,
                                                               tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    session = await portal.call("accounts.login", {"login": request["email"], "password": request["password"]})
    intruders = random_email()
    await portal.call("accounts.update_profile", {"email": intruders, "current_password": request["password"]},
                      token=session["access_token"])
    change = await tap.next("accounts.email_confirmation.requested", lambda body: body["email"] == intruders)
    token = await reset_token(portal, tap, request["email"], user_id)
    await portal.call("accounts.reset_password", {"token": token, "password": "a brand new passphrase",
                                                  "password_confirm": "a brand new passphrase"})
    assert await outcome(portal, "accounts.confirm_email", {"token": token_in(change["confirmation_url"])}) \
        == "token_invalid"
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None and (stored["email"], stored["pending_email"]) == (request["email"], None)


async def test_the_username_is_mailed_only_when_names_and_address_match(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    await portal.call("accounts.update_profile", {"first_name": "Robert", "last_name": "Raut"}, token=token)
    for first, last in (("Robert", "Other"), ("Bob", "Raut")):
        assert await portal.call("accounts.recover_username", {
            "first_name": first, "last_name": last, "email": request["email"]}) == {}
    assert await portal.call("accounts.recover_username", {
        "first_name": "robert", "last_name": "RAUT", "email": request["email"].upper()}) == {}
    event = await tap.next("accounts.username.reminder_requested")
    assert event["username"] == request["username"]
    await accounts.relay.drain()
    assert len(tap.named("accounts.username.reminder_requested")) == 1
