"""Error codes of the catalogue and their messages in every supported language."""

from __future__ import annotations

from enum import StrEnum

LANGUAGES = ("en", "de", "nb")
DEFAULT_LANGUAGE = "en"


class ErrorCode(StrEnum):
    """Generic codes, valid for every command (CATALOG §1); services add their own below."""

    INVALID_MESSAGE = "invalid_message"
    VALIDATION_FAILED = "validation_failed"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


MESSAGES: dict[str, dict[str, str]] = {
    ErrorCode.INVALID_MESSAGE: {
        "en": "The message body is not a UTF-8 JSON object.",
        "de": "Der Nachrichteninhalt ist kein UTF-8-JSON-Objekt.",
        "nb": "Meldingen er ikke et JSON-objekt i UTF-8.",
    },
    ErrorCode.VALIDATION_FAILED: {
        "en": "Some fields are missing or invalid.",
        "de": "Einige Felder fehlen oder sind ungültig.",
        "nb": "Noen felt mangler eller er ugyldige.",
    },
    ErrorCode.UNAUTHENTICATED: {
        "en": "Please sign in again.",
        "de": "Bitte melden Sie sich erneut an.",
        "nb": "Vennligst logg inn på nytt.",
    },
    ErrorCode.FORBIDDEN: {
        "en": "You are not allowed to do this.",
        "de": "Dazu sind Sie nicht berechtigt.",
        "nb": "Du har ikke tilgang til dette.",
    },
    ErrorCode.NOT_FOUND: {
        "en": "Not found.",
        "de": "Nicht gefunden.",
        "nb": "Ikke funnet.",
    },
    ErrorCode.CONFLICT: {
        "en": "This conflicts with the current state; please reload and try again.",
        "de": "Das widerspricht dem aktuellen Stand; bitte neu laden und erneut versuchen.",
        "nb": "Dette er i konflikt med gjeldende tilstand; last inn på nytt og prøv igjen.",
    },
    ErrorCode.RATE_LIMITED: {
        "en": "Too many requests; please wait a moment.",
        "de": "Zu viele Anfragen; bitte warten Sie einen Moment.",
        "nb": "For mange forespørsler; vent litt.",
    },
    ErrorCode.INTERNAL: {
        "en": "Something went wrong on our side; nothing was changed. Please try again.",
        "de": "Bei uns ist ein Fehler aufgetreten; nichts wurde geändert. Bitte erneut versuchen.",
        "nb": "Noe gikk galt hos oss; ingenting ble endret. Prøv igjen.",
    },
}


def negotiate_language(header: str | None) -> str:
    """The first supported language of an `accept-language` header (`de`, `en`, `nb`), else `en`."""
    if not header:
        return DEFAULT_LANGUAGE
    for part in header.split(","):
        primary = part.split(";")[0].strip().lower().split("-")[0]
        if primary in ("no", "nn"):  # Norwegian without a written standard: Bokmål is what we have
            primary = "nb"
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def message_for(code: str, language: str) -> str:
    texts = MESSAGES.get(code)
    if texts is None:
        return code.replace("_", " ").capitalize() + "."
    return texts.get(language) or texts[DEFAULT_LANGUAGE]
