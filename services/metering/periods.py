"""Billing periods and their reading windows, as pure functions of dates.

Periods follow the contract's billing period and the calendar (CATALOG §4, the OKI seed: quarterly readings at
the end of March, June, September and December). A reading window opens 7 days before a period ends and closes 10
days after; a reading dated in the window counts for that period. Windows never overlap (the shortest period is 28
days, a window spans 18), so each date belongs to at most one window.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, Literal

BillingPeriod = Literal["monthly", "quarterly", "semiannual", "annual"]

MONTHS: Final[dict[str, int]] = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}
OPENS_BEFORE_END: Final = timedelta(days=7)
CLOSES_AFTER_END: Final = timedelta(days=10)
SECOND_REMINDER_AFTER_END: Final = timedelta(days=3)
# Devices without a known contract: the seeds' page-price contracts are read quarterly.
DEFAULT_PERIOD: Final[BillingPeriod] = "quarterly"


def period_end(day: date, billing: BillingPeriod) -> date:
    """The last day of the period `day` lies in."""
    months = MONTHS[billing]
    last_month = ((day.month - 1) // months + 1) * months
    return date(day.year, last_month, calendar.monthrange(day.year, last_month)[1])


def previous_end(end: date, billing: BillingPeriod) -> date:
    """The last day of the period before the one ending on `end`."""
    months = MONTHS[billing]
    first_month = end.month - months + 1
    return date(end.year, first_month, 1) - timedelta(days=1)


def next_end(end: date, billing: BillingPeriod) -> date:
    return period_end(end + timedelta(days=1), billing)


@dataclass(frozen=True)
class Window:
    period_end: date

    @property
    def opens(self) -> date:
        return self.period_end - OPENS_BEFORE_END

    @property
    def closes(self) -> date:
        """The last day a reading counts for the period."""
        return self.period_end + CLOSES_AFTER_END

    @property
    def second_reminder(self) -> date:
        return self.period_end + SECOND_REMINDER_AFTER_END

    def __contains__(self, day: date) -> bool:
        return self.opens <= day <= self.closes


def window_on(day: date, billing: BillingPeriod) -> Window | None:
    """The window open on `day`, if any: of the period `day` ends, or of the one before (closing after its end)."""
    for end in (period_end(day, billing), previous_end(period_end(day, billing), billing)):
        if day in Window(end):
            return Window(end)
    return None


def counts_for(day: date, billing: BillingPeriod) -> date:
    """The period a reading dated `day` counts for: the one whose window holds the day, else the one it lies in.

    A reading a few days into April still closes the first quarter; one in mid-February is an interim reading of
    the first quarter.
    """
    window = window_on(day, billing)
    return window.period_end if window else period_end(day, billing)


def closed_window_before(day: date, billing: BillingPeriod) -> Window:
    """The most recent window that closed before `day`."""
    end = previous_end(period_end(day, billing), billing)
    while Window(end).closes >= day:
        end = previous_end(end, billing)
    return Window(end)
