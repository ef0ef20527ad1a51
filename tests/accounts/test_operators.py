"""Operators: the bootstrap operator, the verification queue, decisions (CATALOG §2, OMICRON FAQ 1.8)."""

from __future__ import annotations

from pydantic import SecretStr

from contracts.client import PortalClient, PortalError
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.accounts.flows import active_user, signed_up
from tests.builders import token_for
from tests.support import EventTap, outcome, running


async def operator_token(portal: PortalClient, settings: Settings) -> str:
    session = await portal.call("accounts.login", {
        "login": settings.bootstrap_operator_email,
        "password": settings.bootstrap_operator_password.get_secret_value()})
    assert session["user"]["role"] == "operator"
    return str(session["access_token"])


async def waiting_user(portal: PortalClient, tap: EventTap, **overrides: object) -> str:
    _, user_id, token = await signed_up(portal, tap, **overrides)
    assert (await portal.call("accounts.confirm_email", {"token": token}))["status"] == "pending_verification"
    return user_id


async def test_the_bootstrap_operator_exists_once_however_often_accounts_starts(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    async with running(accounts.service, settings):  # a second replica starting
        pass
    await operator_token(portal, settings)
    assert await accounts.db.users.count_documents({"role": "operator"}) == 1


async def test_a_changed_bootstrap_password_setting_replaces_the_operators_password_at_start_up(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    old_token = await operator_token(portal, settings)
    rotated = settings.model_copy(update={"bootstrap_operator_password": SecretStr("a rotated operator secret")})
    async with running(accounts.service, rotated):  # a replica (or the next start) with the new setting
        pass
    assert await outcome(portal, "accounts.login", {
        "login": settings.bootstrap_operator_email,
        "password": settings.bootstrap_operator_password.get_secret_value()}) == "invalid_credentials"
    await operator_token(portal, rotated)
    assert await outcome(portal, "accounts.operator.list_pending_verifications", {}, old_token) == "unauthenticated"


async def test_a_changed_bootstrap_email_setting_moves_the_operator_to_the_new_address(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    await operator_token(portal, settings)
    moved = settings.model_copy(update={"bootstrap_operator_email": "ops-desk@portal.localhost"})
    async with running(accounts.service, moved), running(accounts.service, moved):  # two replicas, the next start
        pass
    await operator_token(portal, moved)
    assert await outcome(portal, "accounts.login", {
        "login": settings.bootstrap_operator_email,
        "password": settings.bootstrap_operator_password.get_secret_value()}) == "invalid_credentials"
    assert await accounts.db.users.count_documents({"role": "operator"}) == 1


async def test_a_bootstrap_email_that_belongs_to_a_customer_makes_no_operator_and_keeps_their_password(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, settings: Settings) -> None:
    customer, _ = await active_user(portal, tap)
    hijack = settings.model_copy(update={"bootstrap_operator_email": customer["email"]})
    async with running(accounts.service, hijack):
        pass
    session = await portal.call("accounts.login", {"login": customer["email"], "password": customer["password"]})
    assert session["user"]["role"] == "customer"
    await operator_token(portal, settings)  # the operator keeps the address it has


async def test_a_bootstrap_operator_is_made_even_when_someone_took_the_username_operator(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, settings: Settings) -> None:
    await accounts.db.users.delete_many({"role": "operator"})  # as on data where a customer took the name first
    await active_user(portal, tap, username="operator")
    async with running(accounts.service, settings):  # the next start
        pass
    await operator_token(portal, settings)


async def test_an_operator_sees_who_waits_and_approves_them_into_their_customer(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, settings: Settings) -> None:
    operator = await operator_token(portal, settings)
    user_id = await waiting_user(portal, tap, customer_number="100234", serial_number="NOT-IN-BASE")
    waiting = await portal.call("accounts.operator.list_pending_verifications", {"page": 1, "page_size": 10},
                                token=operator)
    assert waiting["total"] == 1 and waiting["items"][0]["user_id"] == user_id
    assert waiting["items"][0]["customer_number"] == "100234"
    decided = await portal.call("accounts.operator.decide_verification",
                                {"user_id": user_id, "approve": True, "reason": "checked the invoice"},
                                token=operator)
    assert decided == {"user_id": user_id, "status": "active"}
    event = await tap.next("accounts.user.verification_decided", lambda body: body["user_id"] == user_id)
    assert event["approved"] is True and event["customer_number"] == "100234"
    stored = await accounts.db.users.find_one({"_id": user_id})
    assert stored is not None and stored["customer_number"] == "100234"
    queue = await portal.call("accounts.operator.list_pending_verifications", {}, token=operator)
    assert queue["total"] == 0


async def test_a_rejected_user_is_told_why_and_cannot_sign_in(accounts: ServiceInstance, portal: PortalClient,
                                                              tap: EventTap, settings: Settings) -> None:
    operator = await operator_token(portal, settings)
    request, user_id, token = await signed_up(portal, tap, role="dealer")
    await portal.call("accounts.confirm_email", {"token": token})
    await portal.call("accounts.operator.decide_verification",
                      {"user_id": user_id, "approve": False, "reason": "not a dealer of ours"}, token=operator)
    event = await tap.next("accounts.user.verification_decided", lambda body: body["user_id"] == user_id)
    assert (event["approved"], event["reason"]) == (False, "not a dealer of ours")
    try:
        await portal.call("accounts.login", {"login": request["email"], "password": request["password"]})
    except PortalError as error:
        assert error.code == "forbidden"
    else:
        raise AssertionError("a rejected user signed in")


async def test_deciding_twice_or_about_an_unknown_user_is_refused(accounts: ServiceInstance, portal: PortalClient,
                                                                  tap: EventTap, settings: Settings) -> None:
    operator = await operator_token(portal, settings)
    user_id = await waiting_user(portal, tap, role="dealer")
    decide = {"user_id": user_id, "approve": True}
    await portal.call("accounts.operator.decide_verification", decide, token=operator)
    codes = []
    for body in (decide, {"user_id": "nobody", "approve": True}):
        try:
            await portal.call("accounts.operator.decide_verification", body, token=operator)
        except PortalError as error:
            codes.append(error.code)
    assert codes == ["conflict", "not_found"]
    _, active_id = await active_user(portal, tap)
    try:
        await portal.call("accounts.operator.decide_verification", {"user_id": active_id, "approve": False},
                          token=operator)
    except PortalError as error:
        assert error.code == "conflict"


async def test_operator_commands_are_forbidden_to_customers_and_dealers(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    for role in (Role.CUSTOMER, Role.DEALER):
        token, _ = token_for(settings, role)
        for command, body in (("accounts.operator.list_pending_verifications", {}),
                              ("accounts.operator.provision_customer", {"customer_number": "X", "name": "X"}),
                              ("accounts.operator.decide_verification", {"user_id": "x", "approve": True})):
            try:
                await portal.call(command, body, token=token)
            except PortalError as error:
                assert error.code == "forbidden", command
            else:
                raise AssertionError(f"{command} allowed to {role}")
