"""The pages' languages: gettext catalogues (`translations/<lang>/*.po`, kept with Babel) and the language a request
is shown in.

The `.po` files are read when the gateway starts and compiled in memory, so no compiled `.mo` is kept in the tree
and a translation edited is a translation shown.
"""

from __future__ import annotations

from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from contracts.errors import DEFAULT_LANGUAGE, LANGUAGES, negotiate_language

TRANSLATIONS = Path(__file__).parent / "translations"
LANGUAGE_COOKIE = "portal_lang"
# Each language named in itself, as a picker shows them (OKI's step 2).
LANGUAGE_NAMES = {"de": "Deutsch", "en": "English", "nb": "Norsk bokmål"}


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
