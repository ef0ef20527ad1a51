"""The bound on a request's body, for the API and the pages alike: refused by its declared length before any of it is
read, and stopped while it is read when it grows past the limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from contracts.errors import negotiate_language
from gateway.problems import BODY_TOO_LARGE, problem
from gateway.routes import PREFIX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was read."""


class BodyLimit:
    """Refuses a body by its declared length before reading any of it, and stops reading one that grows past it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        declared = headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        if too_large and str(scope.get("path", "")).startswith(PREFIX + "/"):
            response = problem(BODY_TOO_LARGE, negotiate_language(headers.get("accept-language")),
                               headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            if too_large:  # a page's form: refused where it is read, so that the page says it in its own words
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        await self.app(scope, limited, send)
