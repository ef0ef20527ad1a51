"""Files to and from a person: a reply's file as a download, and a form's file part as the contracts' FileObject."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import Response
from starlette.datastructures import UploadFile

from contracts.base import FileObject

UNQUOTABLE = dict.fromkeys((*range(0x20), 0x7F, ord('"'), ord("\\")), "_")


def file_response(file: FileObject) -> Response:
    # The quoted fallback: no quote or backslash to end it early, no control character (servers refuse the header).
    ascii_name = file.filename.encode("ascii", "replace").decode().translate(UNQUOTABLE)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(file.filename)}"
    # nosniff: a browser keeps to the declared type instead of guessing one (say, HTML) from the bytes.
    return Response(file.content(), media_type=file.content_type,
                    headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"})


async def uploaded(part: UploadFile, name: str) -> FileObject:
    """A form's file part as the contracts carry it; its name and type are the client's (pydantic checks them)."""
    content = await part.read()
    return FileObject.from_bytes(part.filename or name, part.content_type or "application/octet-stream", content)
