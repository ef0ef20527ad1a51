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


def test_lockout_comes_with_the_fifth_failure_in_the_window() -> None:
    now = datetime.now(UTC)
    failures = domain.Failures(0, None, None)
    for minute in range(4):
        failures = failures.after_failure(now + timedelta(minutes=minute))
        assert not failures.locked(now + timedelta(minutes=minute))
    failures = failures.after_failure(now + timedelta(minutes=14))
    assert failures.locked(now + timedelta(minutes=14))
    assert not failures.locked(now + timedelta(minutes=29, seconds=1))


def test_a_failure_after_the_window_starts_a_new_count() -> None:
    now = datetime.now(UTC)
    failures = domain.Failures(4, now - timedelta(minutes=16), None).after_failure(now)
    assert (failures.count, failures.window_start, failures.locked_until) == (1, now, None)


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
