"""Profile, terms, contacts and contracts (CATALOG §2, OKI profile page, Canon contract portal)."""

from __future__ import annotations

import asyncio

import pytest

from contracts.client import PortalClient, PortalError
from services.accounts.app import service as accounts_service
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.accounts.flows import signed_in
from tests.builders import operator_token, random_email, token_for, token_in
from tests.support import EventTap, eventually, running

OKI_PROFILE = {
    "title": "Mr", "first_name": "Robert", "last_name": "Raut", "phone": "09846528418", "country": "IN",
    "address": {"street1": "Infy Street1", "street2": "Infy Street2", "postal_code": "500001", "city": "Delhi",
                "country": "India"},
    "company": {"name": "Software", "vat_number": "Ak749244821", "customer_type": "Business User",
                "position": "Admin Manager", "vertical": "Mining, Quarrying, and Oil", "employees": "250 - 999"},
    "communication": {"email": True, "sms": False, "phone": True, "post": False},
    "subscriptions": ["newsletter", "customer_events"],
}


async def test_a_profile_keeps_what_the_oki_profile_page_asks_for(accounts: ServiceInstance,
                                                                  portal: PortalClient, tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    updated = await portal.call("accounts.update_profile", {**OKI_PROFILE, "language": "de"}, token=token)
    profile = await portal.call("accounts.get_profile", {}, token=token)
    assert updated == profile
    assert profile["address"]["city"] == "Delhi" and profile["company"]["vat_number"] == "Ak749244821"
    assert profile["communication"]["phone"] is True and profile["subscriptions"] == ["newsletter", "customer_events"]
    assert (profile["language"], profile["email"]) == ("de", request["email"])
    event = await tap.next("accounts.profile.updated")
    assert (event["language"], event["first_name"], event["version"]) == ("de", "Robert", 2)


async def test_an_update_changes_only_the_fields_it_names(accounts: ServiceInstance, portal: PortalClient,
                                                          tap: EventTap) -> None:
    _, token = await signed_in(portal, tap)
    await portal.call("accounts.update_profile", OKI_PROFILE, token=token)
    profile = await portal.call("accounts.update_profile", {"phone": "+47 22 00 00 00"}, token=token)
    assert profile["phone"] == "+47 22 00 00 00" and profile["first_name"] == "Robert"


@pytest.mark.parametrize("section", ["address", "company", "communication", "subscriptions"])
async def test_a_section_given_as_null_is_left_as_it_is_and_the_profile_still_reads(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, section: str) -> None:
    """Found by the gateway's fuzzing: a null section was stored, and every later reply was `internal`."""
    _, token = await signed_in(portal, tap)
    before = await portal.call("accounts.update_profile", OKI_PROFILE, token=token)
    after = await portal.call("accounts.update_profile", {section: None, "phone": None}, token=token)
    assert after[section] == before[section] and after["phone"] is None
    assert await portal.call("accounts.get_profile", {}, token=token) == after


async def test_a_new_email_takes_effect_only_once_confirmed_from_that_address(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    new_email = random_email()
    profile = await portal.call("accounts.update_profile", {"email": new_email,
                                                            "current_password": request["password"]}, token=token)
    assert (profile["email"], profile["pending_email"]) == (request["email"], new_email)
    event = await tap.next("accounts.email_confirmation.requested", lambda body: body["email"] == new_email)
    await portal.call("accounts.confirm_email", {"token": token_in(event["confirmation_url"])})
    profile = await portal.call("accounts.get_profile", {}, token=token)
    assert (profile["email"], profile["pending_email"]) == (new_email, None)
    session = await portal.call("accounts.login", {"login": new_email, "password": request["password"]})
    assert session["user"]["email"] == new_email


@pytest.mark.parametrize("change", [
    {"first_name": "Eve\r\nBcc: everyone@example.com"}, {"last_name": "Doe\n"}, {"title": "Dr\u0085"},
    {"address": {"city": "Oslo\rX"}}, {"company": {"name": "ACME\tLtd"}}, {"subscriptions": ["news\nletter"]},
    {"subscriptions": ["x" * 61]}, {"subscriptions": [f"topic-{number}" for number in range(21)]},
])
async def test_control_characters_and_unbounded_lists_in_a_profile_are_refused_and_change_nothing(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap, change: dict[str, object]) -> None:
    _, token = await signed_in(portal, tap)
    before = await portal.call("accounts.get_profile", {}, token=token)
    with pytest.raises(PortalError) as refused:
        await portal.call("accounts.update_profile", change, token=token)
    assert refused.value.code == "validation_failed"
    assert await portal.call("accounts.get_profile", {}, token=token) == before


async def test_a_contact_name_with_a_line_break_is_refused(accounts: ServiceInstance, portal: PortalClient,
                                                           settings: Settings) -> None:
    token, _ = token_for(settings, customer_number="C-1")
    with pytest.raises(PortalError) as refused:
        await portal.call("accounts.add_contact", {"name": "Anna\nBcc: x@example.com", "email": "anna@example.com"},
                          token=token)
    assert refused.value.code == "validation_failed" and "name" in refused.value.fields


async def test_an_email_change_needs_the_current_password_and_the_old_address_is_told(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    new_email = random_email()
    for password, code in ((None, "validation_failed"), ("not the password", "invalid_credentials")):
        change = {"email": new_email, "first_name": "Mallory"} | ({"current_password": password} if password else {})
        with pytest.raises(PortalError) as refused:
            await portal.call("accounts.update_profile", change, token=token)
        assert (refused.value.code, list(refused.value.fields)) == (code, ["current_password"])
    profile = await portal.call("accounts.get_profile", {}, token=token)
    assert (profile["pending_email"], profile["first_name"]) == (None, None)  # a refusal changes nothing
    await portal.call("accounts.update_profile", {"email": new_email, "current_password": request["password"]},
                      token=token)
    notice = await tap.next("accounts.email_change.requested")
    assert (notice["email"], notice["new_email"]) == (request["email"], new_email)
    confirmation = await tap.next("accounts.email_confirmation.requested", lambda body: body["email"] == new_email)
    assert confirmation["email_change"] is True


async def test_the_same_email_in_another_case_needs_no_password(accounts: ServiceInstance, portal: PortalClient,
                                                                tap: EventTap) -> None:
    request, token = await signed_in(portal, tap)
    profile = await portal.call("accounts.update_profile", {"email": request["email"].upper(), "phone": "1"},
                                token=token)
    assert (profile["pending_email"], profile["phone"]) == (None, "1")


async def test_signing_up_is_consent_to_the_account_but_accepts_no_terms_for_device_registration(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    _, token = await signed_in(portal, tap)
    profile = await portal.call("accounts.get_profile", {}, token=token)
    assert (profile["terms_version"], profile["privacy_version"], profile["terms_accepted_at"]) == (None, None, None)
    assert profile["terms_open"] is True
    assert tap.named("accounts.terms.accepted") == []


async def test_accepting_terms_records_the_current_versions_beside_what_the_client_named(
        accounts: ServiceInstance, portal: PortalClient, tap: EventTap) -> None:
    _, token = await signed_in(portal, tap)
    await portal.call("accounts.accept_terms", {"terms_version": "AGB 11/2026", "privacy_version": "DS v1"},
                      token=token)
    profile = await portal.call("accounts.get_profile", {}, token=token)
    assert (profile["terms_version"], profile["privacy_version"]) == ("1", "1")
    assert (profile["current_terms_version"], profile["terms_open"]) == ("1", False)
    assert profile["terms_accepted_at"]
    accepted = await tap.next("accounts.terms.accepted", lambda body: body["user_id"] == profile["user_id"])
    assert (accepted["terms_version"], accepted["privacy_version"]) == ("1", "1")
    assert (accepted["stated_terms_version"], accepted["stated_privacy_version"]) == ("AGB 11/2026", "DS v1")
    assert accepted["accepted_at"]


async def test_a_new_terms_version_in_the_settings_asks_everyone_again(
        portal: PortalClient, tap: EventTap, settings: Settings) -> None:
    async with running(accounts_service, settings):
        _, token = await signed_in(portal, tap)
        await portal.call("accounts.accept_terms", {"terms_version": "1", "privacy_version": "1"}, token=token)
    async with running(accounts_service, settings.model_copy(update={"terms_version": "2"})):
        profile = await portal.call("accounts.get_profile", {}, token=token)
        assert (profile["terms_version"], profile["current_terms_version"], profile["terms_open"]) == ("1", "2", True)
        await portal.call("accounts.accept_terms", {"terms_version": "2", "privacy_version": "1"}, token=token)
        profile = await portal.call("accounts.get_profile", {}, token=token)
        assert (profile["terms_version"], profile["terms_open"]) == ("2", False)


async def test_contacts_are_shared_by_the_users_of_one_customer_and_nobody_else(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    colleague, _ = token_for(settings, customer_number="C-1")
    other_colleague, _ = token_for(settings, customer_number="C-1")
    stranger, _ = token_for(settings, customer_number="C-2")
    await portal.call("accounts.add_contact", {"name": "Anna Admin", "email": "anna@example.com"}, token=colleague)
    shared = await portal.call("accounts.list_contacts", {}, token=other_colleague)
    assert [contact["name"] for contact in shared["items"]] == ["Anna Admin"]
    assert (await portal.call("accounts.list_contacts", {}, token=stranger))["items"] == []


async def test_a_contract_sign_in_sees_and_adds_only_its_contracts_contacts(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings) -> None:
    colleague, _ = token_for(settings, customer_number="C-1")
    contract, _ = token_for(settings, customer_number="C-1", contract_number="K-1")
    other_contract, _ = token_for(settings, customer_number="C-1", contract_number="K-2")
    await portal.call("accounts.add_contact", {"name": "Anna Admin", "email": "anna@example.com"}, token=colleague)
    added = await portal.call("accounts.add_contact", {"name": "Kai Copier", "email": "kai@example.com"},
                              token=contract)
    assert [contact["name"] for contact in added["items"]] == ["Kai Copier"]
    assert [contact["name"] for contact in (await portal.call("accounts.list_contacts", {}, token=colleague))[
        "items"]] == ["Anna Admin"]
    assert (await portal.call("accounts.list_contacts", {}, token=other_contract))["items"] == []


async def test_contracts_are_those_of_the_callers_customer(accounts: ServiceInstance, portal: PortalClient,
                                                           settings: Settings) -> None:
    operator = operator_token(settings)
    for number, contract in (("C-1", "K-1"), ("C-2", "K-2")):
        await portal.call("accounts.operator.provision_customer", {
            "customer_number": number, "name": f"Customer {number}", "contracts": [{
                "contract_number": contract, "type": "page_price", "start_date": "2025-01-01",
                "end_date": "2025-12-31", "billing_period": "quarterly", "includes_consumables": True}]},
            token=operator)
    mine, _ = token_for(settings, customer_number="C-1")
    contracts = (await portal.call("accounts.list_contracts", {}, token=mine))["items"]
    assert contracts == [{"contract_number": "K-1", "type": "page_price", "start_date": "2025-01-01",
                          "end_date": "2025-12-31", "billing_period": "quarterly", "includes_consumables": True,
                          "term_months": 12}]


async def test_provisioning_is_an_upsert_that_can_be_rerun(accounts: ServiceInstance, portal: PortalClient,
                                                           settings: Settings, tap: EventTap) -> None:
    operator = operator_token(settings)
    body = {"customer_number": "C-9", "name": "Nine", "contracts": [
        {"contract_number": "K-9", "type": "service", "start_date": "2025-01-01"}]}
    await portal.call("accounts.operator.provision_customer", body, token=operator)
    await portal.call("accounts.operator.provision_customer", {**body, "name": "Nine AS"}, token=operator)
    assert await accounts.db.customers.count_documents({}) == 1
    customer = await accounts.db.customers.find_one({"_id": "C-9"})
    assert customer is not None and customer["name"] == "Nine AS"
    await tap.next("accounts.customer.provisioned", lambda body: body["customer_name"] == "Nine AS")


def nine(number: int) -> dict[str, object]:
    """A provisioning of customer C-9 that names its number in the name and in its one contract."""
    return {"customer_number": "C-9", "name": f"Nine {number}", "contracts": [
        {"contract_number": f"K-{number}", "type": "service", "start_date": "2025-01-01"}]}


async def test_each_provisioning_of_a_customer_is_announced_with_the_next_version(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings, tap: EventTap) -> None:
    operator = operator_token(settings)
    await portal.call("accounts.operator.provision_customer", nine(1), token=operator)
    await portal.call("accounts.operator.provision_customer", nine(2), token=operator)
    await tap.next("accounts.customer.provisioned", lambda body: body["version"] == 2)
    assert [(body["customer_name"], body["version"]) for body in tap.named("accounts.customer.provisioned")] == [
        ("Nine 1", 1), ("Nine 2", 2)]
    stored = await accounts.db.customers.find_one({"_id": "C-9"})
    assert stored is not None and stored["version"] == 2


async def test_concurrent_provisionings_get_distinct_versions_and_the_highest_is_the_stored_customer(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings, tap: EventTap) -> None:
    operator = operator_token(settings)
    await asyncio.gather(*(portal.call("accounts.operator.provision_customer", nine(number), token=operator)
                           for number in range(6)))

    async def all_announced() -> bool:
        return len(tap.named("accounts.customer.provisioned")) >= 6
    await eventually(all_announced)
    events = tap.named("accounts.customer.provisioned")
    assert sorted(body["version"] for body in events) == [1, 2, 3, 4, 5, 6]
    last = max(events, key=lambda body: body["version"])
    listed = (await portal.call("accounts.list_contracts", {}, token=token_for(settings, customer_number="C-9")[0]))
    assert [{key: value for key, value in item.items() if key != "term_months"} for item in listed["items"]] == \
        last["contracts"]
    stored = await accounts.db.customers.find_one({"_id": "C-9"})
    assert stored is not None and (stored["name"], stored["version"]) == (last["customer_name"], 6)


async def test_a_customer_provisioned_before_versions_existed_gets_version_1(
        accounts: ServiceInstance, portal: PortalClient, settings: Settings, tap: EventTap) -> None:
    await accounts.db.customers.insert_one({"_id": "C-9", "name": "Nine", "contracts": {}})
    await portal.call("accounts.operator.provision_customer", nine(1), token=operator_token(settings))
    event = await tap.next("accounts.customer.provisioned")
    assert (event["customer_name"], event["version"]) == ("Nine 1", 1)
    assert await accounts.db.customers.count_documents({}) == 1


async def test_a_contract_ending_before_it_starts_is_refused(accounts: ServiceInstance, portal: PortalClient,
                                                             settings: Settings) -> None:
    operator = operator_token(settings)
    try:
        await portal.call("accounts.operator.provision_customer", {
            "customer_number": "C-9", "name": "Nine", "contracts": [
            {"contract_number": "K-9", "type": "x", "start_date": "2025-01-01", "end_date": "2024-01-01"}]},
            token=operator)
    except PortalError as error:
        assert error.code == "validation_failed" and "contracts.0" in error.fields
    else:
        raise AssertionError("accepted a contract that ends before it starts")
