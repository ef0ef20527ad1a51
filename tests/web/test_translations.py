"""Every text the pages show has its German and Norwegian translation, with the same placeholders; and the language
a page is shown in follows the picker, then the browser."""

from __future__ import annotations

import re

import pytest

from gateway.web import i18n

PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@pytest.mark.parametrize("language", ["de", "nb"])
def test_every_text_of_the_pages_is_translated_with_its_placeholders(language: str) -> None:
    catalogue = i18n.translations(language)
    missing, broken = [], []
    for message, where in i18n.used_messages().items():
        singular = message if isinstance(message, str) else message[0]
        translated = (catalogue.gettext(singular) if isinstance(message, str)
                      else catalogue.ngettext(message[0], message[1], 2))
        if translated == singular and language != "en" and singular not in SAME_IN_EVERY_LANGUAGE:
            missing.append(f"{where}: {singular!r}")
        elif set(PLACEHOLDER.findall(translated)) != set(PLACEHOLDER.findall(singular)):
            broken.append(f"{where}: {singular!r} → {translated!r}")
    assert not missing, f"{len(missing)} texts without a {language} translation:\n" + "\n".join(missing)
    assert not broken, "placeholders differ:\n" + "\n".join(broken)


# Words that are spelt alike in English and the language (a check that they were looked at, not forgotten).
SAME_IN_EVERY_LANGUAGE = {"Status", "optional"}


@pytest.mark.parametrize(("query", "cookie", "header", "expected"), [
    ("nb", "de", "en-GB", "nb"),  # picked now
    (None, "de", "en-GB", "de"),  # picked before
    ("xx", None, "nb-NO,de;q=0.5", "nb"),  # an unknown pick is no pick
    (None, None, "no", "nb"),  # Norwegian: Bokmål
    (None, None, "fr-FR", "en"),
])
def test_the_page_language_is_the_picked_one_else_the_browsers(query: str | None, cookie: str | None, header: str,
                                                               expected: str) -> None:
    assert i18n.language_for(query, cookie, header) == expected


@pytest.mark.parametrize("language", ["de", "nb"])
def test_no_catalogue_keeps_a_text_no_page_shows_any_more(language: str) -> None:
    from babel.messages.pofile import read_po

    used = {message if isinstance(message, str) else message[0] for message in i18n.used_messages()}
    stale = []
    for source in sorted((i18n.TRANSLATIONS / language).glob("*.po")):
        with source.open("rb") as file:
            stale += [f"{source.name}: {entry.id!r}" for entry in read_po(file, locale=language)
                      if entry.id and (entry.id if isinstance(entry.id, str) else entry.id[0]) not in used]
    assert not stale, "translations of texts no page shows:\n" + "\n".join(stale)
