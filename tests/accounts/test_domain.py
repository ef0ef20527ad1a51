"""Pure rules of accounts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.accounts import domain


@pytest.mark.parametrize(("password", "problem"), [
    ("correct horse battery", None), ("short", "weak_password"), ("123456789", "weak_password"),
    ("XXjdoeXX-long", "weak_password"), ("janedoe-is-me", "weak_password"), ("ten chars!", None),
])
def test_a_password_is_at_least_10_characters_and_holds_neither_username_nor_email_name(
        password: str, problem: str | None) -> None:
    assert domain.password_problem(password, password, username="JDoe", email="janedoe@example.com") == problem


def test_the_fifth_attempt_of_a_window_is_still_checked_and_the_sixth_is_refused_unchecked() -> None:
    now = datetime.now(UTC)
    assert not domain.Attempt(5, None).refused(now)
    assert domain.Attempt(5, None).locks_on_failure()
    assert not domain.Attempt(4, None).locks_on_failure()
    assert domain.Attempt(6, None).refused(now)


def test_a_lock_refuses_until_it_ends() -> None:
    now = datetime.now(UTC)
    locked = domain.Attempt(1, now + timedelta(minutes=15))
    assert locked.refused(now + timedelta(minutes=14))
    assert not locked.refused(now + timedelta(minutes=15, seconds=1))


@pytest.mark.parametrize(("start", "end", "in_force"), [
    (date(2026, 1, 1), date(2026, 12, 31), True), (date(2026, 1, 1), None, True),
    (date(2026, 1, 1), date(2026, 6, 30), False), (date(2026, 7, 2), None, False),
    (date(2026, 7, 1), date(2026, 7, 1), True)])
def test_a_contract_is_in_force_from_its_start_to_its_end_day_inclusive(start: date, end: date | None,
                                                                        in_force: bool) -> None:
    assert domain.contract_in_force(start, end, date(2026, 7, 1)) is in_force


def test_one_time_tokens_carry_at_least_128_random_bits_and_only_their_digest_is_kept() -> None:
    now = datetime.now(UTC)
    first, second = domain.new_token(now, timedelta(hours=1)), domain.new_token(now, timedelta(hours=1))
    assert first.token != second.token and len(first.token) >= 22
    assert first.digest == domain.token_digest(first.token) and first.token not in first.digest


@pytest.mark.parametrize(("role", "requested", "matches", "status"), [
    ("customer", None, False, "active"), ("customer", "C-1", True, "active"),
    ("customer", "C-1", False, "pending_verification"), ("dealer", None, False, "pending_verification"),
])
def test_who_waits_for_an_operator(role: str, requested: str | None, matches: bool, status: str) -> None:
    assert domain.status_after_confirmation(role=role, requested_customer=requested, serial_matches=matches) == status


@pytest.mark.parametrize(("start", "end", "months"), [
    (date(2024, 1, 1), date(2026, 12, 31), 36), (date(2025, 1, 15), date(2026, 1, 14), 12), (date(2025, 1, 1), None,
                                                                                            None)])
def test_term_months(start: date, end: date | None, months: int | None) -> None:
    assert domain.term_months(start, end) == months
