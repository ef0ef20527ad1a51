"""Sign-up and e-mail confirmation (CATALOG §2, OMICRON FAQ 1.x, Canon: several users per customer)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contracts.client import PortalClient, PortalError
from contracts.registration import DeviceProvisioned
from services.runtime.service import ServiceInstance
from tests.accounts.flows import active_user, signed_up
from tests.builders import publish_event, random_email, sign_up, token_in
from tests.support import EventTap, eventually, outcome


async def refusal(portal: PortalClient, command: str, body: dict[str, object]) -> PortalError:
    with pytest.raises(PortalError) as refused:
        await portal.call(command, body)
    return refused.value


async def test_a_sign_up_waits_for_confirmation_and_announces_the_link(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request = sign_up(language="de")
    reply = await portal.call("accounts.register", request)
    assert reply["status"] == "pending_confirmation"
    event = await tap.next("accounts.user.registered", lambda body: body["user_id"] == reply["user_id"])
    assert event["email"] == request["email"] and event["language"] == "de"
    assert event["confirmation_url"].startswith(f"{accounts.settings.public_url}/confirm-email?token=")
    stored = await accounts.db.users.find_one({"_id": reply["user_id"]})
    assert stored is not None
    assert stored["password_hash"].startswith("$argon2id$")
    assert token_in(event["confirmation_url"]) not in str(stored)  # only its digest is kept


@pytest.mark.parametrize("variant", [str.upper, str.title])
async def test_an_email_is_taken_whatever_its_case(accounts: ServiceInstance, portal: PortalClient,
                                                   variant: object) -> None:
    email = random_email()
    await portal.call("accounts.register", sign_up(email=email))
    assert callable(variant)
    refused = await refusal(portal, "accounts.register", sign_up(email=variant(email)))
    assert refused.code == "email_taken"


async def test_a_username_is_taken_whatever_its_case(accounts: ServiceInstance, portal: PortalClient) -> None:
    await portal.call("accounts.register", sign_up(username="Jane.Doe"))
    assert (await refusal(portal, "accounts.register", sign_up(username="jane.doe"))).code == "username_taken"


@pytest.mark.parametrize(("overrides", "code"), [
    ({"password_confirm": "something else entirely"}, "password_mismatch"),
    ({"password": "short1", "password_confirm": "short1"}, "weak_password"),
    ({"username": "robert", "password": "xxRobert2024xx", "password_confirm": "xxRobert2024xx"}, "weak_password"),
    ({"email": "okiuser@example.com", "password": "my-okiuser-pw", "password_confirm": "my-okiuser-pw"},
     "weak_password"),
    ({"accept_terms": False}, "terms_not_accepted"),
    ({"accept_privacy": False}, "terms_not_accepted"),
    ({"email": "not-an-address"}, "validation_failed"),
    ({"username": "x" * 2_000_000}, "validation_failed"),
    ({"username": "target@example.com"}, "validation_failed"),  # would look like someone's e-mail address
    ({"country": "DE\r\nBcc: all@example.com"}, "validation_failed"),
    ({"password": "p" * 129, "password_confirm": "p" * 129}, "validation_failed"),
])
async def test_a_sign_up_breaking_a_rule_is_refused_with_its_code_and_stores_nothing(
        accounts: ServiceInstance, portal: PortalClient, overrides: dict[str, object], code: str) -> None:
    request = sign_up(**overrides)
    assert (await refusal(portal, "accounts.register", request)).code == code
    assert await accounts.db.users.count_documents({"role": {"$in": ["customer", "dealer"]}}) == 0


async def test_a_hundred_sign_ups_for_one_address_make_one_account_and_others_are_served_meanwhile(
        accounts: ServiceInstance, portal: PortalClient) -> None:
    email = random_email()
    attempts = [portal.send("accounts.register", json_body(sign_up(email=email)), timeout=60) for _ in range(100)]
    health = asyncio.create_task(portal.health("accounts"))
    replies = await asyncio.gather(*attempts)
    assert (await health).status == "ok"
    codes = sorted("ok" if reply["ok"] else reply["error"]["code"] for reply in replies)
    assert codes == ["email_taken"] * 99 + ["ok"]
    assert await accounts.db.users.count_documents({"email_key": email}) == 1


def json_body(body: dict[str, object]) -> bytes:
    import json
    return json.dumps(body).encode()


async def test_confirming_activates_once_and_the_link_is_single_use(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    _, user_id, token = await signed_up(portal, tap)
    assert await portal.call("accounts.confirm_email", {"token": token}) == {"user_id": user_id, "status": "active"}
    assert (await refusal(portal, "accounts.confirm_email", {"token": token})).code == "token_invalid"
    await tap.next("accounts.user.activated", lambda body: body["user_id"] == user_id)


async def test_a_confirmation_link_expires_after_14_days(accounts: ServiceInstance, portal: PortalClient,
                                                         tap: EventTap) -> None:
    _, user_id, token = await signed_up(portal, tap)
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None
    assert abs(stored["confirmation_expires_at"] - (datetime.now(UTC) + timedelta(days=14))) < timedelta(minutes=1)
    await accounts.db.users.update_one({"_id": user_id}, {"$set": {
        "confirmation_expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    assert (await refusal(portal, "accounts.confirm_email", {"token": token})).code == "token_invalid"


async def test_an_unconfirmed_sign_up_frees_its_address_and_username_once_its_link_has_expired(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, user_id, token = await signed_up(portal, tap)
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None and stored["unconfirmed_expires_at"] == stored["confirmation_expires_at"]  # the TTL
    assert (await refusal(portal, "accounts.register", sign_up(email=request["email"]))).code == "email_taken"
    await accounts.db.users.update_one({"_id": user_id}, {"$set": {
        "confirmation_expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    again = await portal.call("accounts.register", sign_up(email=request["email"], username=request["username"]))
    assert again["user_id"] != user_id
    assert await accounts.db.users.count_documents({"_id": user_id}) == 0
    assert (await refusal(portal, "accounts.confirm_email", {"token": token})).code == "token_invalid"


async def test_a_confirmed_account_no_longer_expires(accounts: ServiceInstance, portal: PortalClient,
                                                     tap: EventTap) -> None:
    _, user_id = await active_user(portal, tap)
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None and "unconfirmed_expires_at" not in stored


async def test_resending_the_confirmation_gives_a_new_link_but_no_longer_life(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, user_id, _ = await signed_up(portal, tap)
    registered = tap.named("accounts.user.registered")[0]
    await portal.call("accounts.resend_confirmation", {"email": request["email"]})
    resent = await tap.next("accounts.email_confirmation.requested", lambda body: body["user_id"] == user_id)
    # the same deadline (stored to the millisecond)
    deadline = datetime.fromisoformat(registered["expires_at"])
    assert abs(datetime.fromisoformat(resent["expires_at"]) - deadline) < timedelta(milliseconds=1)
    assert resent["email_change"] is False


async def test_the_addresss_owner_takes_over_an_unconfirmed_sign_up_with_a_password_reset(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    intruder, user_id, confirmation = await signed_up(portal, tap)  # made with the victim's address
    await portal.call("accounts.request_password_reset", {"email": intruder["email"]})
    reset = await tap.next("accounts.password_reset.requested", lambda body: body["user_id"] == user_id)
    await portal.call("accounts.reset_password", {"token": token_in(reset["reset_url"]),
                                                  "password": "the owner's passphrase",
                                                  "password_confirm": "the owner's passphrase"})
    session = await portal.call("accounts.login", {"login": intruder["email"], "password": "the owner's passphrase"})
    assert session["user"]["id"] == user_id
    assert await outcome(portal, "accounts.login", {"login": intruder["email"], "password": intruder["password"]}) \
        == "invalid_credentials"
    assert (await refusal(portal, "accounts.confirm_email", {"token": confirmation})).code == "token_invalid"
    await tap.next("accounts.user.activated", lambda body: body["user_id"] == user_id)
    await tap.next("accounts.session.revoked", lambda body: body["user_id"] == user_id and not body["session_id"])
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None and "unconfirmed_expires_at" not in stored


async def test_an_unknown_confirmation_token_is_invalid(accounts: ServiceInstance, portal: PortalClient) -> None:
    assert (await refusal(portal, "accounts.confirm_email", {"token": "x" * 43})).code == "token_invalid"


async def test_resending_a_confirmation_answers_ok_whether_or_not_the_address_exists(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, user_id, old_token = await signed_up(portal, tap)
    assert await portal.call("accounts.resend_confirmation", {"email": request["email"]}) == {}
    assert await portal.call("accounts.resend_confirmation", {"email": random_email()}) == {}
    event = await tap.next("accounts.email_confirmation.requested", lambda body: body["user_id"] == user_id)
    assert len(tap.named("accounts.email_confirmation.requested")) == 1
    assert (await refusal(portal, "accounts.confirm_email", {"token": old_token})).code == "token_invalid"
    new = await portal.call("accounts.confirm_email", {"token": token_in(event["confirmation_url"])})
    assert new["status"] == "active"


async def provision_serial(accounts: ServiceInstance, amqp_url: str) -> None:
    """The installed base has AK12345678 at customer 100234, and accounts knows it."""
    await publish_event(amqp_url, DeviceProvisioned.routing_key, DeviceProvisioned(
        device_id="d1", serial_number="AK12345678", model="ES5431dn", customer_number="100234",
    ).model_dump(mode="json"))

    async def known() -> bool:
        return await accounts.db.installed_base.count_documents({"_id": "AK12345678"}) == 1
    await eventually(known)


async def test_a_sign_up_with_a_matching_customer_and_serial_joins_that_customer(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, amqp_url: str) -> None:
    await provision_serial(accounts, amqp_url)
    first, first_id = await active_user(portal, tap, customer_number="100234", serial_number="ak12345678 ")
    second, second_id = await active_user(portal, tap, customer_number="100234", serial_number="AK12345678")
    for user_id in (first_id, second_id):  # several users per customer, each with their own e-mail
        stored = await accounts.db.users.find_one({"_id": user_id})
        assert stored is not None and stored["customer_number"] == "100234"


@pytest.mark.parametrize(("overrides"), [
    {"customer_number": "100234", "serial_number": "UNKNOWN999"},
    {"customer_number": "999999", "serial_number": "AK12345678"},
    {"customer_number": "100234"},
    {"role": "dealer"},
])
async def test_a_sign_up_that_cannot_be_matched_waits_for_an_operator_after_confirmation(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, amqp_url: str,
        overrides: dict[str, str]) -> None:
    await provision_serial(accounts, amqp_url)
    _, user_id, token = await signed_up(portal, tap, **overrides)
    confirmed = await portal.call("accounts.confirm_email", {"token": token})
    assert confirmed == {"user_id": user_id, "status": "pending_verification"}
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None and stored["customer_number"] is None
