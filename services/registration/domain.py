"""Pure rules of registration: serials, models, warranty, proof of purchase."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import filetype

from contracts.registration import ProductModel, Warranty
from contracts.registration import normalise_serial as normalise_serial  # callers name it domain.normalise_serial

BASE_WARRANTY_MONTHS = 12
EXTENDED_WARRANTY_MONTHS = 36  # OKI: registered within 30 days of purchase, 24 months more
EXTENSION_WINDOW_DAYS = 30
MAX_PROOF_BYTES = 5 * 1024 * 1024  # OKI: "Max size: 5MB"
PROOF_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "application/pdf"})


def pattern_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as error:
        return f"not a regular expression: {error}"
    return None


def model_for_serial(models: Iterable[ProductModel], serial: str) -> ProductModel | None:
    for model in models:
        if re.fullmatch(model.serial_pattern, serial, flags=re.IGNORECASE):
            return model
    return None


def add_months(start: date, months: int) -> date:
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def warranty_for(purchase_date: date, registered_on: date) -> Warranty:
    """12 months from purchase; 36 when registered within 30 days of it (OKI warranty statement 1.2)."""
    extended = (registered_on - purchase_date).days <= EXTENSION_WINDOW_DAYS
    months = EXTENDED_WARRANTY_MONTHS if extended else BASE_WARRANTY_MONTHS
    return Warranty(start_date=purchase_date, end_date=add_months(purchase_date, months), months=months,
                    extended=extended)


@dataclass(frozen=True)
class ProofCheck:
    problem: str | None
    content_type: str | None = None


def check_proof(content: bytes) -> ProofCheck:
    """At most 5 MB and a JPEG, PNG, GIF or PDF by its bytes, whatever its name or declared type."""
    if len(content) > MAX_PROOF_BYTES:
        return ProofCheck("file_too_large")
    kind = filetype.guess(content)
    if kind is None or kind.mime not in PROOF_TYPES:
        return ProofCheck("file_type_not_allowed")
    return ProofCheck(None, kind.mime)
