"""The bulk registration spreadsheets: template, upload reader, result file, and the files meant to hurt them."""

from __future__ import annotations

import random
import re
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from io import BytesIO
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from contracts import spreadsheets
from contracts.spreadsheets import neutralise
from services.registration import excel
from services.registration.excel import (
    BulkFailure,
    BulkRows,
    bulk_template,
    read_bulk_rows,
    result_workbook,
)

SHEET = "xl/worksheets/sheet1.xml"
MB = 1024 * 1024
ENGLISH_HEADER = ["Serial number", "Purchase date", "Device name", "Postal code", "City", "Country"]


def xlsx(rows: Iterable[Sequence[object]], *, title: str = "Devices") -> bytes:
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet(title)
    for row in rows:
        sheet.append(list(row))
    return saved(workbook)


def first_sheet(workbook: Any) -> Any:
    return workbook.worksheets[0]


def saved(workbook: Any) -> bytes:
    buffer = BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def device(index: int) -> list[object]:
    return [f"AK6C{index:06d}", date(2024, 4, 16), f"Printer {index}", "01067", "Dresden", "DE"]


def devices(count: int) -> bytes:
    return xlsx([ENGLISH_HEADER, *(device(index) for index in range(count))])


def repacked(package: bytes, *, replace: dict[str, bytes | Iterable[bytes]] | None = None,
             drop: Iterable[str] = ()) -> bytes:
    """The same zip with some parts replaced (streamed in chunks, so a huge part costs no memory) or left out."""
    replace, drop = replace or {}, set(drop)
    buffer = BytesIO()
    with zipfile.ZipFile(BytesIO(package)) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            if name in drop:
                continue
            content = replace.pop(name, None)
            if content is None:
                target.writestr(name, source.read(name))
            elif isinstance(content, bytes):
                target.writestr(name, content)
            else:
                with target.open(name, "w", force_zip64=True) as part:
                    for chunk in content:
                        part.write(chunk)
    return buffer.getvalue()


def sheet_xml(package: bytes) -> bytes:
    with zipfile.ZipFile(BytesIO(package)) as archive:
        return archive.read(SHEET)


def rows_of(result: BulkRows | BulkFailure) -> BulkRows:
    assert isinstance(result, BulkRows), result
    return result


def read(content: bytes, max_rows: int = 25) -> BulkRows | BulkFailure:
    return read_bulk_rows(content, max_rows=max_rows, max_bytes=5 * MB)


def failure(content: bytes, max_rows: int = 25) -> str:
    result = read(content, max_rows)
    assert isinstance(result, BulkFailure), result
    return result.reason


def test_openpyxl_parses_through_defusedxml() -> None:
    assert openpyxl.DEFUSEDXML


@pytest.mark.parametrize("language", ["de", "en", "nb"])
def test_a_filled_in_template_reads_back_in_every_language(language: str) -> None:
    workbook = openpyxl.load_workbook(BytesIO(bulk_template(language)))
    sheet = workbook[excel.DATA_SHEET[language]]  # type: ignore[index]
    sheet.append(["AK6C004746", date(2024, 4, 16), "Empfang links", "Empfang", "Erika Mustermann", "Hauptstraße 1",
                  "01067", "Dresden", "DE"])
    sheet.append(["  AK6C004747 ", datetime(2023, 12, 1), None, None, None, None, None, None, None, "Muster GmbH",
                  "it@muster.example"])
    rows = rows_of(read(saved(workbook))).rows
    assert [row.number for row in rows] == [2, 3]
    assert rows[0].values == {
        "serial_number": "AK6C004746", "purchase_date": date(2024, 4, 16), "friendly_name": "Empfang links",
        "building_location": "Empfang", "contact_name": "Erika Mustermann", "street": "Hauptstraße 1",
        "postal_code": "01067", "city": "Dresden", "country": "DE", "end_customer_name": None,
        "end_customer_email": None, "warranty_accepted": None}
    assert rows[1].values["serial_number"] == "AK6C004747"
    assert rows[1].values["purchase_date"] == date(2023, 12, 1) and type(rows[1].values["purchase_date"]) is date
    assert rows[1].values["end_customer_email"] == "it@muster.example"


@pytest.mark.parametrize(("language", "sheets", "first_label"), [
    ("de", ["Geräte", "Anleitung"], "Seriennummer *"), ("en", ["Devices", "Instructions"], "Serial number *"),
    ("nb", ["Enheter", "Instruksjoner"], "Serienummer *"), ("de-AT", ["Geräte", "Anleitung"], "Seriennummer *"),
    ("fr", ["Devices", "Instructions"], "Serial number *"),
])
def test_the_template_speaks_the_requested_language_and_falls_back_to_english(
        language: str, sheets: list[str], first_label: str) -> None:
    workbook = openpyxl.load_workbook(BytesIO(bulk_template(language)))
    assert workbook.sheetnames == sheets
    data, guide = workbook.worksheets
    header = [cell.value for cell in data[1]]
    assert header[0] == first_label and len(header) == len(excel.COLUMNS)
    guide_text = " ".join(str(cell.value) for row in guide.iter_rows() for cell in row if cell.value is not None)
    assert "25" in guide_text
    for column in excel.COLUMNS:
        assert column.labels[excel.language_of(language)] in guide_text


def test_the_template_freezes_its_header_and_validates_the_purchase_date() -> None:
    sheet = openpyxl.load_workbook(BytesIO(bulk_template("en"))).worksheets[0]
    assert sheet.freeze_panes == "A2"
    (validation, _) = sheet.data_validations.dataValidation
    assert validation.type == "date" and str(validation.sqref) == "B2:B1048576"
    assert validation.formula2 == "TODAY()" and validation.showInputMessage and validation.prompt
    assert sheet.column_dimensions["A"].number_format == "@"  # serials and postcodes keep their leading zeros
    assert all(sheet.column_dimensions[letter].width >= 10 for letter in "ABCDEFGHIJK")


@pytest.mark.parametrize(("language", "label", "choices"), [
    ("de", "Garantieerklärung akzeptiert", '"ja,nein"'), ("en", "Warranty statement accepted", '"yes,no"'),
    ("nb", "Garantierklæring godtatt", '"ja,nei"'),
])
def test_the_template_asks_each_row_to_accept_the_warranty_with_a_yes_no_list_in_its_language(
        language: str, label: str, choices: str) -> None:
    data, guide = openpyxl.load_workbook(BytesIO(bulk_template(language))).worksheets
    header = [cell.value for cell in data[1]]
    letter = openpyxl.utils.get_column_letter(header.index(label) + 1)
    [validation] = [item for item in data.data_validations.dataValidation if item.type == "list"]
    assert (validation.formula1, str(validation.sqref)) == (choices, f"{letter}2:{letter}1048576")
    assert not validation.showErrorMessage  # TRUE, 1 or x may be typed as well
    guide_text = " ".join(str(cell.value) for row in guide.iter_rows() for cell in row if cell.value is not None)
    assert f"{label}" in guide_text


@pytest.mark.parametrize(("value", "accepted"), [
    ("ja", True), ("yes", True), (" Yes ", True), ("JA", True), (True, True), ("TRUE", True), ("true", True),
    (1, True), (1.0, True), ("1", True), ("x", True), ("X", True),
    (None, False), ("", False), ("nein", False), ("no", False), ("nei", False), (False, False), (0, False),
    ("0", False), (2, False), ("yes please", False),
])
def test_a_row_accepts_the_warranty_with_the_yes_word_of_any_language_true_1_or_x(value: object,
                                                                                  accepted: bool) -> None:
    assert excel.accepts(value) is accepted


def test_the_template_states_the_row_limit_it_is_given() -> None:
    guide = openpyxl.load_workbook(BytesIO(bulk_template("en", max_rows=40))).worksheets[1]
    assert "At most 40 devices" in str(guide["A2"].value)


def test_25_devices_are_read() -> None:
    rows = rows_of(read(devices(25))).rows
    assert len(rows) == 25 and rows[-1].number == 26
    assert rows[0].cells == ("AK6C000000", date(2024, 4, 16), "Printer 0", "01067", "Dresden", "DE")


def test_a_file_with_26_devices_is_refused_whole() -> None:
    assert failure(devices(26)) == "too_many_rows"


def test_empty_rows_are_skipped_and_rows_keep_their_sheet_numbers() -> None:
    content = xlsx([[], ENGLISH_HEADER, device(1), [], [None, "   ", ""], *(device(index) for index in range(2, 26))])
    rows = rows_of(read(content)).rows
    assert len(rows) == 25 and [row.number for row in rows[:2]] == [3, 6]


def test_the_header_is_read_in_any_language_case_and_order_with_unknown_columns_kept_aside() -> None:
    content = xlsx([["kjøpsdato", "Notes", "SERIAL NUMBER *", "Postleitzahl", "end_customer_email"],
                    [date(2024, 1, 31), "my own note", "AK1", 1067, "a@b.example"]])
    result = rows_of(read(content))
    assert result.keys == ("purchase_date", None, "serial_number", "postal_code", "end_customer_email")
    (row,) = result.rows
    assert row.values["serial_number"] == "AK1" and row.values["postal_code"] == 1067  # numbers stay numbers
    assert row.values["city"] is None and "my own note" not in row.values.values()
    assert row.cells == (date(2024, 1, 31), "my own note", "AK1", 1067, "a@b.example")


def test_missing_required_columns_are_named() -> None:
    result = read(xlsx([["Device name", "City"], ["Printer", "Oslo"]]))
    assert isinstance(result, BulkFailure)
    assert (result.reason, result.columns) == ("missing_columns", ("serial_number", "purchase_date"))


def test_a_sheet_without_any_header_misses_every_required_column() -> None:
    result = read(xlsx([]))
    assert isinstance(result, BulkFailure) and result.columns == excel.REQUIRED_KEYS


def test_a_column_given_twice_is_refused() -> None:
    result = read(xlsx([["Serial number", "Purchase date", "Seriennummer"], ["AK1", date(2024, 1, 1), "AK2"]]))
    assert isinstance(result, BulkFailure) and (result.reason, result.columns) == ("duplicate_columns",
                                                                                   ("serial_number",))


def test_the_data_sheet_is_found_by_its_name_wherever_it_is() -> None:
    workbook = openpyxl.Workbook()
    first_sheet(workbook).title = "Notes"
    workbook.create_sheet("Enheter").append(["Serienummer", "Kjøpsdato"])
    workbook["Enheter"].append(["AK1", date(2024, 1, 1)])
    assert len(rows_of(read(saved(workbook))).rows) == 1


def test_a_file_over_the_byte_limit_is_refused_before_it_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZipFile", None)
    result = read_bulk_rows(b"x" * 1001, max_rows=25, max_bytes=1000)
    assert isinstance(result, BulkFailure) and result.reason == "file_too_large"


def a_zip(members: dict[str, bytes]) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


WORD_TYPES = (b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override '
              b'PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
              b'wordprocessingml.document.main+xml"/></Types>')


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b"serial_number;purchase_date\nAK1;2024-01-01\n", id="plain text"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), id="a PNG"),
    pytest.param(a_zip({"hello.txt": b"hello"}), id="a zip without xlsx parts"),
    pytest.param(a_zip({"[Content_Types].xml": WORD_TYPES, "word/document.xml": b"<w/>"}), id="a word document"),
    pytest.param(devices(3)[:-200], id="a truncated xlsx"),
    pytest.param(repacked(devices(3), drop=["xl/workbook.xml"]), id="an xlsx without its workbook"),
    pytest.param(repacked(devices(3), replace={SHEET: b"<worksheet><sheetData><row>"}), id="a broken sheet"),
])
def test_what_is_not_a_spreadsheet_is_refused(content: bytes) -> None:
    assert failure(content) == "not_a_spreadsheet"


def test_a_damaged_sheet_part_is_refused() -> None:
    package = bytearray(devices(25))
    start = package.index(b"sheet1.xml") + 200  # inside the sheet's compressed data, which fails inflate or CRC
    package[start:start + 64] = bytes(64)
    assert failure(bytes(package)) == "not_a_spreadsheet"


def repeated_cells(total: int) -> Iterable[bytes]:
    yield b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
    chunk = b'<c t="inlineStr"><is><t>x</t></is></c>' * (MB // 38)
    for _ in range(total // len(chunk) + 1):
        yield chunk
    yield b"</row></sheetData></worksheet>"


@pytest.mark.parametrize("unpacked", [2 * MB, 60 * MB], ids=["ratio", "total"])
def test_a_spreadsheet_bomb_is_refused_before_openpyxl_opens_it(
        unpacked: int, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = repacked(devices(1), replace={SHEET: repeated_cells(unpacked)})
    assert len(bomb) < unpacked / 100

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("openpyxl was given the bomb")

    monkeypatch.setattr(openpyxl, "load_workbook", never)
    tracemalloc.start()
    try:
        reason = failure(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reason == "spreadsheet_too_large"
    assert peak < MB


def varied_styles(total: int) -> Iterable[bytes]:
    """A styles.xml of `total` bytes that packs only about 12:1, far under the ratio check."""
    numbers = random.Random(7)
    yield b'<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><cellXfs>'
    for _ in range(total // 100_000 + 1):
        yield b"".join(b'<xf numFmtId="%d" fontId="0" fillId="0" borderId="0" xfId="%d"/>'
                       % (numbers.randrange(50), numbers.randrange(10**5)) for _ in range(1500))
    yield b"</cellXfs></styleSheet>"


def test_a_part_unpacking_beyond_its_bound_is_refused_quickly_though_it_packs_under_the_ratio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Unbounded, a 46 MB styles.xml like this cost 22 s of CPU and 736 MB in openpyxl.
    bomb = repacked(devices(1), replace={"xl/styles.xml": varied_styles(3 * MB)})
    with zipfile.ZipFile(BytesIO(bomb)) as archive:
        styles = archive.getinfo("xl/styles.xml")
    assert styles.file_size > spreadsheets.MAX_WHOLE_PART_BYTES
    assert styles.file_size < spreadsheets.MAX_COMPRESSION_RATIO * styles.compress_size

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("openpyxl was given the bomb")

    monkeypatch.setattr(openpyxl, "load_workbook", never)
    started = time.process_time()
    assert failure(bomb) == "spreadsheet_too_large"
    assert time.process_time() - started < 0.5


def test_the_bound_of_a_sheet_grows_with_the_rows_allowed_and_honest_files_stay_under_it() -> None:
    assert len(rows_of(read(devices(25))).rows) == 25
    assert len(rows_of(read(devices(10_000), max_rows=10_000)).rows) == 10_000
    oversized = repacked(devices(1), replace={SHEET: varied_sheet(spreadsheets.max_part_bytes(25) + MB)})
    assert failure(oversized) == "spreadsheet_too_large"


def varied_sheet(total: int) -> Iterable[bytes]:
    numbers = random.Random(3)
    yield b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
    for _ in range(total // 60_000 + 1):
        yield b"".join(b'<c t="inlineStr"><is><t>%d</t></is></c>' % numbers.randrange(10**9) for _ in range(1500))
    yield b"</row></sheetData></worksheet>"


def understated(package: bytes, name: str, size: int) -> bytes:
    """The zip with `name`'s uncompressed size in the central directory, which zipfile trusts, set to `size`."""
    patched = bytearray(package)
    start = 0
    while (start := patched.find(b"PK\x01\x02", start + 1)) != -1:
        (name_length,) = struct.unpack_from("<H", patched, start + 28)
        if patched[start + 46:start + 46 + name_length] == name.encode():
            struct.pack_into("<I", patched, start + 24, size)
            return bytes(patched)
    raise AssertionError(f"{name} not in the zip")


def test_a_zip_that_understates_a_part_is_read_no_further_than_it_says() -> None:
    bomb = repacked(devices(1), replace={SHEET: b"".join(repeated_cells(5 * MB))})
    assert failure(bomb) == "spreadsheet_too_large"
    tracemalloc.start()
    try:
        reason = failure(understated(bomb, SHEET, 1000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reason == "not_a_spreadsheet"  # zipfile stops at the stated size, and the CRC or the XML then fails
    assert peak < MB


def test_many_parts_are_refused() -> None:
    package = a_zip({f"xl/media/image{index}.png": b"" for index in range(spreadsheets.MAX_MEMBERS + 1)})
    assert failure(package) == "spreadsheet_too_large"


def test_a_dimension_claiming_a_billion_rows_and_every_column_changes_nothing() -> None:
    workbook = openpyxl.Workbook()
    for row in [ENGLISH_HEADER, device(1), device(2), device(3)]:
        first_sheet(workbook).append(row)
    package = saved(workbook)
    lying = re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1:XFD1000000000"', sheet_xml(package))
    assert b"XFD1000000000" in lying
    started = time.monotonic()
    rows = rows_of(read(repacked(package, replace={SHEET: lying}))).rows
    assert len(rows) == 3 and len(rows[0].cells) == len(ENGLISH_HEADER)
    assert time.monotonic() - started < 30  # a guard against hanging, not a benchmark: unbounded, this takes hours


def test_a_row_numbered_past_excels_last_row_is_refused() -> None:
    package = devices(3)
    far = b'<row r="1000000000"><c r="A1000000000" t="inlineStr"><is><t>AK9</t></is></c></row></sheetData>'
    assert failure(repacked(package, replace={SHEET: sheet_xml(package).replace(b"</sheetData>", far)})) == (
        "spreadsheet_too_large")


def test_a_cell_in_the_last_column_does_not_widen_every_row() -> None:
    package = devices(3)
    wide = sheet_xml(package).replace(b"</row>", b'<c r="XFD2" t="inlineStr"><is><t>far</t></is></c></row>', 2)
    rows = rows_of(read(repacked(package, replace={SHEET: wide}))).rows
    assert len(rows[0].cells) == len(ENGLISH_HEADER)


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
                     for level in range(1, 10))
          + b"]>")


@pytest.mark.parametrize("part", ["[Content_Types].xml", "xl/workbook.xml", "xl/styles.xml", SHEET])
def test_an_entity_expansion_payload_is_refused(part: str) -> None:
    package = devices(3)
    with zipfile.ZipFile(BytesIO(package)) as archive:
        original = archive.read(part)
    body = re.sub(rb"^<\?xml[^>]*\?>", b"", original)
    payload = LAUGHS + body.replace(b">", b">&lol9;", 1) if part == SHEET else LAUGHS + body
    assert failure(repacked(package, replace={part: payload})) == "not_a_spreadsheet"


def read_back(content: bytes) -> list[list[Any]]:
    workbook = openpyxl.load_workbook(BytesIO(content))
    return [[cell.value for cell in row] for row in workbook.worksheets[0].iter_rows()]


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+49 30 1234", "'+49 30 1234"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("  =HYPERLINK(\"http://x\")", "'  =HYPERLINK(\"http://x\")"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("\tplain", "'\tplain"), ("\n -1", "'\n -1"), ("AK6C004746", "AK6C004746"), ("a=b", "a=b"), ("", ""),
    (-5, -5), (1.5, 1.5), (None, None), (date(2024, 1, 1), date(2024, 1, 1)),
])
def test_neutralise_quotes_text_that_would_run_as_a_formula(value: object, expected: object) -> None:
    assert neutralise(value) == expected


def test_result_cells_that_could_run_as_formulas_come_back_as_quoted_text() -> None:
    dangerous = ["=cmd|' /C calc'!A0", "+1+1", "-1+1", "@SUM(1,1)", " =1", "\t=1", "\r=1"]
    content = result_workbook(["=header", "Purchase date"],
                              [([value, date(2024, 1, 1)], "rejected", value) for value in dangerous])
    workbook = openpyxl.load_workbook(BytesIO(content))
    sheet = workbook.worksheets[0]
    assert [cell.value for cell in sheet[1]] == ["'=header", "Purchase date", "result", "message"]
    for row in sheet.iter_rows(min_row=2):
        assert row[0].data_type == "s" and str(row[0].value).startswith("'")
        assert row[3].data_type == "s" and str(row[3].value).startswith("'")
    # XML reads a raw carriage return back as a line feed; the quote in front is what matters.
    assert [row[0] for row in read_back(content)[1:]] == ["'" + value.replace("\r", "\n") for value in dangerous]


def test_dates_stay_dates_and_numbers_stay_numbers_in_the_result() -> None:
    content = result_workbook(["Serial number", "Purchase date", "Postal code", "Imported at"],
                              [(["AK1", date(2024, 4, 16), 1067, datetime(2024, 5, 1, 12, tzinfo=UTC)],
                                "registered", "")])
    workbook = openpyxl.load_workbook(BytesIO(content))
    row = workbook.worksheets[0][2]
    assert row[1].value == datetime(2024, 4, 16)  # openpyxl reads a date cell as a datetime
    assert row[2].value == 1067 and row[3].value == datetime(2024, 5, 1, 12)
    assert [cell.value for cell in row[4:]] == ["registered", None]


def test_result_rows_are_aligned_with_the_header_whatever_their_length() -> None:
    content = result_workbook(["A", "B", "C"], [(["1"], "rejected", "missing"), (["1", "2", "3", "4"], "ok", "")])
    assert read_back(content)[1:] == [["1", None, None, "rejected", "missing"], ["1", "2", "3", "ok", None]]


def test_a_message_with_control_characters_or_odd_types_still_makes_a_result() -> None:
    content = result_workbook(["Serial number"], [([["a", "list"]], "rejected", "bad\x00byte\x1b")])
    assert read_back(content)[1] == ["['a', 'list']", "rejected", "badbyte"]


def test_an_uploaded_file_and_its_result_round_trip() -> None:
    workbook = openpyxl.Workbook()
    sheet = first_sheet(workbook)
    sheet.append(ENGLISH_HEADER)
    sheet.append([None, date(2024, 4, 16), None, "01067", "Dresden", "DE"])
    for column, text in ((1, "=1+1"), (3, "@me")):  # what Excel stores for a typed '=1+1: text, not a formula
        cell = sheet.cell(row=2, column=column, value=text)
        cell.data_type = "s"
    uploaded = rows_of(read(saved(workbook)))
    assert uploaded.rows[0].values["serial_number"] == "=1+1"
    content = result_workbook(list(uploaded.header), [(list(row.cells), "rejected", "unknown_serial")
                                                      for row in uploaded.rows])
    assert read_back(content)[1] == ["'=1+1", datetime(2024, 4, 16), "'@me", "01067", "Dresden", "DE", "rejected",
                                     "unknown_serial"]


def test_a_formula_in_an_upload_gives_its_cached_value_never_its_text() -> None:
    (row,) = rows_of(read(xlsx([ENGLISH_HEADER, ["=HYPERLINK(\"http://x\")", date(2024, 4, 16)]]))).rows
    assert row.values["serial_number"] is None  # openpyxl, unlike Excel, saves no cached value


def test_ten_thousand_devices_are_read_and_written_with_the_limit_raised() -> None:
    uploaded = rows_of(read_bulk_rows(devices(10_000), max_rows=10_000, max_bytes=20 * MB))
    assert len(uploaded.rows) == 10_000
    content = result_workbook(list(uploaded.header), ((list(row.cells), "registered", "") for row in uploaded.rows))
    assert len(rows_of(read_bulk_rows(content, max_rows=10_000, max_bytes=20 * MB)).rows) == 10_000
