"""Refusals as RFC 9457 problem details, and the one table from catalogue error codes to HTTP statuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from contracts.errors import ErrorCode, message_for
from gateway.settings import GatewaySettings

PROBLEM_JSON = "application/problem+json"
# Not a catalogue code: the gateway's own refusals.
NO_SERVICE = "service_unavailable"
BODY_TOO_LARGE = "body_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
METHOD_NOT_ALLOWED = "method_not_allowed"

# Every catalogue code not named here is a domain refusal (`email_taken`, `already_dispatched`, ...): 409.
STATUS_OF_CODE: dict[str, int] = {
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    METHOD_NOT_ALLOWED: 405,
    BODY_TOO_LARGE: 413,
    UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    NO_SERVICE: 503,
}
DOMAIN_REFUSAL_STATUS = 409
# A `rate_limited` naming no field is a limit that runs in a window of 15 minutes (registration's failed claims):
# trying again before it ends is refused again, and no service tells its window's end, so the longest is said. One
# naming the field it refuses is a cap no wait lifts (ticketing's 40 notes a ticket): no `Retry-After` for it.
RATE_LIMIT_WINDOW_SECONDS = 15 * 60

OWN_MESSAGES: dict[str, dict[str, str]] = {
    NO_SERVICE: {
        "en": "The service is not available at the moment; please try again shortly.",
        "de": "Der Dienst ist im Moment nicht erreichbar; bitte versuchen Sie es gleich noch einmal.",
        "nb": "Tjenesten er ikke tilgjengelig akkurat nå; prøv igjen om litt.",
    },
    METHOD_NOT_ALLOWED: {
        "en": "This resource does not support this method.",
        "de": "Diese Ressource unterstützt diese Methode nicht.",
        "nb": "Denne ressursen støtter ikke denne metoden.",
    },
    UNSUPPORTED_MEDIA_TYPE: {
        "en": "Please send this request as JSON, or as multipart form data where it carries a file.",
        "de": "Bitte senden Sie diese Anfrage als JSON oder, wenn sie eine Datei enthält, als Multipart-Formulardaten.",
        "nb": "Send denne forespørselen som JSON, eller som multipart-skjemadata når den inneholder en fil.",
    },
    BODY_TOO_LARGE: {
        "en": "The request is too large.",
        "de": "Die Anfrage ist zu groß.",
        "nb": "Forespørselen er for stor.",
    },
}


def status_of(code: str) -> int:
    return STATUS_OF_CODE.get(code, DOMAIN_REFUSAL_STATUS)


def retry_after(status: int, settings: GatewaySettings, refused: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `Retry-After` (seconds) of an answer that asks to come back later: a 503 (no service answered in time)
    and a 429 (a service's limit) whose refusal names no field (`refused`), as a cap does; none for any other
    status. The API's problems and the pages both say it."""
    if status == 429 and refused:
        return {}
    seconds = {503: settings.gateway_retry_after_seconds, 429: RATE_LIMIT_WINDOW_SECONDS}.get(status)
    return {"Retry-After": str(seconds)} if seconds else {}


class Problem(BaseModel):
    """RFC 9457 problem details, with the catalogue's error fields beside the standard ones."""

    type: str = Field(description="`urn:portal:problem:<code>`.", examples=["urn:portal:problem:not_found"])
    title: str = Field(description="The code in words (English).", examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(description="Same as `message`.")
    code: str = Field(description="The catalogue's error code.", examples=["not_found"])
    message: str = Field(description="What went wrong, in the request's language (`Accept-Language`).")
    fields: dict[str, str] = Field(default_factory=dict, description="Bad fields by their dotted path.")


def problem(code: str, language: str, *, message: str | None = None, fields: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """The response refusing a request with `code`; `message` is the service's, else the catalogue's text."""
    own = OWN_MESSAGES.get(code)
    text = message or (own.get(language) or own["en"] if own else message_for(code, language))
    status = status_of(code)
    body: dict[str, Any] = Problem(type=f"urn:portal:problem:{code}", title=code.replace("_", " ").capitalize(),
                                   status=status, detail=text, code=code, message=text,
                                   fields=fields or {}).model_dump()
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON,
                        headers={"Content-Language": language, **(headers or {})})
