"""The envelope of every message: commands, replies, events, pages and files (CATALOG §1)."""

from __future__ import annotations

import base64
import unicodedata
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_PAGE_SIZE = 200
# Beyond any real list, and within the 8-byte integers a database skip takes.
MAX_PAGE = 1_000_000


def _single_line(value: str) -> str:
    # Line breaks and other control characters in a name end up in mail headers (header
    # injection) or in spreadsheet cells; refusing them at the edge keeps every sink safe.
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise ValueError("must not contain line breaks or other control characters")
    return value


SingleLine = Annotated[str, AfterValidator(_single_line)]
"""Free text of one line (names, labels): control characters, line breaks included, are refused."""


class Message(BaseModel):
    """A message body: unknown fields are refused so typos surface as `validation_failed`."""

    model_config = ConfigDict(extra="forbid")


# One plain address: no display name, list separator or quoting that a mail header would read differently.
ContactEmail = Field(min_length=3, max_length=254,
                     pattern=r"^[^@\s,;<>\"()\[\]]+@[^@\s,;<>\"()\[\]]+\.[^@\s,;<>\"()\[\]]+$",
                     examples=["c.zimmermann@example.com"])


class Contact(Message):
    """Who an order or a service request is for: the mails about it go to this address (OKI: the contact picked in
    the form), not necessarily to the user who sent it."""

    name: SingleLine = Field(min_length=1, max_length=120, examples=["Thomas Lienert"])
    email: str = ContactEmail


class Command(Message):
    """A request; `routing_key` is its name on `portal.commands`."""

    routing_key: ClassVar[str]


class Event(Message):
    """A fact; `routing_key` is its name on `portal.events`. Extra fields are kept for newer senders."""

    model_config = ConfigDict(extra="allow")
    routing_key: ClassVar[str]


class ErrorBody(BaseModel):
    code: str = Field(description="Catalogue error code.", examples=["validation_failed"])
    message: str = Field(description="Human-readable text in the request's language.")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Bad fields by their path (e.g. `address.postal_code`) and what is wrong.",
        examples=[{"email": "Field required"}],
    )


class Reply(BaseModel):
    """The answer to every command, sent to `reply_to` with the request's correlation id."""

    ok: bool = Field(description="True when the command succeeded.")
    data: dict[str, Any] | None = Field(default=None, description="The result when `ok`.")
    error: ErrorBody | None = Field(default=None, description="Why the command was refused when not `ok`.")


class PageRequest(Message):
    page: int = Field(default=1, ge=1, le=MAX_PAGE, description="1-based page number.", examples=[1])
    page_size: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE, description="Items per page (max 200).")


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT] = Field(description="The items of this page.")
    total: int = Field(description="Items over all pages.")
    page: int
    page_size: int


class FileObject(BaseModel):
    """A file carried inside a command or reply."""

    filename: str = Field(max_length=255, examples=["receipt.pdf"])
    content_type: str = Field(max_length=255, examples=["application/pdf"])
    content_base64: str = Field(description="The file's bytes, base64-encoded.")

    @classmethod
    def from_bytes(cls, filename: str, content_type: str, content: bytes) -> FileObject:
        return cls(filename=filename, content_type=content_type,
                   content_base64=base64.b64encode(content).decode("ascii"))

    def content(self) -> bytes:
        return base64.b64decode(self.content_base64, validate=True)


class Done(BaseModel):
    """The reply of a command that answers only that it was done: `{}`."""


class Counted(BaseModel):
    count: int = Field(description="How many the command changed.", examples=[25])


class HealthRequest(Command):
    """`<service>.health`: no token, empty body."""


class Health(BaseModel):
    service: str = Field(examples=["metering"])
    version: str = Field(examples=["0.1.0"])
    status: str = Field(description="`ok` once connected to the broker and the database and consuming every queue; "
                                    "`starting` before.", examples=["ok"])
