"""Adversarial review of the ticket mails: each test here failed against 833f87b."""

from __future__ import annotations

from icalendar import Calendar

from services.notifier.settings import NotifierSettings
from services.notifier.tickets import visit_calendar
from tests.notifier.test_ticket_mails import ETA, dispatched

# --- D5 (low): METHOD:PUBLISH without ORGANIZER ----------------------------------------------------------------

def test_a_published_visit_names_its_organizer() -> None:
    # RFC 5546 §3.2.1: a VEVENT published with METHOD:PUBLISH has exactly one ORGANIZER.
    settings = NotifierSettings(public_url="https://portal.vendor.example/")
    calendar = Calendar.from_ical(visit_calendar(dispatched("c@example.com", number="1484049/1"), eta=ETA,
                                                 language="en", settings=settings))
    [visit] = calendar.walk("VEVENT")
    assert "ORGANIZER" in visit
