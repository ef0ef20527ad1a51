"""Spreadsheets from outside, read safely; spreadsheets for outside, safe to open. Pure functions, no I/O.

Beside the contracts because the services and the gateway both read what people upload. Whatever reads an uploaded
xlsx (registration's bulk upload, metering's readings, the back office's uploads in the gateway) checks its package
with `inspect_package` before openpyxl parses a byte of XML, streams its rows with `sheet_values` (after
`sheet.reset_dimensions()`), and writes cells through `safe_text` so nothing a user typed runs as a formula.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time
from io import BytesIO
from typing import Any, Final, Literal, overload

import openpyxl  # type: ignore[import-untyped, unused-ignore]
from defusedxml.ElementTree import fromstring as parse_xml  # type: ignore[import-untyped, unused-ignore]
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # type: ignore[import-untyped, unused-ignore]

if not openpyxl.DEFUSEDXML:  # uploads are untrusted XML: refuse to start rather than parse them unprotected
    raise ImportError("reading spreadsheets needs defusedxml, and OPENPYXL_DEFUSEDXML must not be False")

# An honest upload of 25 (or, with the limit raised, 10,000) devices unpacks to a few MB; 50 MB leaves room
# for bloated styles and images while keeping openpyxl's shared strings and styles, which it holds in
# memory, small. Deflate tops out near 1:1000, and sheet XML compresses 10-20 times, so a member over
# 1 MB that unpacks more than 100 times its packed size is a bomb, not a spreadsheet.
MAX_UNCOMPRESSED_BYTES: Final = 50 * 1024 * 1024
MAX_COMPRESSION_RATIO: Final = 100
RATIO_CHECKED_FROM_BYTES: Final = 1024 * 1024
MAX_MEMBERS: Final = 1000
# The ratio is no bound by itself: a 2.5 MB upload whose styles.xml unpacked to 46 MB passed it and cost 19 s of
# CPU and 580 MB, since openpyxl builds every style as Python objects. So every part is bounded too. The parts
# openpyxl reads whole from fixed paths hold no rows: a workbook with thousands of styles stays far below 2 MB.
# Every other part (the sheet, which is streamed, and the shared strings, which are not) grows with the rows: an
# honest row takes a few hundred bytes, 2 KB leaves room. The limits are for the unpacked bytes zipfile will hand
# out (it stops at the stated size, see `_inspect_package`).
MAX_WHOLE_PART_BYTES: Final = 2 * 1024 * 1024
WHOLE_PARTS: Final = frozenset({"xl/styles.xml", "xl/workbook.xml", "xl/theme/theme1.xml", "docProps/core.xml",
                                "docProps/custom.xml", "[Content_Types].xml"})
PART_BYTES_PER_ROW: Final = 2048
# Excel's own last row and the widest header we look at: anything past them is not a device list.
EXCEL_MAX_ROWS: Final = 1_048_576
MAX_COLUMNS: Final = 64


_WORKBOOK_CONTENT_TYPES: Final = frozenset({
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml",
})
_FORMULA_PREFIXES: Final = ("=", "+", "-", "@")
_CONTROL_PREFIXES: Final = ("\t", "\r")


@dataclass(frozen=True, slots=True)
class PackageRefusal:
    reason: Literal["not_a_spreadsheet", "spreadsheet_too_large"]
    detail: str = ""  # for the log, in English; never file contents


class Unreadable(Exception):
    """openpyxl failed on the file; its errors have no common base, so they are funnelled into this one."""


def max_part_bytes(max_rows: int) -> int:
    """The most any part other than `WHOLE_PARTS` may unpack to, for uploads of at most `max_rows` rows."""
    return MAX_WHOLE_PART_BYTES + PART_BYTES_PER_ROW * max_rows


def inspect_package(content: bytes, *, max_uncompressed: int, max_part: int) -> PackageRefusal | None:
    """Refuse what is no xlsx, or would unpack too far, before openpyxl reads a byte of XML.

    The sizes come from the zip's central directory, which an attacker writes; zipfile never returns more
    than the stated size of a member (it stops there and fails the CRC), so they bound what openpyxl reads.
    """
    try:
        archive = zipfile.ZipFile(BytesIO(content))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        return PackageRefusal("not_a_spreadsheet", detail=f"not a zip: {type(error).__name__}")
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            return PackageRefusal("spreadsheet_too_large", detail=f"{len(members)} parts")
        total = 0
        for member in members:
            total += member.file_size
            limit = MAX_WHOLE_PART_BYTES if member.filename in WHOLE_PARTS else max_part
            if member.file_size > limit:
                return PackageRefusal("spreadsheet_too_large", detail=f"{member.filename} unpacks to "
                                                                   f"{member.file_size} bytes, at most {limit}")
            if (member.file_size > RATIO_CHECKED_FROM_BYTES
                    and member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1)):
                return PackageRefusal("spreadsheet_too_large", detail=f"a part unpacks from {member.compress_size} "
                                                                   f"to {member.file_size} bytes")
        if total > max_uncompressed:
            return PackageRefusal("spreadsheet_too_large", detail=f"unpacks to {total} bytes")
        names = {member.filename for member in members}
        if "[Content_Types].xml" not in names:
            return PackageRefusal("not_a_spreadsheet", detail="no [Content_Types].xml")
        try:
            manifest = parse_xml(archive.read("[Content_Types].xml"))
        except Exception as error:  # ParseError, defusedxml's refusals, zlib and CRC errors
            return PackageRefusal("not_a_spreadsheet", detail=f"content types: {type(error).__name__}")
    workbook_parts = [element.get("PartName", "") for element in manifest.iter()
                      if element.get("ContentType") in _WORKBOOK_CONTENT_TYPES]
    if not any(part.lstrip("/") in names for part in workbook_parts):
        return PackageRefusal("not_a_spreadsheet", detail="no workbook part")
    return None


def sheet_values(sheet: Any) -> Iterator[tuple[object, ...]]:
    try:
        yield from sheet.iter_rows(min_row=1, max_col=MAX_COLUMNS, values_only=True)
    except Exception as error:  # truncated parts, refused entities, CRC errors, bad XML...
        raise Unreadable from error


def read_value(value: object) -> object:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, datetime) and value.time() == time() and value.tzinfo is None:
        return value.date()  # Excel has no date type; a date is a datetime at midnight
    return value


@overload
def neutralise(value: str) -> str: ...
@overload
def neutralise(value: object) -> object: ...
def neutralise(value: object) -> object:
    """Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, also after blanks, or a leading tab or
    carriage return: OWASP's CSV injection list) gets a leading `'` and stays text; anything else is unchanged."""
    if isinstance(value, str) and (value.startswith(_CONTROL_PREFIXES)
                                   or value.lstrip().startswith(_FORMULA_PREFIXES)):
        return "'" + value
    return value


def safe_text(text: str) -> str:
    legal: str = ILLEGAL_CHARACTERS_RE.sub("", text)  # control characters XML cannot carry
    return neutralise(legal)


def saved(workbook: Any) -> bytes:
    buffer = BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
