"""Billing periods and reading windows (pure logic): calendar quarters, month ends, leap years, year ends."""

from __future__ import annotations

from datetime import date

import pytest

from services.metering import periods
from services.metering.reminders import schedule


@pytest.mark.parametrize(("day", "billing", "end"), [
    (date(2026, 2, 14), "quarterly", date(2026, 3, 31)),
    (date(2026, 4, 1), "quarterly", date(2026, 6, 30)),
    (date(2026, 9, 30), "quarterly", date(2026, 9, 30)),
    (date(2026, 12, 31), "quarterly", date(2026, 12, 31)),
    (date(2024, 2, 10), "monthly", date(2024, 2, 29)),
    (date(2025, 2, 10), "monthly", date(2025, 2, 28)),
    (date(2026, 5, 1), "semiannual", date(2026, 6, 30)),
    (date(2026, 7, 1), "semiannual", date(2026, 12, 31)),
    (date(2026, 1, 1), "annual", date(2026, 12, 31)),
])
def test_a_period_ends_at_the_end_of_its_month_quarter_half_or_year(day: date, billing: periods.BillingPeriod,
                                                                     end: date) -> None:
    assert periods.period_end(day, billing) == end


def test_the_window_opens_7_days_before_the_period_end_and_closes_10_days_after() -> None:
    window = periods.Window(date(2026, 12, 31))
    assert (window.opens, window.closes, window.second_reminder) == (date(2026, 12, 24), date(2027, 1, 10),
                                                                    date(2027, 1, 3))
    assert periods.window_on(date(2026, 12, 23), "quarterly") is None
    assert periods.window_on(date(2026, 12, 24), "quarterly") == window
    assert periods.window_on(date(2027, 1, 10), "quarterly") == window
    assert periods.window_on(date(2027, 1, 11), "quarterly") is None


def test_a_reading_early_in_january_counts_for_the_last_quarter_of_the_year_before() -> None:
    assert periods.counts_for(date(2027, 1, 5), "quarterly") == date(2026, 12, 31)
    assert periods.counts_for(date(2027, 1, 11), "quarterly") == date(2027, 3, 31)
    assert periods.counts_for(date(2015, 3, 25), "quarterly") == date(2015, 3, 31)


def test_the_window_of_a_leap_february_spans_its_29th() -> None:
    assert periods.window_on(date(2024, 2, 22), "monthly") == periods.Window(date(2024, 2, 29))
    assert periods.window_on(date(2024, 3, 10), "monthly") == periods.Window(date(2024, 2, 29))
    assert periods.counts_for(date(2024, 3, 11), "monthly") == date(2024, 3, 31)
    assert periods.window_on(date(2024, 2, 21), "monthly") is None


def test_annual_and_monthly_contracts_have_their_own_schedule() -> None:
    reminders, _ = schedule(date(2026, 12, 24))
    assert {(due.billing, due.window.period_end, due.kind) for due in reminders} == {
        ("monthly", date(2026, 12, 31), "opening"), ("quarterly", date(2026, 12, 31), "opening"),
        ("semiannual", date(2026, 12, 31), "opening"), ("annual", date(2026, 12, 31), "opening")}
    reminders, overdue = schedule(date(2026, 5, 3))
    assert {(due.billing, due.window.period_end, due.kind) for due in reminders} == {
        ("monthly", date(2026, 4, 30), "second")}
    assert periods.closed_window_before(date(2026, 5, 3), "monthly") == periods.Window(date(2026, 3, 31))


def test_overdue_devices_are_looked_for_in_the_week_after_a_window_closed() -> None:
    _, overdue = schedule(date(2027, 1, 11))
    assert ("quarterly", periods.Window(date(2026, 12, 31))) in overdue
    _, overdue = schedule(date(2027, 1, 19))
    assert ("quarterly", periods.Window(date(2026, 12, 31))) not in overdue
