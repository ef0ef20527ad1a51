"""An operator's upload of the catalogue, consumables or installed base: a csv or xlsx file to rows of text by column
name, and those rows to the items of the operator commands that take lists (`registration.operator.upsert_models`,
`ordering.operator.upsert_consumables`, `registration.operator.import_installed_base`). Pure functions.

Beside the contracts because the gateway's back office (`/office/uploads`) and the operators' CLI
(`portal-admin load ...`) both read these files, and both send what they read as those commands.
An xlsx is checked as the services check theirs (`contracts.spreadsheets`): the package's sizes and parts before
openpyxl reads a byte of XML, which it then reads through defusedxml.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]

from contracts.spreadsheets import Unreadable as SpreadsheetUnreadable
from contracts.spreadsheets import inspect_package, max_part_bytes, sheet_values

MAX_ROWS = 2000
# The rows of an xlsx looked at, empty ones included: a sheet formatted far below its last row (as Excel files often
# are) has rows that hold nothing, which do not count as rows but take time to read. The sheet's part is bounded
# by `max_part_bytes(MAX_ROWS)` too, which holds about 100,000 such rows.
MAX_SCANNED_ROWS = 50_000
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_UNPACKED_BYTES = 30 * 1024 * 1024
TRUE = {"1", "true", "yes", "y", "x", "ja", "j"}
COUNTER = re.compile(r"^\s*([^\s=:]+)\s*[=:]\s*(\d{1,13})\s*$")


# The columns each kind of file holds, by the name of its kind (the back office's and the CLI's).
COLUMNS = {
    "models": "model, article_number, serial_pattern, counters, serial_hint",
    "consumables": "model, article_number, description, kind, color, included_in_contract",
    "installed_base": "serial_number, model, customer_number, contract_number, location_name, street, postal_code, "
                      "city, country, building_location, counters, counters_date, e_maintenance"}
COLUMN_NAMES = {kind: frozenset(name.strip() for name in names.split(",")) for kind, names in COLUMNS.items()}


class Unreadable(Exception):
    """Not a csv or xlsx file this reader takes, or larger than it takes."""


class UnknownColumns(Unreadable):
    """Columns the kind of file does not have (`E-Maintenance` for `e_maintenance`): refused rather than dropped, since
    a column dropped is a value every row leaves at its default without a word."""

    def __init__(self, columns: list[str]) -> None:
        super().__init__("unknown columns: " + ", ".join(columns))
        self.columns = columns  # as the file writes them


class RepeatedColumns(Unreadable):
    """A column name the first line gives twice (`model` and `Model`): refused, since one column's values would
    replace the other's without a word."""

    def __init__(self, columns: list[str]) -> None:
        super().__init__("columns named twice: " + ", ".join(columns))
        self.columns = columns  # as the file writes them, the second time


class UnnamedColumns(Unreadable):
    """Values in a column the first line gives no name (its cell there empty, or past the last name): refused as an
    unknown column is, since they would be dropped without a word."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__("values in columns without a name: " + ", ".join(f"column {at}" for at in positions))
        self.positions = positions  # counted from 1, as a spreadsheet program's A, B, C are


def numbered_rows(filename: str, content: bytes, kind: str | None = None) -> list[tuple[int, dict[str, str]]]:
    """The rows under the first line's column names (lower case, blanks as `_`), empty rows left out, each with its
    line in the file (the column names being line 1), as a person finds it in their spreadsheet program. With the
    `kind` of file (a key of `COLUMNS`), a column it does not have is refused: `UnknownColumns`. Values in a column
    without a name are refused whatever the kind: `UnnamedColumns`."""
    if len(content) > MAX_FILE_BYTES:
        raise Unreadable("too large")
    if content[:4] == b"PK\x03\x04" or filename.lower().endswith(".xlsx"):
        table = xlsx_table(content)
    else:
        table = csv_table(content)
    if not table:
        raise Unreadable("empty")
    written = [str(cell or "").strip() for cell in table[0]]
    header = [name.lower().replace(" ", "_") for name in written]
    repeated = [text for at, (text, name) in enumerate(zip(written, header, strict=True))
                if name and name in header[:at]]
    if repeated:
        raise RepeatedColumns(repeated)
    if kind is not None:
        unknown = [text for text, name in zip(written, header, strict=True) if name and name not in COLUMN_NAMES[kind]]
        if unknown:
            raise UnknownColumns(unknown)
    unnamed = sorted({at for cells in table[1:] for at, value in enumerate(cells, start=1)
                      if value.strip() and (at > len(header) or not header[at - 1])})
    if unnamed:
        raise UnnamedColumns(unnamed)
    rows = [(line, {name: value for name, value in zip(header, cells, strict=False) if name})
            for line, cells in enumerate(table[1:], start=2) if any(value.strip() for value in cells)]
    if len(rows) > MAX_ROWS:
        raise Unreadable("too many rows")
    return rows


def csv_table(content: bytes) -> list[list[str]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("cp1252", errors="replace")  # Excel's csv in western Europe
    # Only the delimiter is guessed: the Sniffer's other guesses come from its sample alone (`doublequote` is False
    # unless the sample shows a doubled quote), while Excel writes every csv with `"` doubled inside a field.
    try:
        delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    table: list[list[str]] = []
    reader = csv.reader(io.StringIO(text), csv.excel, delimiter=delimiter)
    try:
        for record in reader:
            table.append([cell.strip() for cell in record])
            # A cell holding a line break (Alt+Enter in Excel) spans lines: the rows after it keep their lines.
            table.extend([] for _ in range(reader.line_num - len(table)))
    except csv.Error as error:  # a field past the csv module's limit (128 KiB), a NUL byte
        raise Unreadable("not_a_spreadsheet") from error
    return table


def xlsx_table(content: bytes) -> list[list[str]]:
    refusal = inspect_package(content, max_uncompressed=MAX_UNPACKED_BYTES, max_part=max_part_bytes(MAX_ROWS))
    if refusal is not None:
        raise Unreadable(refusal.reason)
    try:
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as error:  # openpyxl's errors have no common base
        raise Unreadable("not_a_spreadsheet") from error
    try:
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # the stated dimensions are the file's word, not a bound
        table: list[list[str]] = []
        filled = 0  # the rows that hold something, the column names' included
        for scanned, line in enumerate(sheet_values(sheet), start=1):
            cells = [text_of(cell) for cell in line]
            if any(cells):
                filled += 1
                table.append(cells)
            else:
                table.append([])  # keeps the lines of the rows after it; left out as rows
            if filled > MAX_ROWS + 1 or scanned > MAX_SCANNED_ROWS:
                raise Unreadable("too many rows")
        return table
    except SpreadsheetUnreadable as error:
        raise Unreadable("not_a_spreadsheet") from error
    finally:
        book.close()


def text_of(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, datetime):
        return cell.date().isoformat()
    if isinstance(cell, date):
        return cell.isoformat()
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


def optional(row: dict[str, str], name: str) -> str | None:
    return row.get(name, "").strip() or None


def flag(row: dict[str, str], name: str) -> bool | None:
    value = row.get(name, "").strip().lower()
    return None if not value else value in TRUE


def model_of(row: dict[str, str]) -> dict[str, Any]:
    """`model`, `article_number`, `serial_pattern`, `counters` (`mono color`, or with commas), `serial_hint`."""
    return {"model": row.get("model", ""), "article_number": row.get("article_number", ""),
            "serial_pattern": row.get("serial_pattern", ""),
            "counters": [name for name in re.split(r"[\s,;|]+", row.get("counters", "")) if name],
            "serial_hint": optional(row, "serial_hint")}


def consumable_of(row: dict[str, str]) -> dict[str, Any]:
    """`model` (whose list it joins), `article_number`, `description`, `kind`, `color`, `included_in_contract`."""
    item: dict[str, Any] = {"article_number": row.get("article_number", ""), "description": row.get("description", ""),
                            "kind": row.get("kind", "").strip().lower(), "color": optional(row, "color")}
    included = flag(row, "included_in_contract")
    if included is not None:
        item["included_in_contract"] = included
    return item


def installed_device_of(row: dict[str, str]) -> dict[str, Any]:
    """`serial_number`, `model`, `customer_number`, `contract_number`, the location (`location_name`, `street`,
    `postal_code`, `city`, `country`, `building_location`), `counters` (`mono=12000, color=3400`) read on
    `counters_date`, `e_maintenance`."""
    device: dict[str, Any] = {
        "serial_number": row.get("serial_number", ""), "model": row.get("model", ""),
        "customer_number": row.get("customer_number", ""), "contract_number": optional(row, "contract_number"),
        "location": {"name": optional(row, "location_name"), "street": optional(row, "street"),
                     "postal_code": optional(row, "postal_code"), "city": optional(row, "city"),
                     "country": optional(row, "country"), "building_location": optional(row, "building_location")},
        "e_maintenance": bool(flag(row, "e_maintenance"))}
    counters = [part for part in re.split(r"[,;]", row.get("counters", "")) if part.strip()]
    found = [COUNTER.match(part) for part in counters]
    device["counters"] = [{"name": match.group(1), "value": int(match.group(2)), "date": row.get("counters_date", "")}
                          if match else {"name": part} for match, part in zip(found, counters, strict=True)]
    return device
