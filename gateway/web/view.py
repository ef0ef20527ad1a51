"""What every page shares: the request's language and session, rendering with the vendor's brand, the form token,
calling a command, and turning a refusal into messages next to the form's fields.

Pages are rendered on the server and every form works without script: a form posts, the page answers with the
next page or with the same form, its values kept and each refused field marked.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache, partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from contracts.base import MAX_PAGE, FileObject
from contracts.client import NotDelivered, PortalClient, PortalError
from contracts.errors import LANGUAGES, ErrorCode, message_for
from gateway.cookies import FORM_COOKIE, cookie_name, csrf_token, session_of
from gateway.files import uploaded
from gateway.problems import retry_after
from gateway.settings import GatewaySettings
from gateway.web import i18n
from gateway.web.i18n import N_

TEMPLATES = Path(__file__).parent / "templates"
FORM_FIELD = "csrf"
ACCOUNT_COOKIE = "portal_account"  # "contract" after a contract's sign-in: the pages offer no profile then


class FormRefused(Exception):
    """A form post without this browser's form token: another site's form, or a page kept open across a sign-in."""


class SignInNeeded(Exception):
    """The page needs a session and the request has none, or one that expired."""


@cache
def environment(language: str, zone: str) -> jinja2.Environment:
    """One template environment per language (and the portal's time zone), its gettext and its ways of writing dates
    and numbers installed: rendering never switches a shared one. Filters: `day` (a date; a moment's date), `moment`
    (a moment in the portal's zone, the zone named), `month` (a chart's period) and `count` (a whole number)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(day=partial(i18n.shown_day, language=language, zone=zone),
                       moment=partial(i18n.shown_moment, language=language, zone=zone),
                       month=partial(i18n.shown_month, language=language),
                       count=partial(i18n.shown_count, language=language))
    return env


@dataclass
class View:
    """One request to a page."""

    request: Request
    settings: GatewaySettings
    language: str
    session: str | None
    new_form_cookie: str | None = None
    contract: bool = False  # signed in with a contract's number: no person, so no profile or terms of its own
    cookies: dict[str, str] = field(default_factory=dict)  # set on whatever response the page returns

    @property
    def portal(self) -> PortalClient:
        portal: PortalClient = self.request.app.state.portal
        return portal

    @property
    def form_token(self) -> str:
        if self.session:
            return csrf_token(self.session)
        existing = self.request.cookies.get(cookie_name(FORM_COOKIE, self.settings))
        if existing:
            return existing
        if self.new_form_cookie is None:
            self.new_form_cookie = secrets.token_urlsafe(24)
        return self.new_form_cookie

    @property
    def today(self) -> date:
        """Today where the portal is (PORTAL_TIME_ZONE), not where its server is: a form's default date."""
        return datetime.now(ZoneInfo(self.settings.time_zone)).date()

    def another_tabs_form(self) -> bool:
        """Before sign-in, a form of a page opened beside another one before this browser had a form cookie: each
        page got a token of its own and the cookie kept the last. The browser itself says the post comes from a page
        of this very origin (Fetch Metadata, a header no page can set); another site's form is `cross-site`, a
        sibling subdomain's `same-site`, and a browser that sends no such header keeps the double-submit check."""
        return self.session is None and self.request.headers.get("sec-fetch-site") == "same-origin"

    def gettext(self, text: str, **values: Any) -> str:
        translated = i18n.translations(self.language).gettext(text)
        return translated % values if values else translated

    async def form(self) -> dict[str, str]:
        """The posted form's text fields, once its token is this browser's."""
        form = await self.request.form()
        given = form.get(FORM_FIELD)
        if not isinstance(given, str) or not (secrets.compare_digest(given.encode(), self.form_token.encode())
                                              or self.another_tabs_form()):
            raise FormRefused
        # Text as typed, trimmed; a password exactly as typed (the API and accounts keep its spaces too).
        return {name: value if "password" in name else value.strip() for name, value in form.items()
                if isinstance(value, str) and name != FORM_FIELD}

    async def file(self, name: str) -> FileObject | None:
        """The posted form's file `name` (after `form()` checked the token); None when no file was chosen."""
        part = (await self.request.form()).get(name)
        if not isinstance(part, UploadFile) or not part.filename:
            return None  # a browser sends an empty part without a name for a file field left empty
        return await uploaded(part, name)

    async def call(self, command: str, payload: Mapping[str, Any] | BaseModel | None = None, *,
                   anonymous: bool = False, message_id: str | None = None) -> dict[str, Any]:
        """The command's data; a page that needs a session and lost it goes to the sign-in. A `message_id` makes a
        form sent twice (a double click, a reload of the post) one command: the second gets the first's reply."""
        if not anonymous and not self.session:
            raise SignInNeeded
        body = payload.model_dump(mode="json", exclude_none=True) if isinstance(payload, BaseModel) else payload
        try:
            return await self.portal.call(command, dict(body or {}), token=None if anonymous else self.session,
                                          lang=self.language, message_id=message_id,
                                          timeout=self.settings.gateway_command_timeout)
        except PortalError as error:
            if error.code == ErrorCode.UNAUTHENTICATED and not anonymous:
                raise SignInNeeded from error
            raise

    def repeated_id(self, *parts: str) -> str:
        """The message id of a form as this browser sends it: the same form with the same content, sent again from
        here, is the same command (and no one else's, as the form token is this browser's)."""
        digest = hashlib.sha256("\x1f".join((self.form_token, *parts)).encode()).hexdigest()
        return f"page-{digest[:40]}"

    def render(self, template: str, http_status: int = 200, /, **context: Any) -> HTMLResponse:
        errors: Errors = context.pop("errors", None) or Errors()
        http_status = errors.status or http_status  # a form refused as no service answered: 503, not the form's 400
        page = self.page(template, errors, context)
        # A refusal about a field this page has not (a row another operator moved meanwhile, a service's own field
        # name): said above the form instead, where the summary's link would lead nowhere.
        absent = [name for name in errors.fields if f'id="{name}"' not in page]
        if absent:
            said = [errors.fields[name] for name in absent if errors.fields[name] != errors.summary]
            errors = Errors(" ".join(filter(None, [errors.summary, *dict.fromkeys(said)])) or None,
                            {name: text for name, text in errors.fields.items() if name not in absent}, errors.status)
            page = self.page(template, errors, context)
        response = HTMLResponse(page, http_status)
        self.finish(response)
        return response

    def page(self, template: str, errors: Errors, context: dict[str, Any]) -> str:
        return environment(self.language, self.settings.time_zone).get_template(template).render(
            view=self, brand=self.settings, language=self.language, languages=i18n.LANGUAGE_NAMES,
            signed_in=self.session is not None, form_token=self.form_token, path=self.request.url.path,
            errors=errors, values=context.get("values", {}), **{k: v for k, v in context.items() if k != "values"})

    def redirect(self, to: str) -> RedirectResponse:
        response = RedirectResponse(to, 303)
        self.finish(response)
        return response

    def finish(self, response: Response) -> Response:
        if self.new_form_cookie:
            response.set_cookie(cookie_name(FORM_COOKIE, self.settings), self.new_form_cookie, httponly=True,
                                samesite="lax", path="/", secure=self.settings.secure_cookies)
        for name, value in self.cookies.items():
            response.set_cookie(name, value, samesite="lax", path="/", secure=self.settings.secure_cookies,
                                max_age=365 * 24 * 3600, httponly=True)
        response.headers.update(retry_after(response.status_code, self.settings))
        security_headers(response, self.settings)
        return response


def security_headers(response: Response, settings: GatewaySettings) -> None:
    images = "'self' data:"
    if settings.brand_logo_url and urlsplit(settings.brand_logo_url).scheme in ("http", "https"):
        parts = urlsplit(settings.brand_logo_url)
        images += f" {parts.scheme}://{parts.netloc}"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; img-src {images}; style-src 'self'; script-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    # The mail links carry their token in the query: no other site may see it in a Referer.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"  # personal pages, and forms with tokens


# What every page module's handlers take and catch.
Refusal = (PortalError, NotDelivered, TimeoutError)


async def items_of_devices(view: View, command: str, device_ids: list[str],
                           payload: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A service's list, of these devices only (a page's, at most one item each): one command however large the
    fleet, where paging through the whole list grew with it."""
    if not device_ids:
        return []
    reply = await view.call(command, {**(payload or {}), "device_ids": device_ids, "page_size": len(device_ids)})
    items: list[dict[str, Any]] = reply["items"]
    return items


def ticked(form: Mapping[str, str], name: str) -> bool:
    """A checkbox of a posted form (browsers send `on`)."""
    return form.get(name) in ("on", "true", "1")


def view_of(request: Request) -> View:
    settings: GatewaySettings = request.app.state.settings
    language = i18n.language_for(request.query_params.get("lang"), request.cookies.get(i18n.LANGUAGE_COOKIE),
                                 request.headers.get("accept-language"))
    view = View(request, settings, language, session_of(request, settings),
                contract=request.cookies.get(ACCOUNT_COOKIE) == "contract")
    if request.query_params.get("lang") in LANGUAGES:
        view.cookies[i18n.LANGUAGE_COOKIE] = language
    return view


def page_number(given: str) -> int:
    """A page asked for in the query: a number within the catalogue's bounds, else the first (never an error page)."""
    return min(max(int(given), 1), MAX_PAGE) if re.fullmatch(r"[0-9]{1,7}", given) else 1


def whole_number(typed: str, most: int) -> int | str:
    """A number as a person types it (spaces between thousands allowed), or what is wrong with it: a key of
    FIELD_MESSAGES. ASCII digits only: `str.isdigit` takes `²`, which `int` refuses."""
    digits = re.sub(r"[ \u00a0\u202f]", "", typed)
    if not digits:
        return "missing"
    if not re.fullmatch(r"[0-9]+", digits):
        return "int_parsing"
    if len(digits) > len(str(most)) or int(digits) > most:  # the length first: int() refuses 4,300 digits and more
        return "less_than_equal"
    return int(digits)


def local_path(target: str | None, default: str = "/") -> str:
    """A `next` to go to after a form: a path of this site only, never another site's address."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


# --- messages next to fields --------------------------------------------------------------------------------------

# What a page says for each kind of pydantic error: the service's own field texts are English.
FIELD_MESSAGES = {
    "missing": N_("This field is required."),
    "string_too_short": N_("This is too short."),
    "string_too_long": N_("This is too long."),
    "string_pattern_mismatch": N_("Please use only the characters this field allows."),
    "bool_parsing": N_("Please tick this box."),
    "bool_type": N_("Please tick this box."),
    "int_parsing": N_("Please enter a whole number."),
    "greater_than_equal": N_("This number is too small."),
    "less_than_equal": N_("This number is too large."),
    "date_from_datetime_parsing": N_("Please enter a date."),
    "date_parsing": N_("Please enter a date."),
    "literal_error": N_("Please choose one of the options."),
}
INVALID = N_("Please check this value.")
# A device's address as the forms ask it (registration.Location), and what a technician or a move needs of it.
ADDRESS_FIELDS = ("name", "street", "postal_code", "city", "country", "building_location")
ADDRESS_REQUIRED = ("street", "postal_code", "city")
# The field a specific refusal of a service is about: its message goes there, not above the form.
FIELD_OF_CODE = {
    "email_taken": "email", "username_taken": "username", "weak_password": "password",
    "password_mismatch": "password_confirm", "invalid_credentials": "password",
    "unknown_serial": "serial_number", "already_registered": "serial_number",
    "serial_or_postcode_mismatch": "postal_code", "invalid_purchase_date": "purchase_date",
    "warranty_not_accepted": "accept_warranty", "file_too_large": "proof_of_purchase",
    "file_type_not_allowed": "proof_of_purchase", "reading_lower_than_last": "counters",
    "counters_incomplete": "counters", "invalid_reading_date": "reading_date",
}


@dataclass
class Errors:
    """A refused form: one message above it, and one next to each field it concerns."""

    summary: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # the page's status when not its form's 400: 503 (no service answered), 429 (limited)

    def __bool__(self) -> bool:
        return self.summary is not None or bool(self.fields)


def validation_errors(view: View, error: ValidationError, names: Mapping[str, str] | None = None) -> Errors:
    """The form's own check before sending: each field's message in the page's language, under the form's name for
    it (`names`: the model's name → the form's; "" names the field of a check of the whole model)."""
    fields: dict[str, str] = {}
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        name = (names or {}).get(location[0] if location else "", location[0] if location else "")
        if not name:
            continue  # about the whole form: the summary says it
        if name == "email" and problem["type"] == "value_error":
            text = view.gettext("Please enter a valid e-mail address.")
        else:
            text = view.gettext(FIELD_MESSAGES.get(problem["type"], INVALID))
        fields.setdefault(name, text)
    return Errors(message_for(ErrorCode.VALIDATION_FAILED, view.language), fields)


def refusal_errors(view: View, error: PortalError | NotDelivered | TimeoutError,
                   field_of: Mapping[str, str] | None = None) -> Errors:
    """A service's refusal: its message (already in the page's language) beside the field it is about (`field_of`
    names the field of a code where a form calls it otherwise than FIELD_OF_CODE)."""
    if not isinstance(error, PortalError):
        return Errors(view.gettext("The portal is not answering right now. Nothing was changed; please try again "
                                   "in a moment."), status=503)
    message = error.message or message_for(error.code, view.language)
    status = 429 if error.code == ErrorCode.RATE_LIMITED else None
    field = {**FIELD_OF_CODE, **(field_of or {})}.get(error.code)
    if field:
        return Errors(message, {field: message}, status)
    # A service names nested fields (`file.content_base64`): the form's field is the first part.
    return Errors(message, {name.split(".")[0]: view.gettext(INVALID) for name in (error.fields or {})}, status)


Page = Annotated[View, Depends(view_of)]  # a page handler's parameter: the request as a View
