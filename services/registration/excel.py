"""Bulk registration's Excel adapter: the template, the upload reader and the result file, as pure functions.

Nothing here does I/O or knows the broker or the database: the service calls these through
`asyncio.to_thread` and turns a `BulkFailure` into the upload's `failed` status and reason.

Column keys travel in the header labels: every label of every language (and the key itself,
e.g. `serial_number`) maps back to its key through `COLUMNS`, case, spacing and a trailing `*`
ignored. So a German template filled in and uploaded by an English user still reads, and the
header needs no hidden row or defined name that a user could delete without noticing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from io import BytesIO
from typing import Any, Final, Literal

import openpyxl  # type: ignore[import-untyped, unused-ignore]
from openpyxl.cell.cell import WriteOnlyCell  # type: ignore[import-untyped, unused-ignore]
from openpyxl.styles import Alignment, Font, PatternFill  # type: ignore[import-untyped, unused-ignore]
from openpyxl.utils import get_column_letter  # type: ignore[import-untyped, unused-ignore]
from openpyxl.worksheet.datavalidation import DataValidation  # type: ignore[import-untyped, unused-ignore]

from contracts.spreadsheets import (
    EXCEL_MAX_ROWS,
    MAX_UNCOMPRESSED_BYTES,
    Unreadable,
    inspect_package,
    max_part_bytes,
    read_value,
    safe_text,
    saved,
    sheet_values,
)

Language = Literal["de", "en", "nb"]
LANGUAGES: Final[tuple[Language, ...]] = ("de", "en", "nb")

# CATALOG §3 and the OKI handbook: "Please restrict the number of devices to 25."
MAX_DEVICES: Final = 25
FailureReason = Literal[
    "file_too_large", "not_a_spreadsheet", "spreadsheet_too_large", "too_many_rows", "missing_columns",
    "duplicate_columns",
]



@dataclass(frozen=True, slots=True)
class Column:
    key: str
    required: bool
    width: int
    labels: dict[Language, str]
    help: dict[Language, str]
    example: str | date | dict[Language, str]
    text: bool = False  # formatted as text, so Excel keeps leading zeros and long serials as typed
    yes_no: bool = False  # a list of the language's yes and no in the template


# What a user types or picks to accept the warranty statement in a row: the yes word of every language, Excel's
# TRUE (a boolean cell, whatever the language Excel speaks), 1 or a cross. Case and blanks are ignored.
YES_WORDS: Final = frozenset({"ja", "yes", "true", "1", "x"})


COLUMNS: Final[tuple[Column, ...]] = (
    Column("serial_number", True, 18,
           {"de": "Seriennummer", "en": "Serial number", "nb": "Serienummer"},
           {"de": "Die Seriennummer vom Typenschild des Geräts.",
            "en": "The serial number from the device's type plate.",
            "nb": "Serienummeret fra enhetens typeskilt."},
           "AK6C004746", text=True),
    Column("purchase_date", True, 14,
           {"de": "Kaufdatum", "en": "Purchase date", "nb": "Kjøpsdato"},
           {"de": "Das Kaufdatum als Datum, nicht in der Zukunft. Innerhalb von 30 Tagen nach dem Kauf "
                  "registriert, verlängert sich die Garantie.",
            "en": "The date of purchase, as a date, not in the future. Registered within 30 days of purchase, "
                  "the device gets the extended warranty.",
            "nb": "Kjøpsdatoen som dato, ikke i fremtiden. Registreres enheten innen 30 dager etter kjøpet, "
                  "får den utvidet garanti."},
           date(2024, 4, 16)),
    Column("friendly_name", False, 22,
           {"de": "Gerätename", "en": "Device name", "nb": "Enhetsnavn"},
           {"de": "Optional: ein Name, unter dem Sie das Gerät im Portal wiederfinden.",
            "en": "Optional: a name to recognise the device by in the portal.",
            "nb": "Valgfritt: et navn som gjør enheten lett å kjenne igjen i portalen."},
           "Drucker 2. OG"),
    Column("building_location", False, 22,
           {"de": "Standort im Gebäude", "en": "Location in building", "nb": "Plassering i bygget"},
           {"de": "Optional: wo im Gebäude das Gerät steht, z. B. Empfang.",
            "en": "Optional: where in the building the device stands, e.g. reception.",
            "nb": "Valgfritt: hvor i bygget enheten står, f.eks. resepsjonen."},
           "Empfang"),
    Column("contact_name", False, 22,
           {"de": "Ansprechpartner", "en": "Contact name", "nb": "Kontaktperson"},
           {"de": "Optional: wer vor Ort für das Gerät ansprechbar ist.",
            "en": "Optional: the person to contact about the device on site.",
            "nb": "Valgfritt: hvem som kan kontaktes om enheten på stedet."},
           "Erika Mustermann"),
    Column("street", False, 26,
           {"de": "Straße", "en": "Street", "nb": "Gateadresse"},
           {"de": "Straße und Hausnummer des Standorts. Bleiben alle Adressspalten leer, gilt die Kontaktadresse "
                  "aus Ihrem Profil.",
            "en": "Street and number where the device stands. Leave every address column empty to use the contact "
                  "address of your profile.",
            "nb": "Gate og husnummer der enheten står. La alle adressekolonnene stå tomme for å bruke "
                  "kontaktadressen i profilen din."},
           "Hauptstraße 1"),
    Column("postal_code", False, 12,
           {"de": "Postleitzahl", "en": "Postal code", "nb": "Postnummer"},
           {"de": "Die Postleitzahl des Standorts.", "en": "The postal code of the location.",
            "nb": "Postnummeret til stedet."},
           "01067", text=True),
    Column("city", False, 18,
           {"de": "Ort", "en": "City", "nb": "Poststed"},
           {"de": "Der Ort des Standorts.", "en": "The city of the location.", "nb": "Poststedet til stedet."},
           "Dresden"),
    Column("country", False, 10,
           {"de": "Land", "en": "Country", "nb": "Land"},
           {"de": "Das Land als Kürzel mit zwei Buchstaben, z. B. DE, AT, CH.",
            "en": "The country as a two-letter code, e.g. DE, GB, NO.",
            "nb": "Landet som kode på to bokstaver, f.eks. NO, SE, DK."},
           "DE"),
    Column("end_customer_name", False, 24,
           {"de": "Endkunde", "en": "End customer", "nb": "Sluttkunde"},
           {"de": "Nur für Händler: der Firmenname des Endkunden, für den Sie registrieren.",
            "en": "Dealers only: the company name of the end customer you register for.",
            "nb": "Kun for forhandlere: firmanavnet til sluttkunden du registrerer for."},
           "Muster GmbH"),
    Column("end_customer_email", False, 28,
           {"de": "E-Mail des Endkunden", "en": "End customer e-mail", "nb": "Sluttkundens e-post"},
           {"de": "Nur für Händler: die E-Mail-Adresse des Endkunden.",
            "en": "Dealers only: the end customer's e-mail address.",
            "nb": "Kun for forhandlere: sluttkundens e-postadresse."},
           "it@muster.example"),
    # The OKI form asks every device to have the manufacturer's warranty statement accepted; a row carries its own
    # acceptance here, as the form does. `warranty_accepted` of the upload accepts it for every row instead.
    Column("warranty_accepted", False, 16,
           {"de": "Garantieerklärung akzeptiert", "en": "Warranty statement accepted",
            "nb": "Garantierklæring godtatt"},
           {"de": "„ja“, wenn Sie die Garantieerklärung des Herstellers für dieses Gerät gelesen haben und "
                  "akzeptieren (auch WAHR, 1 oder x). Zeilen ohne Zustimmung werden nicht registriert.",
            "en": "“yes” if you have read and accept the manufacturer's warranty statement for this device (TRUE, 1 "
                  "or x also do). Rows without it are not registered.",
            "nb": "«ja» hvis du har lest og godtar produsentens garantierklæring for denne enheten (også SANN, 1 "
                  "eller x). Rader uten godkjenning blir ikke registrert."},
           {"de": "ja", "en": "yes", "nb": "ja"}, yes_no=True),
)
COLUMN_KEYS: Final[tuple[str, ...]] = tuple(column.key for column in COLUMNS)
REQUIRED_KEYS: Final[tuple[str, ...]] = tuple(column.key for column in COLUMNS if column.required)

DATA_SHEET: Final[dict[Language, str]] = {"de": "Geräte", "en": "Devices", "nb": "Enheter"}
INSTRUCTIONS_SHEET: Final[dict[Language, str]] = {"de": "Anleitung", "en": "Instructions", "nb": "Instruksjoner"}
RESULT_COLUMNS: Final = ("result", "message")

_TEXT: Final[dict[Language, dict[str, str]]] = {
    "en": {
        "title": "Registering several devices",
        "rows": "Enter one device per row on the sheet “{sheet}”, below the header row. At most {limit} devices "
                "per file: a file with more is refused as a whole.",
        "header": "Keep the header row; you may leave out or reorder optional columns. Columns marked * are "
                  "required.",
        "upload": "Upload the saved file under “Add multiple devices”. Each row is registered or rejected on its "
                  "own; the result file, with the columns “result” and “message”, is sent by e-mail and can be "
                  "downloaded from the portal.",
        "column": "Column", "required": "Required", "description": "Description", "example": "Example",
        "yes": "yes", "no": "no",
        "date_title": "Purchase date", "date_prompt": "A date from 2000 on, not in the future.",
        "date_error": "Enter the purchase date as a date, from 2000 on and not in the future.",
        "warranty_title": "Warranty statement",
        "warranty_prompt": "Pick “yes” to accept the manufacturer's warranty statement for this device.",
        "warranty": "Accept the manufacturer's warranty statement for each device with “yes” in the column "
                    "“{column}”; rows without it are not registered. If you accepted it for the whole file when "
                    "uploading, the column may stay empty.",
    },
    "de": {
        "title": "Registrierung mehrerer Geräte",
        "rows": "Tragen Sie auf dem Blatt „{sheet}“ unter der Kopfzeile ein Gerät pro Zeile ein. Höchstens {limit} "
                "Geräte pro Datei: eine Datei mit mehr Geräten wird als Ganzes abgelehnt.",
        "header": "Lassen Sie die Kopfzeile stehen; optionale Spalten dürfen fehlen oder umgestellt werden. Mit * "
                  "markierte Spalten sind Pflicht.",
        "upload": "Laden Sie die gespeicherte Datei unter „Mehrere Geräte hinzufügen“ hoch. Jede Zeile wird für "
                  "sich registriert oder abgelehnt; die Ergebnisdatei mit den Spalten „result“ und „message“ "
                  "erhalten Sie per E-Mail und im Portal.",
        "column": "Spalte", "required": "Pflicht", "description": "Beschreibung", "example": "Beispiel",
        "yes": "ja", "no": "nein",
        "date_title": "Kaufdatum", "date_prompt": "Ein Datum ab 2000, nicht in der Zukunft.",
        "date_error": "Bitte das Kaufdatum als Datum eingeben, ab 2000 und nicht in der Zukunft.",
        "warranty_title": "Garantieerklärung",
        "warranty_prompt": "Wählen Sie „ja“, um die Garantieerklärung des Herstellers für dieses Gerät zu "
                           "akzeptieren.",
        "warranty": "Akzeptieren Sie die Garantieerklärung des Herstellers für jedes Gerät mit „ja“ in der Spalte "
                    "„{column}“; Zeilen ohne Zustimmung werden nicht registriert. Haben Sie sie beim Hochladen für "
                    "die ganze Datei akzeptiert, darf die Spalte leer bleiben.",
    },
    "nb": {
        "title": "Registrering av flere enheter",
        "rows": "Før opp én enhet per rad på arket «{sheet}», under overskriftsraden. Høyst {limit} enheter per "
                "fil: en fil med flere blir avvist i sin helhet.",
        "header": "Behold overskriftsraden; valgfrie kolonner kan utelates eller flyttes. Kolonner merket * er "
                  "obligatoriske.",
        "upload": "Last opp den lagrede filen under «Legg til flere enheter». Hver rad registreres eller avvises "
                  "for seg; resultatfilen, med kolonnene «result» og «message», sendes på e-post og kan lastes "
                  "ned fra portalen.",
        "column": "Kolonne", "required": "Obligatorisk", "description": "Beskrivelse", "example": "Eksempel",
        "yes": "ja", "no": "nei",
        "date_title": "Kjøpsdato", "date_prompt": "En dato fra 2000, ikke i fremtiden.",
        "date_error": "Skriv kjøpsdatoen som dato, fra 2000 og ikke i fremtiden.",
        "warranty_title": "Garantierklæring",
        "warranty_prompt": "Velg «ja» for å godta produsentens garantierklæring for denne enheten.",
        "warranty": "Godta produsentens garantierklæring for hver enhet med «ja» i kolonnen «{column}»; rader uten "
                    "godkjenning blir ikke registrert. Godtok du den for hele filen ved opplastingen, kan kolonnen "
                    "stå tom.",
    },
}
_DATE_FORMAT: Final[dict[Language, str]] = {"de": "DD.MM.YYYY", "en": "YYYY-MM-DD", "nb": "DD.MM.YYYY"}


def _normalise_label(label: str) -> str:
    return " ".join(label.replace("*", " ").split()).casefold()


def _keys_by_label() -> dict[str, str]:
    keys: dict[str, str] = {}
    for column in COLUMNS:
        for label in (column.key, *column.labels.values()):
            known = keys.setdefault(_normalise_label(label), column.key)
            if known != column.key:
                raise ValueError(f"header label {label!r} means both {known} and {column.key}")
    return keys


_KEY_BY_LABEL: Final = _keys_by_label()


@dataclass(frozen=True, slots=True)
class BulkRow:
    number: int  # the row's number on the sheet, as the user sees it
    values: dict[str, object]  # every key of COLUMNS; None where blank or where the upload lacks the column
    cells: tuple[object, ...]  # the row as uploaded, aligned with BulkRows.header, for the result file


@dataclass(frozen=True, slots=True)
class BulkRows:
    header: tuple[str, ...]  # the labels as uploaded, up to the last non-empty one
    keys: tuple[str | None, ...]  # the column key of each header cell, None for a column we do not know
    rows: tuple[BulkRow, ...]


@dataclass(frozen=True, slots=True)
class BulkFailure:
    reason: FailureReason
    columns: tuple[str, ...] = ()  # the column keys concerned, for missing_columns and duplicate_columns
    detail: str = ""  # for the log, in English; never file contents


def language_of(language: str) -> Language:
    """`de`, `en`, `nb` (also as `de-AT`, `nb_NO`); anything else is English, as CATALOG §1 says."""
    primary = language.strip().replace("_", "-").split("-")[0].casefold()
    for known in LANGUAGES:
        if primary == known:
            return known
    return "en"


def bulk_template(language: str, *, max_rows: int = MAX_DEVICES) -> bytes:
    """The xlsx users fill in: a data sheet with the header of COLUMNS, and a sheet explaining each column."""
    lang = language_of(language)
    text = _TEXT[lang]
    workbook = openpyxl.Workbook()
    sheet: Any = workbook.active  # a new workbook's only worksheet
    sheet.title = DATA_SHEET[lang]
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    for index, column in enumerate(COLUMNS, start=1):
        label = column.labels[lang] + (" *" if column.required else "")
        cell = sheet.cell(row=1, column=index, value=label)
        cell.font, cell.fill = bold, fill
        cell.alignment = Alignment(vertical="center")
        letter = get_column_letter(index)
        dimension = sheet.column_dimensions[letter]
        dimension.width = column.width
        if column.text:
            dimension.number_format = "@"
        if isinstance(column.example, date):
            dimension.number_format = _DATE_FORMAT[lang]
            sheet.add_data_validation(_purchase_date_validation(letter, text))
        if column.yes_no:
            sheet.add_data_validation(_yes_no_validation(letter, text))
    sheet.freeze_panes = "A2"

    guide = workbook.create_sheet(INSTRUCTIONS_SHEET[lang])
    guide.column_dimensions["A"].width = 26
    guide.column_dimensions["B"].width = 12
    guide.column_dimensions["C"].width = 80
    guide.column_dimensions["D"].width = 20
    guide["A1"] = text["title"]
    guide["A1"].font = Font(bold=True, size=14)
    warranty_column = next(column for column in COLUMNS if column.key == "warranty_accepted")
    paragraphs = (text["rows"].format(sheet=DATA_SHEET[lang], limit=max_rows), text["header"],
                  text["warranty"].format(column=warranty_column.labels[lang]), text["upload"])
    for row, paragraph in enumerate(paragraphs, start=2):
        guide.cell(row=row, column=1, value=paragraph)
    table = len(paragraphs) + 3
    for index, heading in enumerate(("column", "required", "description", "example"), start=1):
        guide.cell(row=table, column=index, value=text[heading]).font = bold
    for row, column in enumerate(COLUMNS, start=table + 1):
        guide.cell(row=row, column=1, value=column.labels[lang])
        guide.cell(row=row, column=2, value=text["yes" if column.required else "no"])
        guide.cell(row=row, column=3, value=column.help[lang]).alignment = Alignment(wrap_text=True, vertical="top")
        example = guide.cell(row=row, column=4, value=column.example[lang] if isinstance(column.example, dict)
                             else column.example)
        if isinstance(column.example, date):
            example.number_format = _DATE_FORMAT[lang]
        elif column.text:
            example.number_format = "@"
    return saved(workbook)


def _purchase_date_validation(letter: str, text: dict[str, str]) -> Any:
    # A data validation formula is evaluated when a cell is edited, so TODAY() keeps future dates out in Excel
    # and LibreOffice; the service still checks, since other tools ignore validations.
    validation = DataValidation(type="date", operator="between", formula1="DATE(2000,1,1)", formula2="TODAY()",
                                allow_blank=True, showInputMessage=True, showErrorMessage=True,
                                promptTitle=text["date_title"], prompt=text["date_prompt"],
                                errorTitle=text["date_title"], error=text["date_error"])
    validation.add(f"{letter}2:{letter}{EXCEL_MAX_ROWS}")
    return validation


def _yes_no_validation(letter: str, text: dict[str, str]) -> Any:
    # A list to pick from, not a rule: typing TRUE, 1 or x must still be possible, so Excel shows no error.
    validation = DataValidation(type="list", formula1=f'"{text["yes"]},{text["no"]}"', allow_blank=True,
                                showInputMessage=True, showErrorMessage=False, promptTitle=text["warranty_title"],
                                prompt=text["warranty_prompt"])
    validation.add(f"{letter}2:{letter}{EXCEL_MAX_ROWS}")
    return validation


def accepts(value: object) -> bool:
    """Whether a cell says yes: the yes word of de, en or nb, TRUE (a boolean cell or the word), 1 or x."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return isinstance(value, str) and value.strip().casefold() in YES_WORDS


def read_bulk_rows(content: bytes, *, max_rows: int, max_bytes: int,
                   max_uncompressed: int = MAX_UNCOMPRESSED_BYTES) -> BulkRows | BulkFailure:
    """The devices of an uploaded xlsx, or why the whole file is refused.

    Cheapest checks first: the byte size, then the zip's directory (a real xlsx, unpacking to a sane size),
    and only then openpyxl, streaming the sheet and stopping at the first row over `max_rows`.
    """
    if len(content) > max_bytes:
        return BulkFailure("file_too_large", detail=f"{len(content)} bytes, at most {max_bytes}")
    refused = inspect_package(content, max_uncompressed=max_uncompressed, max_part=max_part_bytes(max_rows))
    if refused is not None:
        return BulkFailure(refused.reason, detail=refused.detail)
    try:
        workbook = openpyxl.load_workbook(BytesIO(content), read_only=True, data_only=True)
    except Exception as error:  # a malformed package can raise almost anything inside openpyxl
        return BulkFailure("not_a_spreadsheet", detail=f"openpyxl: {type(error).__name__}")
    try:
        return _read_rows(workbook, max_rows)
    except Unreadable as error:
        return BulkFailure("not_a_spreadsheet", detail=f"openpyxl: {type(error.__cause__).__name__}")
    finally:
        workbook.close()


def _read_rows(workbook: Any, max_rows: int) -> BulkRows | BulkFailure:
    titles = set(DATA_SHEET.values())
    sheets = [sheet for sheet in workbook.worksheets if sheet.title in titles] or workbook.worksheets[:1]
    if not sheets:
        return BulkFailure("missing_columns", REQUIRED_KEYS, detail="no worksheet")
    sheet = sheets[0]
    # The stated dimension is the file's claim, not a fact: openpyxl pads every row to it and appends empty rows
    # up to it, so a claim of A1:XFD1000000000 would cost hours. Without it, only the XML's own rows are read.
    sheet.reset_dimensions()
    header: tuple[str, ...] | None = None
    keys: tuple[str | None, ...] = ()
    rows: list[BulkRow] = []
    blank: object = None
    for number, cells in enumerate(sheet_values(sheet), start=1):
        if number > EXCEL_MAX_ROWS:  # only a row numbered past Excel's last one gets here, after gap-filling
            return BulkFailure("spreadsheet_too_large", detail="a row past Excel's last row")
        if cells is blank:  # openpyxl yields one shared tuple for every row missing from the XML
            continue
        values = tuple(read_value(value) for value in cells)
        if all(value is None for value in values):
            blank = cells
            continue
        if header is None:
            header, keys = _header(values)
            refused = _check_header(keys)
            if refused is not None:
                return refused
            continue
        if len(rows) == max_rows:
            return BulkFailure("too_many_rows", detail=f"more than {max_rows} rows")
        found: dict[str, object] = dict.fromkeys(COLUMN_KEYS)
        for key, value in zip(keys, values, strict=False):
            if key is not None:
                found[key] = value
        rows.append(BulkRow(number, found, values[:len(header)]))
    if header is None:
        return BulkFailure("missing_columns", REQUIRED_KEYS, detail="no header row")
    return BulkRows(header, keys, tuple(rows))


def _header(values: tuple[object, ...]) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    width = max(index for index, value in enumerate(values, start=1) if value is not None)
    labels = tuple("" if value is None else str(value) for value in values[:width])
    return labels, tuple(_KEY_BY_LABEL.get(_normalise_label(label)) for label in labels)


def _check_header(keys: tuple[str | None, ...]) -> BulkFailure | None:
    missing = tuple(key for key in REQUIRED_KEYS if key not in keys)
    if missing:
        return BulkFailure("missing_columns", missing, detail="required columns not in the header")
    present = [key for key in keys if key is not None]
    duplicated = tuple(key for key in COLUMN_KEYS if present.count(key) > 1)
    if duplicated:
        return BulkFailure("duplicate_columns", duplicated, detail="columns given twice")
    return None


def result_workbook(header: Sequence[str], rows: Iterable[tuple[Sequence[object], str, str]]) -> bytes:
    """The uploaded rows, each followed by its `result` and `message`, every cell safe to open in Excel."""
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Results")
    width = len(header)
    for index in range(1, width + 1):
        sheet.column_dimensions[get_column_letter(index)].width = 18
    sheet.column_dimensions[get_column_letter(width + 2)].width = 60
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    labels = [*header, *RESULT_COLUMNS]
    heading = []
    for label in labels:
        cell = WriteOnlyCell(sheet, value=safe_text(label))
        cell.font = bold
        heading.append(cell)
    sheet.append(heading)
    padding: list[object] = [None] * width
    for cells, result, message in rows:
        values = [_result_value(value) for value in cells[:width]]
        values.extend(padding[len(values):])
        values.extend((_result_value(result), _result_value(message)))
        sheet.append(values)
    return saved(workbook)


def _result_value(value: object) -> object:
    # Excel has no time zones; the portal's timestamps are UTC.
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, time) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    if value is None or isinstance(value, bool | int | float | Decimal | date | time | timedelta):
        return value
    return safe_text(value if isinstance(value, str) else str(value))
