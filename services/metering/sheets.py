"""metering's files: readings sheets (xlsx or csv) read row by row, and the usage workbook with its chart.

Pure functions, no I/O: the handlers call them through `asyncio.to_thread`. A readings file is checked before it is
parsed (size, then the xlsx package, see `contracts/spreadsheets.py`) and streamed, so a 10,000-row file
costs little more than the file itself; rows are kept as small tuples.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

import openpyxl  # type: ignore[import-untyped, unused-ignore]
from openpyxl.chart import BarChart, Reference  # type: ignore[import-untyped, unused-ignore]

from contracts.metering import MAX_COUNTER, READING_SHEET_COLUMNS, READING_SHEET_NAME, UsageRow
from contracts.spreadsheets import (
    EXCEL_MAX_ROWS,
    MAX_COLUMNS,
    MAX_UNCOMPRESSED_BYTES,
    Unreadable,
    inspect_package,
    max_part_bytes,
    read_value,
    safe_text,
    saved,
    sheet_values,
)

XLSX: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
REQUIRED: Final = ("serial_number", "counter", "value")
ZIP_MAGIC: Final = b"PK\x03\x04"
GERMAN_DATE: Final = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")


@dataclass(frozen=True, slots=True)
class SheetRow:
    number: int  # the sheet's row number (the header is row 1), or the list's index + 1
    key: str  # the serial number as given (or the device id, for the personal link)
    counter: str
    value: int | None
    reading_date: date | None
    problem: str | None = None  # why the row is no reading (`validation_failed`)


@dataclass(frozen=True, slots=True)
class FileRefusal:
    code: str  # file_too_large, not_a_spreadsheet, spreadsheet_too_large, too_many_rows, missing_columns
    detail: str


def read_readings(content: bytes, *, filename: str, max_bytes: int, max_rows: int) -> list[SheetRow] | FileRefusal:
    """The readings of an xlsx or csv file (told apart by content), rows whose `value` is empty skipped."""
    if len(content) > max_bytes:
        return FileRefusal("file_too_large", f"{len(content)} bytes, at most {max_bytes}")
    if content.startswith(ZIP_MAGIC):
        return _read_xlsx(content, max_rows)
    return _read_csv(content, max_rows)


def _read_xlsx(content: bytes, max_rows: int) -> list[SheetRow] | FileRefusal:
    refused = inspect_package(content, max_uncompressed=MAX_UNCOMPRESSED_BYTES, max_part=max_part_bytes(max_rows))
    if refused is not None:
        return FileRefusal(refused.reason, refused.detail)
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as error:  # a malformed package can raise almost anything inside openpyxl
        return FileRefusal("not_a_spreadsheet", f"openpyxl: {type(error).__name__}")
    try:
        sheets = [sheet for sheet in workbook.worksheets if sheet.title == READING_SHEET_NAME] \
            or workbook.worksheets[:1]
        if not sheets:
            return FileRefusal("missing_columns", "no worksheet")
        sheet = sheets[0]
        sheet.reset_dimensions()  # the stated dimension is the file's claim: only the XML's own rows are read
        return _rows(((number, tuple(read_value(value) for value in cells))
                      for number, cells in enumerate(sheet_values(sheet), start=1)), max_rows)
    except Unreadable as error:
        return FileRefusal("not_a_spreadsheet", f"openpyxl: {type(error.__cause__).__name__}")
    finally:
        workbook.close()


def _read_csv(content: bytes, max_rows: int) -> list[SheetRow] | FileRefusal:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return FileRefusal("not_a_spreadsheet", "neither an xlsx nor a UTF-8 csv")
    if "\x00" in text:
        return FileRefusal("not_a_spreadsheet", "binary content")
    first_line = text.split("\n", 1)[0]
    # German spreadsheets export with semicolons; tabs come from copying cells.
    delimiter = max(";,\t", key=first_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)

    def cells() -> Iterator[tuple[int, tuple[object, ...]]]:
        try:
            for number, row in enumerate(reader, start=1):
                yield number, tuple(cell.strip() or None for cell in row[:MAX_COLUMNS])
        except csv.Error as error:
            raise Unreadable from error
    try:
        return _rows(cells(), max_rows)
    except Unreadable:
        return FileRefusal("not_a_spreadsheet", "not a csv")


def _rows(numbered: Iterator[tuple[int, tuple[object, ...]]], max_rows: int) -> list[SheetRow] | FileRefusal:
    columns: dict[str, int] | None = None
    rows: list[SheetRow] = []
    seen = 0
    for number, values in numbered:
        if number > EXCEL_MAX_ROWS:
            return FileRefusal("spreadsheet_too_large", "a row past Excel's last row")
        if all(value is None for value in values):
            continue
        if columns is None:
            labels = [str(value).strip().lower().rstrip("*").strip().replace(" ", "_") if value is not None else ""
                      for value in values]
            columns = {label: index for index, label in enumerate(labels) if label in READING_SHEET_COLUMNS}
            missing = [key for key in REQUIRED if key not in columns]
            if missing:
                return FileRefusal("missing_columns", ", ".join(missing))
            continue
        seen += 1
        if seen > max_rows:
            return FileRefusal("too_many_rows", f"more than {max_rows} rows")
        row = _row(number, values, columns)
        if row is not None:
            rows.append(row)
    if columns is None:
        return FileRefusal("missing_columns", "no header row")
    return rows


def _row(number: int, values: tuple[object, ...], columns: dict[str, int]) -> SheetRow | None:
    def cell(key: str) -> object:
        index = columns.get(key)
        return values[index] if index is not None and index < len(values) else None

    serial, counter, value, when = cell("serial_number"), cell("counter"), cell("value"), cell("reading_date")
    if value is None:
        return None  # not read this time: the reminder's sheet lists every device, the customer fills in some
    key, name = str(serial or "").strip(), str(counter or "").strip()
    number_value = _integer(value)
    reading_date = _date(when)
    problem = None
    if not key:
        problem = "serial_number is empty"
    elif not name:
        problem = "counter is empty"
    elif number_value is None:
        problem = f"value is not an integer from 0 to {MAX_COUNTER}"
    elif when is not None and reading_date is None:
        problem = "reading_date is not a date (YYYY-MM-DD or DD.MM.YYYY)"
    return SheetRow(number, key[:40], name[:40], number_value, reading_date, problem)


def _integer(value: object) -> int | None:
    """A counter value as `submit_reading` takes it: an integer from 0 to `MAX_COUNTER`; spaces between thousands
    allowed in text, ASCII digits only (`"2²".isdigit()` is true)."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    else:
        text = str(value).replace(" ", "").replace("\u00a0", "")
        number = int(text) if text.isascii() and text.isdigit() else None
    return number if number is not None and 0 <= number <= MAX_COUNTER else None


def _date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if value is None:
        return None
    text = str(value).strip()
    if match := GERMAN_DATE.match(text):
        day, month, year = (int(part) for part in match.groups())
        try:
            return date(year, month, day)
        except ValueError:
            return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# --- the usage workbook -----------------------------------------------------------------------------------

USAGE_TITLES: Final = {"en": ("Usage", "Pages per period", "Pages"),
                       "de": ("Verbrauch", "Seiten pro Abrechnungszeitraum", "Seiten"),
                       "nb": ("Forbruk", "Sider per periode", "Sider")}
USAGE_HEADER: Final = {"en": ("Serial number", "Model", "Name", "Period end", "Total"),
                       "de": ("Seriennummer", "Modell", "Name", "Periodenende", "Gesamt"),
                       "nb": ("Serienummer", "Modell", "Navn", "Periodeslutt", "Totalt")}


def usage_workbook(rows: list[UsageRow], language: str) -> bytes:
    """One row per device and period (a column per counter), and a sheet with the fleet's pages per period drawn
    as a bar chart."""
    language = language if language in USAGE_TITLES else "en"
    usage_title, chart_title, pages_title = USAGE_TITLES[language]
    serial, model, name, period, total = USAGE_HEADER[language]
    counters = sorted({counter for row in rows for counter in row.printed_pages})
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = usage_title
    sheet.append([serial, model, name, period, *counters, total])
    for row in rows:
        sheet.append([safe_text(row.serial_number), safe_text(row.model), safe_text(row.friendly_name or ""),
                      row.period_end, *(row.printed_pages.get(counter, 0) for counter in counters), row.total])
    for column, width in zip("ABCD", (18, 18, 24, 14), strict=True):
        sheet.column_dimensions[column].width = width
    per_period: dict[date, int] = {}
    for row in rows:
        per_period[row.period_end] = per_period.get(row.period_end, 0) + row.total
    chart_sheet = workbook.create_sheet(chart_title[:31])
    chart_sheet.append([period, pages_title])
    for end, pages in sorted(per_period.items()):
        chart_sheet.append([end.isoformat(), pages])
    chart = BarChart()
    chart.title, chart.y_axis.title, chart.x_axis.title = chart_title, pages_title, period
    chart.add_data(Reference(chart_sheet, min_col=2, min_row=1, max_row=len(per_period) + 1), titles_from_data=True)
    chart.set_categories(Reference(chart_sheet, min_col=1, min_row=2, max_row=len(per_period) + 1))
    chart_sheet.add_chart(chart, "D2")
    return saved(workbook)
