"""contracts.uploads: the back office's and the CLI's reader of csv and xlsx uploads. Pure functions."""

from __future__ import annotations

import io
from datetime import date

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts import uploads

ROW = {"serial_number": "AK5A000001", "counters": "mono=12000; color=3400", "counters_date": "2026-11-30"}


def test_an_xlsx_and_a_csv_give_the_same_rows_numbered_by_their_line_in_the_file() -> None:
    book = openpyxl.Workbook()
    book.active.append(["Serial number", "Counters", "Counters date"])
    book.active.append(["AK5A000001", "mono=12000; color=3400", date(2026, 11, 30)])
    content = io.BytesIO()
    book.save(content)
    text = "serial_number;counters;counters_date\n;;\nAK5A000001;mono=12000, color=3400;2026-11-30\n"

    assert uploads.numbered_rows("base.xlsx", content.getvalue()) == [(2, ROW)]
    assert uploads.numbered_rows("base.csv", text.encode()) == [(3, {**ROW, "counters": "mono=12000, color=3400"})]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", b"a\n" + b"x\n" * (uploads.MAX_ROWS + 1),
                                     b"x" * (uploads.MAX_FILE_BYTES + 1)])
def test_what_is_empty_no_spreadsheet_or_too_large_cannot_be_read(content: bytes) -> None:
    with pytest.raises(uploads.Unreadable):
        uploads.numbered_rows("upload.csv", content)


def _xlsx(rows: dict[int, list[str]]) -> bytes:
    book = openpyxl.Workbook()
    for line, cells in rows.items():
        for column, value in enumerate(cells, start=1):
            book.active.cell(row=line, column=column, value=value)
    content = io.BytesIO()
    book.save(content)
    return content.getvalue()


def test_an_xlsx_counts_its_filled_rows_and_scans_a_bounded_number_of_rows() -> None:
    filled = {line: ["ES5431dn"] for line in range(2, uploads.MAX_ROWS + 3)}  # one row too many
    far_down = uploads.MAX_SCANNED_ROWS + 1  # past the rows looked at, though the only row

    with pytest.raises(uploads.Unreadable, match="too many rows"):
        uploads.numbered_rows("models.xlsx", _xlsx({1: ["model"], **filled}))
    with pytest.raises(uploads.Unreadable, match="too many rows"):
        uploads.numbered_rows("models.xlsx", _xlsx({1: ["model"], far_down: ["ES5431dn"]}))
    assert uploads.numbered_rows("models.xlsx", _xlsx({1: ["model"], far_down - 1: ["ES5431dn"]})) == [
        (far_down - 1, {"model": "ES5431dn"})]


def test_a_column_the_kind_of_file_does_not_have_is_refused_by_its_name_as_written() -> None:
    text = b"Serial Number;model;E-Maintenance;Notes\nAK5A000001;ES5431dn;yes;\n"

    with pytest.raises(uploads.UnknownColumns) as refused:
        uploads.numbered_rows("base.csv", text, "installed_base")

    assert refused.value.columns == ["E-Maintenance", "Notes"]
    assert uploads.numbered_rows("base.csv", text)[0][1]["e-maintenance"] == "yes"  # no kind: every column
    assert uploads.numbered_rows("base.csv", text.replace(b"E-Maintenance;Notes", b"e_maintenance;"),
                                 "installed_base") == [(2, {"serial_number": "AK5A000001", "model": "ES5431dn",
                                                            "e_maintenance": "yes"})]


@pytest.mark.parametrize(("text", "positions"), [
    (b"model;article_number;;counters\nES5431dn;01;^AK$;mono\n", [3]),  # a name left out
    (b"model,article_number,serial_pattern,counters\nES5431dn,01,^AK$,mono,yes\n", [5]),  # past the last name
])
def test_values_in_a_column_without_a_name_are_refused_naming_its_position(text: bytes, positions: list[int]) -> None:
    with pytest.raises(uploads.UnnamedColumns) as refused:
        uploads.numbered_rows("models.csv", text, "models")

    assert refused.value.positions == positions
    assert f"column {positions[0]}" in str(refused.value)
