"""The pure rules of a ticket: its number, its life cycle, the order of its history and notes, a change sent
again."""

from __future__ import annotations

import pytest

from contracts.ticketing import OPEN_STATUSES, TRANSITIONS
from services.ticketing.tickets import allowed, guard_number, history_of, is_open, notes_of, same_change, ticket_number


def test_a_ticket_number_is_the_project_number_and_the_devices_nth_ticket() -> None:
    assert ticket_number(1484049, 1) == "1484049/1"
    assert guard_number({"seq": 1000007, "count": 3, "ticket_id": "t-1"}) == "1000007/3"


@pytest.mark.parametrize(("current", "asked", "expected"), [
    ("to_be_scheduled", "dispatched", True), ("to_be_scheduled", "cancelled", True),
    ("to_be_scheduled", "en_route", False), ("dispatched", "cancelled", True), ("en_route", "cancelled", False),
    ("on_site", "resolved", True), ("resolved", "closed", True), ("closed", "to_be_scheduled", False),
    ("cancelled", "to_be_scheduled", False), ("dispatched", "dispatched", False),
])
def test_the_operator_may_skip_no_step_and_cancel_only_before_the_technician_is_on_the_way(
        current: str, asked: str, expected: bool) -> None:
    assert allowed(current, asked) is expected


def test_a_ticket_holds_its_device_until_it_is_resolved_or_cancelled() -> None:
    assert [status for status in TRANSITIONS if is_open(status)] == list(OPEN_STATUSES) == [
        "to_be_scheduled", "dispatched", "en_route", "on_site"]


def test_history_and_notes_read_oldest_first_whatever_order_the_map_keeps() -> None:
    ticket = {
        "history": {"c": {"status": "en_route", "at": "2026-12-04T08:00:00.000000Z", "sequence": 2},
                    "a": {"status": "to_be_scheduled", "at": "2026-12-03T08:00:00.000000Z", "sequence": 0},
                    "b": {"status": "dispatched", "at": "2026-12-03T09:00:00.000000Z", "sequence": 1}},
        "notes": {"z": {"text": "first", "at": "2026-12-03T08:30:00.000000Z"},
                  "y": {"text": "second", "at": "2026-12-03T08:31:00.000000Z"}},
    }
    assert [entry["status"] for entry in history_of(ticket)] == ["to_be_scheduled", "dispatched", "en_route"]
    assert [note["text"] for note in notes_of(ticket)] == ["first", "second"]
    assert history_of({}) == [] and notes_of({"notes": None}) == []


def test_a_change_sent_again_is_the_latest_one_only_with_the_same_note_technician_and_eta_where_given() -> None:
    latest = {"status": "dispatched", "technician": "Kari", "eta": "2026-12-04T08:30:00.000000Z", "note": "n"}
    assert same_change(latest, technician="Kari", eta="2026-12-04T08:30:00.000000Z", note="n")
    assert same_change(latest, technician=None, eta=None, note="n")  # kept from before
    assert not same_change(latest, technician="Ola", eta=None, note="n")
    assert not same_change(latest, technician=None, eta="2026-12-05T08:30:00.000000Z", note="n")
    assert not same_change(latest, technician="Kari", eta=None, note=None)
    assert not same_change(None, technician=None, eta=None, note=None)
