"""Every error code a service raises has a message in every language (CATALOG §1–§3), not just a generated fallback."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import get_args

import pytest

from contracts.errors import LANGUAGES, MESSAGES, SERVICE_CODES, ErrorCode, message_for
from services.registration.excel import FailureReason

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
# `CommandError("code"` and the other places a literal code is born: a bulk row problem, a file's failure reason,
# a proof-of-purchase check.
LITERAL_CODE = re.compile(r'\b(?:CommandError|RowProblem|BulkFailure|ProofCheck|rejected)\(\s*"([a-z_]+)"')
# Codes that reach `CommandError` through a variable, so the pattern above cannot see them.
INDIRECT_CODES = {
    "password_mismatch", "weak_password",  # accounts.domain.password_problem
    "email_taken", "username_taken",  # accounts.store.taken
    "serial_or_postcode_mismatch",  # registration.requests.MISMATCH
}


def raised_codes() -> set[str]:
    codes: set[str] = set()
    for path in SERVICES_DIR.rglob("*.py"):
        codes.update(LITERAL_CODE.findall(path.read_text(encoding="utf-8")))
    return codes


def declared_codes() -> list[str]:
    enums: tuple[type[StrEnum], ...] = (ErrorCode, *SERVICE_CODES)
    return [code.value for enum in enums for code in enum]


def test_the_scan_finds_the_services_codes() -> None:
    codes = raised_codes()
    assert {"invalid_credentials", "account_locked", "unknown_serial", "file_type_not_allowed", "too_many_rows",
            "duplicate_serial"} <= codes


@pytest.mark.parametrize("code", sorted(raised_codes() | INDIRECT_CODES | set(get_args(FailureReason))))
def test_every_code_a_service_uses_has_a_message_in_every_language(code: str) -> None:
    assert code in MESSAGES, f"`{code}` has no entry in contracts/errors.py MESSAGES"
    for language in LANGUAGES:
        assert MESSAGES[code].get(language, "").strip(), f"`{code}` has no {language} message"


@pytest.mark.parametrize("code", declared_codes())
def test_every_declared_code_has_a_message_in_every_language(code: str) -> None:
    assert set(MESSAGES.get(code, {})) == set(LANGUAGES)


@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_translations_are_not_copies_of_the_english_text(code: str) -> None:
    texts = MESSAGES[code]
    assert texts["de"] != texts["en"], f"`{code}`: the German text is the English one"
    assert texts["nb"] != texts["en"], f"`{code}`: the Norwegian text is the English one"
    assert texts["de"] != texts["nb"], f"`{code}`: the German and Norwegian texts are the same"


def test_codes_are_declared_once() -> None:
    declared = declared_codes()
    assert len(declared) == len(set(declared))


def test_message_for_answers_in_the_requested_language() -> None:
    assert message_for("account_locked", "nb") == MESSAGES["account_locked"]["nb"]
    assert "15 minutter" in message_for("account_locked", "nb")
    assert message_for("account_locked", "fr") == MESSAGES["account_locked"]["en"]
