"""Mails as text: jinja2 templates per language rendered into multipart/alternative messages.

With attachments the message is multipart/mixed: the multipart/alternative body first, then
each attachment, with the parameters of its content type (a calendar entry's `method=PUBLISH`).

Extra headers (a reminder's `List-Unsubscribe`, RFC 2369/8058) are written as given, on one
line: the standard policy would fold a long URL in angle brackets into RFC 2047 encoded words,
which mail clients do not read as a URL there.

The email package decodes RFC 2047 encoded words in a header value it is given
(`=?utf-8?q?=0D=0A...?=`) and may write what they hold, line breaks included, raw when it folds the
header: every text for a header (the subject, the recipient's display name) goes through
`header_text` first, which puts it on one line and breaks up the `=?` that opens an encoded word.

`templates/<language>/<mail>.txt.j2` holds the subject (block `subject`) and the plain text,
`templates/<language>/<mail>.html.j2` the HTML, autoescaped; both extend the shared layouts,
which add the footer in the same language. A new mail is two files per language.
"""

from __future__ import annotations

import email.policy
import email.utils
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage, Message
from email.policy import Policy
from typing import Any

from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from contracts.registration import Location

log = logging.getLogger(__name__)

LANGUAGES = ("de", "en", "nb")
FALLBACK_LANGUAGE = "en"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Attachment = tuple[str, str, bytes]  # filename, content type, content

_environment = Environment(
    loader=PackageLoader("services.notifier", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False, default=False),
    undefined=StrictUndefined,  # a misspelt variable fails the test that renders it, not a customer's mail
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class RenderedMail:
    language: str
    subject: str
    text: str
    html: str


def mail_language(language: str | None) -> str:
    return language if language in LANGUAGES else FALLBACK_LANGUAGE


def render(mail: str, language: str | None, *, public_url: str, **values: Any) -> RenderedMail:
    """The subject, text and HTML of `mail` in `language`, or in English for any other language."""
    language = mail_language(language)
    variables = {**values, "language": language, "public_url": public_url.rstrip("/") + "/"}
    text_template = _environment.get_template(f"{language}/{mail}.txt.j2")
    context = text_template.new_context(variables)
    subject = "".join(text_template.blocks["subject"](context))
    return RenderedMail(
        language=language,
        subject=" ".join(subject.split()),
        text=text_template.render(variables),
        html=_environment.get_template(f"{language}/{mail}.html.j2").render(variables),
    )


def compose(rendered: RenderedMail, *, sender: str, to: str, to_name: str | None = None,
            now: datetime | None = None, attachments: Sequence[Attachment] = (),
            headers: Mapping[str, str] | None = None) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) marked as sent by a machine (RFC 3834);
    multipart/mixed with that body first when there are `attachments` (filename, content type, bytes).

    `headers` are added as they are; only `VERBATIM_HEADERS` may be longer than a folded line."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = _recipient(to, to_name)
    message["Subject"] = header_text(rendered.subject)
    message["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = email.utils.make_msgid(domain=_domain_of(sender))
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    for filename, content_type, content in attachments:
        maintype, subtype, params = _content_type(content_type)
        # add_attachment turns multipart/alternative into multipart/mixed with the body as its first part
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename, params=params)
    message["Content-Language"] = rendered.language  # after the parts: making them moves Content-* headers down
    return message


def _recipient(address: str, name: str | None) -> BaseHeader | str:
    """The `To` header for `address` with `name` as its display name, or `address` alone if the header cannot
    carry the name.

    `Address` keeps a name with commas one display name (`formataddr` writes a non-ASCII one as an encoded
    word followed by the rest, which reads as several addresses). A name that still cannot be written is
    left out, so that the mail goes rather than the event being retried until dead-lettered.
    """
    display_name = header_text(name or "")
    if not display_name:
        return address
    try:
        header: BaseHeader = _POLICY.header_factory("To", Address(display_name=display_name, addr_spec=address))
        header.fold(policy=_POLICY)  # what writing the message would do: fails here rather than after compose
    except ValueError as error:  # UnicodeEncodeError too (a lone surrogate)
        log.warning("display name cannot be written in To, mailed to the address alone: %s", error)
        return address
    return header


def _content_type(value: str) -> tuple[str, str, dict[str, str]]:
    """Main type, subtype and parameters of a content type such as `text/calendar; method=PUBLISH; charset=UTF-8`."""
    parsed = Message()
    parsed["Content-Type"] = value
    if parsed.get_content_type() != value.partition(";")[0].strip().lower():
        return "application", "octet-stream", {}  # no type the email package reads (it would say text/plain)
    params = {str(name): str(param) for name, param in parsed.get_params(failobj=[])[1:]}
    return parsed.get_content_maintype(), parsed.get_content_subtype(), params


class _VerbatimHeader(UnstructuredHeader, BaseHeader):
    """A header written on one line as given (up to RFC 5322's 998 characters), never as encoded words."""

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        if not _PRINTABLE_ASCII.fullmatch(value) or len(value) > 900:
            raise ValueError(f"header value not printable ASCII on one line: {value[:40]!r}")
        super().parse(value, kwds)
        kwds["decoded"] = value  # as given: the parser would decode encoded words in it, line breaks and all

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


VERBATIM_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_REGISTRY = HeaderRegistry()
for _name in VERBATIM_HEADERS:
    _REGISTRY.map_to_type(_name.lower(), _VerbatimHeader)
_POLICY = email.policy.SMTP.clone(header_factory=_REGISTRY)


def one_line(text: str) -> str:
    """`text` with every run of control characters (line breaks included) turned into one space.

    accounts refuses them in names now; names stored before that would otherwise make every
    mail to that person fail at composing (header injection refused) and be retried until
    dead-lettered.
    """
    return " ".join(_CONTROL.sub(" ", text).split())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def header_text(text: str) -> str:
    """`text` on one line (`one_line`) with no RFC 2047 encoded word in it: `=?` becomes `= ?`.

    The email package decodes an encoded word in a header value it is given and can write the line
    breaks it holds raw (`=?utf-8?q?=0D=0AReply-To:...?=` would add a header): one in a ticket number,
    a name or any other value that reaches a header is shown as typed, apart from that space.
    """
    return one_line(text).replace("=?", "= ?")


def single_line(value: str | None) -> str | None:
    """`value` on one line (`one_line`), or None when it is None or blank.

    For the values of an event shown in a mail: the event's text fields are not checked for line breaks as a
    command's are.
    """
    return (one_line(value) or None) if value is not None else None


def aware(moment: datetime) -> datetime:
    """`moment` with its zone; one without a zone is UTC by the wire conventions (CATALOG §1), not local time."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc_date(moment: datetime) -> date:
    return aware(moment).astimezone(UTC).date()


def address_lines(location: Location) -> list[str]:
    """An address as the lines a letter shows: name, building location, street, postal code and city, country."""
    place = " ".join(part for part in (single_line(location.postal_code), single_line(location.city)) if part)
    lines = [single_line(location.name), single_line(location.building_location), single_line(location.street),
             place, single_line(location.country)]
    return [line for line in lines if line]


def mailable_address(address: str) -> str | None:
    """`address` as one plain address that SMTP and a `To` header carry unchanged, or None if it is none.

    A domain in Unicode is given in its ASCII (IDNA) form, which a header can carry; special-use
    domains (`.local`, ...) pass: a company's own mail server may serve them.
    """
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False,
                                 globally_deliverable=False)
    except EmailNotValidError:
        return None
    return address if address.isascii() else checked.ascii_email


def _domain_of(sender: str) -> str | None:
    address = email.utils.parseaddr(sender)[1]
    return address.rpartition("@")[2] or None
