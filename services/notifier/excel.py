"""The readings sheet a reminder mail attaches: metering's `submit_bulk` reads it back once values are typed in.

A pure function from the reminder's devices to xlsx bytes; the handler runs it in `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import openpyxl  # type: ignore[import-untyped, unused-ignore]
from openpyxl.styles import Font  # type: ignore[import-untyped, unused-ignore]
from openpyxl.utils import get_column_letter  # type: ignore[import-untyped, unused-ignore]

from contracts.metering import READING_SHEET_COLUMNS, READING_SHEET_NAME, ReminderDevice

COLUMN_WIDTH = 16


def reading_sheet(devices: Sequence[ReminderDevice]) -> bytes:
    """Sheet `READING_SHEET_NAME`: the header `READING_SHEET_COLUMNS`, then one row per device and counter with
    its serial number, counter, last value and last date (ISO) filled in, `value` and `reading_date` empty."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = READING_SHEET_NAME
    sheet.append(list(READING_SHEET_COLUMNS))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for device in devices:
        for counter in device.counters:
            values: dict[str, object] = {
                "serial_number": device.serial_number, "counter": counter.counter, "last_value": counter.last_value,
                "last_date": counter.last_date.isoformat() if counter.last_date else None}
            sheet.append([values.get(column) for column in READING_SHEET_COLUMNS])
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            if isinstance(cell.value, str):
                # Text stays text: openpyxl would store a serial or counter name starting with "=" as a formula.
                cell.data_type = "s"
    for index in range(1, len(READING_SHEET_COLUMNS) + 1):
        sheet.column_dimensions[get_column_letter(index)].width = COLUMN_WIDTH
    sheet.freeze_panes = "A2"
    buffer = BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
