"""The pure rules of an order: what makes two locations one delivery address, coverage, order numbers."""

from __future__ import annotations

from datetime import date

import pytest

from contracts.ordering import model_key
from services.ordering.orders import address_key, covered, order_number

HANSAALLEE = {"name": "Büro", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf"}


@pytest.mark.parametrize("other", [
    {"name": "Kundenbüro", "street": "Hansaallee 187", "postal_code": "40549", "city": "Düsseldorf"},
    {"street": "  hansaallee   187 ", "postal_code": "40549 ", "city": "DÜSSELDORF", "building_location": "3. OG"},
    {"street": "Hansaallee 187.", "postal_code": "40 549", "city": "düsseldorf"},
])
def test_spelling_aside_the_same_street_postcode_and_city_are_one_address(other: dict[str, str]) -> None:
    assert address_key(other) == address_key(HANSAALLEE)


@pytest.mark.parametrize("street", ["Hauptstr. 5", "Hauptstraße 5", "Hauptstrasse 5", "HAUPTSTR 5"])
def test_street_abbreviations_and_sharp_s_are_one_street(street: str) -> None:
    assert address_key({"street": street, "postal_code": "1", "city": "X"}) == \
        address_key({"street": "Hauptstraße 5", "postal_code": "1", "city": "X"})


@pytest.mark.parametrize("other", [
    {"street": "Hansaallee 189", "postal_code": "40549", "city": "Düsseldorf"},
    {"street": "Hansaallee 187", "postal_code": "40547", "city": "Düsseldorf"},
    {"street": "Hansaallee 187", "postal_code": "40549", "city": "Duisburg"},
])
def test_another_house_number_postcode_or_city_is_another_address(other: dict[str, str]) -> None:
    assert address_key(other) != address_key(HANSAALLEE)


def terms(**fields: object) -> dict[str, object]:
    return {"contract_number": "K-1", "start_date": "2026-01-01", "end_date": "2026-12-31",
            "includes_consumables": True, **fields}


def contract(**fields: object) -> dict[str, object]:
    return {"contracts": {"K-1": terms(**fields)}}


DEVICE = {"contract_number": "K-1"}


@pytest.mark.parametrize(("customer", "day", "expected"), [
    (contract(), date(2026, 6, 1), True),
    (contract(), date(2026, 1, 1), True),  # its first day
    (contract(), date(2026, 12, 31), True),  # its end date is its last day
    (contract(), date(2027, 1, 1), False),  # ended
    (contract(), date(2025, 12, 31), False),  # not begun
    (contract(end_date=None), date(2040, 1, 1), True),  # no end
    (contract(includes_consumables=False), date(2026, 6, 1), False),
    (contract(includes_consumables=1), date(2026, 6, 1), True),  # a boolean as nx-27017 reads it back
    ({"contracts": {"K-2": terms()}}, date(2026, 6, 1), False),  # another contract
    (None, date(2026, 6, 1), False),  # the customer's contracts not known yet
])
def test_a_device_is_covered_by_a_running_contract_that_includes_consumables(
        customer: dict[str, object] | None, day: date, expected: bool) -> None:
    assert covered(DEVICE, customer, day) is expected


def test_a_device_without_a_contract_is_never_covered() -> None:
    assert covered({"contract_number": None}, contract(), date(2026, 6, 1)) is False


def test_order_numbers_are_readable_and_sort_by_year_and_sequence() -> None:
    assert order_number("OR", 2026, 42) == "OR-2026-000042"
    assert order_number("OR", 2026, 9) < order_number("OR", 2026, 10) < order_number("OR", 2027, 1)


def test_a_model_is_one_catalogue_entry_whatever_its_case_and_spacing() -> None:
    assert model_key(" es5462  MFP") == model_key("ES5462 MFP")

