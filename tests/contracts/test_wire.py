"""Pure rules of the wire: language negotiation, error messages, typed client errors, files, pages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts.base import FileObject, PageRequest
from contracts.client import Forbidden, PortalError, ValidationFailed, error_from
from contracts.errors import MESSAGES, ErrorCode, message_for, negotiate_language


@pytest.mark.parametrize(("header", "language"), [
    (None, "en"), ("", "en"), ("de", "de"), ("de-AT,de;q=0.9", "de"), ("nb-NO", "nb"), ("no", "nb"),
    ("nn", "nb"), ("fr-FR,de;q=0.5", "de"), ("fr", "en"), ("EN-us", "en"),
])
def test_the_first_supported_language_is_chosen_with_english_as_fallback(header: str | None, language: str) -> None:
    assert negotiate_language(header) == language


def test_every_generic_error_code_has_a_message_in_every_language() -> None:
    for code in ErrorCode:
        assert set(MESSAGES[code]) == {"en", "de", "nb"}
        assert message_for(code, "xx") == MESSAGES[code]["en"]


def test_a_refusal_becomes_the_typed_error_of_its_code() -> None:
    assert isinstance(error_from({"code": "forbidden"}), Forbidden)
    refused = error_from({"code": "validation_failed", "message": "m", "fields": {"a.b": "bad"}})
    assert isinstance(refused, ValidationFailed) and refused.fields == {"a.b": "bad"}
    specific = error_from({"code": "email_taken"})
    assert type(specific) is PortalError and specific.code == "email_taken"


def test_a_file_object_carries_bytes_in_base64() -> None:
    file = FileObject.from_bytes("r.pdf", "application/pdf", b"%PDF-1.7 \x00\xff")
    assert file.content() == b"%PDF-1.7 \x00\xff"


def test_a_page_holds_at_most_200_items() -> None:
    assert PageRequest().page_size == 50
    with pytest.raises(ValidationError):
        PageRequest(page_size=201)
    with pytest.raises(ValidationError):
        PageRequest(page=0)
