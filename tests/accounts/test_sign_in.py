"""Sign-in, sessions, lockout, logout and contract sign-in (CATALOG §2, OMICRON FAQ 2.x, OKI flat rate)."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import verify_token
from tests.accounts.flows import active_user, signed_in, signed_up
from tests.builders import random_email, token_for
from tests.support import EventTap, outcome


@pytest.mark.parametrize("by", ["email", "username"])
async def test_a_user_signs_in_with_email_or_username(accounts: ServiceInstance, portal: PortalClient,
                                                      tap: EventTap, settings: Settings, by: str) -> None:
    request, user_id = await active_user(portal, tap, language="nb")
    login = request[by].upper() if by == "email" else request[by]
    session = await portal.call("accounts.login", {"login": login, "password": request["password"]})
    assert session["user"] == {"id": user_id, "email": request["email"], "username": request["username"],
                               "role": "customer", "language": "nb", "customer_number": None,
                               "contract_number": None}
    claims = verify_token(session["access_token"], settings.token_secret.get_secret_value())
    assert claims.user_id == user_id


@pytest.mark.parametrize(("remember_me", "hours"), [(True, 12), (False, 1)])
async def test_a_session_lasts_12_hours_with_remember_me_and_1_hour_without(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, remember_me: bool, hours: int) -> None:
    request, _ = await active_user(portal, tap)
    session = await portal.call("accounts.login", {"login": request["email"], "password": request["password"],
                                                   "remember_me": remember_me})
    expires_at = datetime.fromisoformat(session["expires_at"])
    assert abs(expires_at - (datetime.now(UTC) + timedelta(hours=hours))) < timedelta(minutes=1)


async def test_unknown_user_and_wrong_password_are_both_invalid_credentials(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, _ = await active_user(portal, tap)
    wrong = await outcome(portal, "accounts.login", {"login": request["email"], "password": "not the password"})
    unknown = await outcome(portal, "accounts.login", {"login": random_email(), "password": "not the password"})
    assert wrong == unknown == "invalid_credentials"


async def test_unknown_and_known_users_take_the_same_time_to_refuse(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, _ = await active_user(portal, tap)

    async def timed(login: str) -> float:
        started = time.perf_counter()
        await outcome(portal, "accounts.login", {"login": login, "password": "not the password"})
        return time.perf_counter() - started
    # Alternate, 4 each (under the lockout), so machine load hits both alike.
    known, unknown = [], []
    for _ in range(4):
        known.append(await timed(request["username"]))
        unknown.append(await timed(random_email()))
    # Without the dummy hash an unknown user is refused in ~2 ms instead of an Argon2 verification (~50 ms).
    assert statistics.median(unknown) > 0.5 * statistics.median(known)


async def test_an_unconfirmed_account_cannot_sign_in_but_only_the_right_password_says_so(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, _, _ = await signed_up(portal, tap)
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": "nope nope nope"}) \
        == "invalid_credentials"
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": request["password"]}) \
        == "email_not_confirmed"


async def test_an_account_waiting_for_verification_cannot_sign_in(accounts: ServiceInstance, portal: PortalClient,
                                                                  tap: EventTap) -> None:
    request, _, token = await signed_up(portal, tap, role="dealer")
    await portal.call("accounts.confirm_email", {"token": token})
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": request["password"]}) \
        == "pending_verification"


async def test_five_failures_within_15_minutes_lock_the_account_for_15_minutes(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    wrong = {"login": request["email"], "password": "not the password"}
    codes = [await outcome(portal, "accounts.login", wrong) for _ in range(5)]
    assert codes == ["invalid_credentials"] * 5
    right = {"login": request["email"], "password": request["password"]}
    assert await outcome(portal, "accounts.login", right) == "account_locked"
    failures = await accounts.db.login_failures.find_one({"_id": f"user:{user_id}"})
    assert failures is not None
    locked_until = datetime.fromtimestamp(failures["locked_until_ms"] / 1000, UTC)
    assert abs(locked_until - (datetime.now(UTC) + timedelta(minutes=15))) < timedelta(minutes=1)
    # 15 minutes later the lock is over
    await age_failures(accounts, f"user:{user_id}", timedelta(minutes=15, seconds=1))
    assert await outcome(portal, "accounts.login", right) == "ok"


async def age_failures(accounts: ServiceInstance, key: str, by: timedelta) -> None:
    """Move a sign-in window into the past, as if `by` had gone by."""
    shift = round(by.total_seconds() * 1000)
    await accounts.db.login_failures.update_one({"_id": key}, {"$inc": {
        "window_start_ms": -shift, "stale_after_ms": -shift, "locked_until_ms": -shift}})


async def test_failures_spread_over_more_than_15_minutes_do_not_lock(accounts: ServiceInstance,
                                                                     portal: PortalClient, tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    wrong = {"login": request["username"], "password": "not the password"}
    for _ in range(4):
        await outcome(portal, "accounts.login", wrong)
    await age_failures(accounts, f"user:{user_id}", timedelta(minutes=16))
    assert await outcome(portal, "accounts.login", wrong) == "invalid_credentials"
    assert await outcome(portal, "accounts.login", {**wrong, "password": request["password"]}) == "ok"


async def test_thirty_wrong_passwords_sent_at_once_lock_the_account(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, user_id = await active_user(portal, tap)
    wrong = {"login": request["email"], "password": "not the password"}
    codes = await asyncio.gather(*(outcome(portal, "accounts.login", wrong) for _ in range(30)))
    # Only five guesses got a password check; the rest were refused unchecked.
    assert sorted(codes) == ["account_locked"] * 25 + ["invalid_credentials"] * 5
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": request["password"]}) \
        == "account_locked"


async def test_the_email_and_the_username_of_one_account_share_one_failure_count(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, _ = await active_user(portal, tap)
    for login in (request["email"], request["username"]) * 2 + (request["email"].upper(),):
        assert await outcome(portal, "accounts.login", {"login": login, "password": "not the password"}) \
            == "invalid_credentials"
    assert await outcome(portal, "accounts.login", {"login": request["username"], "password": request["password"]}) \
        == "account_locked"


async def test_sign_in_by_email_matches_only_email_addresses_never_a_username(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    attacker, attacker_id = await active_user(portal, tap, password="the attacker's own",
                                              password_confirm="the attacker's own")
    victim, _ = await active_user(portal, tap)
    # A username equal to the victim's address, as sign-up allowed before usernames refused `@`.
    await accounts.db.users.update_one({"_id": attacker_id}, {"$set": {
        "username": victim["email"], "username_key": victim["email"].lower()}})
    session = await portal.call("accounts.login", {"login": victim["email"], "password": victim["password"]})
    assert session["user"]["email"] == victim["email"]
    assert await outcome(portal, "accounts.login", {"login": victim["email"], "password": attacker["password"]}) \
        == "invalid_credentials"


async def test_unknown_logins_lock_too_so_a_lock_tells_nothing(accounts: ServiceInstance,
                                                               portal: PortalClient) -> None:
    wrong = {"login": random_email(), "password": "not the password"}
    codes = [await outcome(portal, "accounts.login", wrong) for _ in range(6)]
    assert codes == ["invalid_credentials"] * 5 + ["account_locked"]


async def test_logout_revokes_the_session_at_once_and_tells_every_service(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    _, token = await signed_in(portal, tap)
    assert await outcome(portal, "accounts.get_profile", {}, token) == "ok"
    assert await portal.call("accounts.logout", {}, token=token) == {}
    assert await outcome(portal, "accounts.get_profile", {}, token) == "unauthenticated"
    revoked = await tap.next("accounts.session.revoked")
    assert revoked["session_id"]


async def test_a_token_signed_with_another_key_is_unauthenticated(accounts: ServiceInstance,
                                                                  portal: PortalClient, settings: Settings) -> None:
    token, _ = token_for(settings, secret="another-key-another-key-another-key!")
    assert await outcome(portal, "accounts.get_profile", {}, token) == "unauthenticated"


CONTRACTS = [
    {"contract_number": "K-1", "type": "page_price", "start_date": "2024-01-01", "end_date": "2098-12-31",
     "billing_period": "quarterly", "includes_consumables": True},
    {"contract_number": "K-2", "type": "service", "start_date": "2025-01-15", "billing_period": "annual"}]


async def provision(portal: PortalClient, settings: Settings, customer_number: str = "100234",
                    contracts: list[dict[str, object]] | None = None) -> None:
    operator, _ = token_for(settings, role="operator")  # type: ignore[arg-type]
    await portal.call("accounts.operator.provision_customer", {
        "customer_number": customer_number, "name": "Muster GmbH", "contracts": contracts or CONTRACTS},
        token=operator)


async def test_a_contract_sign_in_gives_a_token_scoped_to_that_contract(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await provision(portal, settings)
    session = await portal.call("accounts.contract_login", {"customer_number": "100234", "contract_number": "K-1"})
    claims = verify_token(session["access_token"], settings.token_secret.get_secret_value())
    assert (claims.customer_number, claims.contract_number) == ("100234", "K-1")
    contracts = await portal.call("accounts.list_contracts", {}, token=session["access_token"])
    assert [contract["contract_number"] for contract in contracts["items"]] == ["K-1"]
    assert contracts["items"][0]["term_months"] == 900


async def test_a_wrong_contract_number_is_invalid_credentials_and_locks_after_five(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await provision(portal, settings)
    wrong = {"customer_number": "100234", "contract_number": "K-9"}
    codes = [await outcome(portal, "accounts.contract_login", wrong) for _ in range(6)]
    assert codes == ["invalid_credentials"] * 5 + ["account_locked"]
    assert await outcome(portal, "accounts.contract_login", {"customer_number": "100234", "contract_number": "K-1"}) \
        == "account_locked"


async def test_contract_numbers_guessed_at_once_are_counted_all_the_same(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await provision(portal, settings)
    guesses = [{"customer_number": "100234", "contract_number": f"K-{number}"} for number in range(3, 33)]
    codes = await asyncio.gather(*(outcome(portal, "accounts.contract_login", guess) for guess in guesses))
    assert sorted(codes) == ["account_locked"] * 25 + ["invalid_credentials"] * 5
    assert await outcome(portal, "accounts.contract_login", {"customer_number": "100234", "contract_number": "K-1"}) \
        == "account_locked"


TODAY = datetime.now(UTC).date()


@pytest.mark.parametrize(("start", "end"), [
    (TODAY - timedelta(days=400), TODAY - timedelta(days=1)),  # ended yesterday
    (TODAY + timedelta(days=1), None),  # starts tomorrow
])
async def test_a_contract_not_in_force_today_signs_in_no_more(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings, start: date, end: date | None) -> None:
    await provision(portal, settings, contracts=[{
        "contract_number": "K-7", "type": "service", "start_date": start.isoformat(),
        "end_date": end.isoformat() if end else None}])
    assert await outcome(portal, "accounts.contract_login", {"customer_number": "100234", "contract_number": "K-7"}) \
        == "invalid_credentials"


async def test_a_two_megabyte_login_name_is_refused_at_once_while_others_are_served(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, _ = await active_user(portal, tap)
    huge = asyncio.create_task(outcome(portal, "accounts.login", {"login": "x" * 2_000_000, "password": "p"}))
    assert await outcome(portal, "accounts.login", {"login": request["email"], "password": request["password"]}) \
        == "ok"
    assert await huge == "validation_failed"
