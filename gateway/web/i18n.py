"""The pages' languages: gettext catalogues (`translations/<lang>/*.po`, kept with Babel), the language a request
is shown in, and dates, times and numbers written as a reader of that language expects.

The `.po` files are read when the gateway starts and compiled in memory, so no compiled `.mo` is kept in the tree
and a translation edited is a translation shown.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_skeleton, format_time, get_datetime_format
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

from contracts.errors import DEFAULT_LANGUAGE, LANGUAGES, negotiate_language

TRANSLATIONS = Path(__file__).parent / "translations"
LANGUAGE_COOKIE = "portal_lang"
# Each language named in itself, as a picker shows them (OKI's step 2).
LANGUAGE_NAMES = {"de": "Deutsch", "en": "English", "nb": "Norsk bokmål"}
# The vendor's readers are European: English as in Britain (25 Mar 2015, 18:20), never the US's 3/25/15, 6:20 PM.
LOCALES = {"de": "de_DE", "en": "en_GB", "nb": "nb_NO"}
# Each language's usual date: 25.03.2015 (de, nb) and 25 Mar 2015 (en); nb's "medium" spells the month out.
DAY_FORMATS = {"de": "medium", "en": "medium", "nb": "short"}


def N_(text: str) -> str:
    """Marks a text for the catalogues where it is defined; it is translated where it is shown."""
    return text


@cache
def translations(language: str) -> NullTranslations:
    """The catalogue of a language; English is the templates' own text."""
    sources = sorted((TRANSLATIONS / language).glob("*.po"))
    if language == DEFAULT_LANGUAGE or not sources:
        return NullTranslations()
    catalog = Catalog(locale=language)
    for source in sources:  # one file per part of the portal; together one catalogue
        with source.open("rb") as file:
            for message in read_po(file, locale=language):
                if message.id and message.id not in catalog:
                    catalog[message.id] = message
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def language_for(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """A language chosen on the page (the query, then the cookie it left), else the browser's."""
    for chosen in (query, cookie):
        if chosen in LANGUAGES:
            return chosen
    return negotiate_language(accept_language)


def used_messages() -> dict[str | tuple[str, ...], str]:
    """Every text the templates and page modules mark for translation (gettext and ngettext), where it is used."""
    from babel.messages.extract import extract_from_dir

    found: dict[str | tuple[str, ...], str] = {}
    methods = [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    for filename, line, message, _comments, _context in extract_from_dir(
            Path(__file__).parent, methods, options_map=options, keywords={"_": None, "gettext": None, "N_": None,
                                                                           "ngettext": (1, 2)}):
        found.setdefault(message, f"{filename}:{line}")
    return found


# --- dates, times and numbers ---------------------------------------------------------------------------------------

def when_of(value: object) -> date | datetime | None:
    """A date or a moment from a reply (`YYYY-MM-DD`, ISO 8601; a moment without zone is UTC, as the catalogue's
    are), else None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def shown_day(value: object, language: str, zone: str) -> str:
    """A date as the language writes it; a moment's date where the portal is (`zone`). What does not parse is shown
    as it came: a page never fails over a date."""
    when = when_of(value)
    if when is None:
        return "" if value is None else str(value)
    if isinstance(when, datetime):
        when = when.astimezone(ZoneInfo(zone)).date()
    return format_date(when, DAY_FORMATS.get(language, "medium"), locale=LOCALES.get(language, "en_GB"))


def shown_moment(value: object, language: str, zone: str) -> str:
    """A moment in the portal's zone, the zone named (04.12.2026, 18:20 MEZ); a bare date as `shown_day`."""
    when = when_of(value)
    if not isinstance(when, datetime):
        return shown_day(value, language, zone)
    locale = LOCALES.get(language, "en_GB")
    local = when.astimezone(ZoneInfo(zone))
    time = format_time(local, "short", locale=locale)
    # The zone's short name (MEZ, CET, UTC); where a language has none for it, its offset (-0500), never the long
    # name Babel gives instead for some (en: "Eastern Standard Time").
    name = format_time(local, "z", tzinfo=local.tzinfo, locale=locale)
    if " " in name:
        name = format_time(local, "Z", tzinfo=local.tzinfo, locale=locale)
    written = str(get_datetime_format("medium", locale=locale)).format(time, shown_day(local, language, zone))
    return f"{written} {name}"


def shown_month(value: object, language: str) -> str:
    """The month of a date, in digits (03.2026, 03/2026): short enough to sit under a chart's bar."""
    when = when_of(value)
    if when is None:
        return "" if value is None else str(value)
    return format_skeleton("yMM", when, locale=LOCALES.get(language, "en_GB"))


def shown_count(value: Any, language: str) -> str:
    """A whole number with the language's thousands separator (12.345, 12 345, 12,345)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "" if value is None else str(value)
    try:
        number = int(value) if not isinstance(value, float) else value
    except ValueError:
        return str(value)
    return format_decimal(number, locale=LOCALES.get(language, "en_GB"))
