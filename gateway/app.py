"""The ASGI app: one generic endpoint per row of `routes.ROUTES`, sessions by bearer token or cookie, problems."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts import accounts
from contracts.base import FileObject
from contracts.client import NotDelivered, PortalClient, PortalError, data_of
from contracts.errors import ErrorCode, negotiate_language
from contracts.topology import SERVICES
from gateway import openapi, web
from gateway.cookies import (
    CSRF_COOKIE,
    clear_session_cookies,
    csrf_token,
    end_replaced_session,
    session_of,
    set_session_cookies,
)
from gateway.files import file_response, uploaded
from gateway.limits import BodyLimit, BodyTooLarge
from gateway.metrics import CountRequests, GatewayMetrics
from gateway.problems import (
    BODY_TOO_LARGE,
    METHOD_NOT_ALLOWED,
    NO_SERVICE,
    UNSUPPORTED_MEDIA_TYPE,
    problem,
    retry_after,
)
from gateway.routes import PREFIX, ROUTES, Route
from gateway.settings import GatewaySettings
from gateway.tracing import TracedGateway

log = logging.getLogger("gateway")

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
VERSION = "1.0.0"
T = TypeVar("T")
READY_REUSE_SECONDS = 1.0


class Reused(Generic[T]):
    """The answer of `compute`, computed once for all who ask meanwhile and reused for `seconds` after."""

    def __init__(self, compute: Callable[[], Awaitable[T]], seconds: float) -> None:
        self.compute, self.seconds = compute, seconds
        self.running: asyncio.Task[T] | None = None
        self.answered_at = -math.inf

    async def get(self) -> T:
        if self.running is None or (self.running.done() and time.monotonic() - self.answered_at > self.seconds):
            self.running = asyncio.create_task(self._compute())
        return await asyncio.shield(self.running)  # a client that leaves does not cancel the others' answer

    async def _compute(self) -> T:
        try:
            return await self.compute()
        finally:
            self.answered_at = time.monotonic()


class Refused(Exception):
    """The gateway itself refuses the request (bad body, missing CSRF token) before any command is sent."""

    def __init__(self, code: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.code, self.fields = code, fields or {}


def language_of(request: Request) -> str:
    return negotiate_language(request.headers.get("accept-language"))


def access_token(request: Request, route: Route) -> str | None:
    """The bearer token, else the session cookie; a cookie-authenticated write needs the CSRF token too."""
    if route.anonymous:
        return None
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()  # a header no other site can make a browser send: no CSRF check needed
    cookie = session_of(request, request.app.state.settings)
    if not cookie:
        return None
    if request.method not in SAFE_METHODS:
        # Another site can make the browser send the cookies, but cannot read them to send the token back; and as
        # the token is derived from the session, a `portal_csrf` cookie planted from a sibling origin is no help.
        given = request.headers.get(CSRF_HEADER, "")
        if not secrets.compare_digest(csrf_token(cookie).encode(), given.encode()):
            raise Refused(ErrorCode.FORBIDDEN, {"X-CSRF-Token": f"must repeat this session's {CSRF_COOKIE} cookie"})
    return cookie


def message_id(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None  # the client makes a fresh id for this request
    if not 1 <= len(key) <= 200 or not all("\x21" <= character <= "\x7e" for character in key):
        raise Refused(ErrorCode.VALIDATION_FAILED, {"Idempotency-Key": "1 to 200 visible ASCII characters"})
    return key


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def json_object(raw: bytes | str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as error:  # RecursionError: a body nested thousands of levels deep
        raise Refused(ErrorCode.INVALID_MESSAGE) from error
    if not isinstance(value, dict):
        raise Refused(ErrorCode.INVALID_MESSAGE)
    return value


def validation_fields(error: ValidationError) -> dict[str, str]:
    return {".".join(str(part) for part in problem["loc"]) or "body": problem["msg"] for problem in error.errors()}


async def payload_of(request: Request, route: Route) -> dict[str, Any]:
    """The command's body: query, JSON or multipart, with the fields the path and the route set."""
    from_path = route.path_fields(request.path_params)
    if route.method == "GET":
        # Every field is one value: a proxy or a log reading the first of two would see another request.
        given = Counter(name for name, _ in request.query_params.multi_items())
        repeated = sorted(name for name, times in given.items() if times > 1)
        if repeated:
            raise Refused(ErrorCode.VALIDATION_FAILED, dict.fromkeys(repeated, "given more than once"))
        # What the path or the route sets is not the query's to change: the URL names the resource, not a parameter.
        taken = sorted(set(given) & (set(from_path) | set(route.fixed)))
        if taken:
            raise Refused(ErrorCode.VALIDATION_FAILED, dict.fromkeys(taken, "set by this resource"))
        fields = {**request.query_params, **from_path, **route.fixed}
        try:  # query strings are text: the contract's model turns them into numbers, dates, booleans
            command = route.request.model_validate(fields)
        except ValidationError as error:
            raise Refused(ErrorCode.VALIDATION_FAILED, validation_fields(error)) from error
        return command.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if route.uploads:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise Refused(UNSUPPORTED_MEDIA_TYPE)
        try:
            form = await request.form()
        except StarletteHTTPException as error:  # Starlette's word for a body that is no multipart (no boundary)
            raise Refused(ErrorCode.INVALID_MESSAGE) from error
        data = form.get("data")
        body = json_object(data if isinstance(data, str) else "")
        # A file only as its own part: the multipart parser keeps CR and LF out of its name, a JSON string does not.
        smuggled = [name for name in route.uploads if name in body]
        if smuggled:
            raise Refused(ErrorCode.VALIDATION_FAILED, dict.fromkeys(smuggled, "send the file as its own part"))
        for name in route.uploads:
            part = form.get(name)
            if isinstance(part, UploadFile):
                try:  # the part's name and type are the client's fields (at most 255 characters each)
                    file = await uploaded(part, name)
                except ValidationError as error:
                    raise Refused(ErrorCode.VALIDATION_FAILED, {f"{name}.{field}": text for field, text
                                                                in validation_fields(error).items()}) from error
                body[name] = file.model_dump()
        await form.close()
    else:
        raw = await request.body()
        # Not whatever parses as JSON: a form of another site can post text/plain without a preflight (login CSRF).
        if raw and not is_json(request.headers.get("content-type", "")):
            raise Refused(UNSUPPORTED_MEDIA_TYPE)
        body = json_object(raw)
    return {**body, **from_path, **route.fixed}


def download(route: Route, data: dict[str, Any]) -> Response:
    return file_response(FileObject.model_validate(data if route.download == "" else data.get(route.download or "")))


def endpoint_for(route: Route, settings: GatewaySettings) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        language = language_of(request)
        portal: PortalClient = request.app.state.portal
        refused: dict[str, str] = {}  # the fields a service's refusal names: a limit naming one is no window
        try:
            if "service" in request.path_params and request.path_params["service"] not in SERVICES:
                raise Refused(ErrorCode.NOT_FOUND)
            token = access_token(request, route)
            key = message_id(request)
            payload = await payload_of(request, route)
            # The limit bounds the command as the client writes it too: base64 grows a file by a third, and JSON's
            # \uXXXX escapes grow non-ASCII text up to sixfold, past the services' own limit.
            body = json.dumps(payload).encode()  # encoded once: measured, then sent as it is
            if len(body) > settings.gateway_max_body_bytes:
                raise BodyTooLarge
            data = data_of(await portal.send(route.command.format(**request.path_params), body, token=token,
                                             lang=language, message_id=key,
                                             timeout=settings.gateway_command_timeout))
            response = download(route, data) if route.download is not None else JSONResponse(data, route.status)
        except Refused as refusal:
            response = problem(refusal.code, language, fields=refusal.fields)
        except BodyTooLarge:
            response = problem(BODY_TOO_LARGE, language, headers={"Connection": "close"})
        except PortalError as error:
            refused = error.fields
            response = problem(error.code, language, message=error.message or None, fields=error.fields)
        except (NotDelivered, TimeoutError):
            response = problem(NO_SERVICE, language)
        except Exception:  # a problem like any other for the client; the details only in the log
            log.exception("%s %s failed", request.method, request.url.path)
            response = problem(ErrorCode.INTERNAL, language)
        else:
            if route.signs_in:
                # As accounts reads it (1 and "true" stay signed in too): the route's command, not the JSON's `true`.
                command = route.request.model_validate(payload)
                stay_signed_in = isinstance(command, accounts.Login) and command.remember_me
                set_session_cookies(response, data, settings, stay_signed_in=stay_signed_in)
                await end_replaced_session(portal, request, str(data["access_token"]), settings)
        if route.signs_out and response.status_code in (200, 401):
            clear_session_cookies(response, settings)  # a session revoked already is gone as well
        response.headers.update(retry_after(response.status_code, settings, refused))
        # Replies are personal (profile, devices, files), and a request signed in by cookie has no `Authorization`
        # to keep a shared cache from storing them.
        response.headers["Cache-Control"] = "no-store"
        return response

    endpoint.__name__ = route.operation_id
    return endpoint


def docs_page() -> str:
    """The operations as a plain HTML table: works offline, no script or outside asset."""
    rows = "\n".join(
        f"<tr><td><code>{route.method}</code></td><td><code>{html.escape(route.full_path)}</code></td>"
        f"<td>{html.escape(route.summary)}</td><td><code>{html.escape(route.command)}</code></td>"
        f"<td>{'anyone' if route.anonymous else 'signed in'}</td></tr>" for route in ROUTES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Service portal API</title>
<style>body{{font-family:sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style></head>
<body><h1>Service portal API v1</h1>
<p>The machine-readable description: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).
Errors are <code>application/problem+json</code> (RFC 9457) with the catalogue's <code>code</code>,
<code>message</code> and <code>fields</code>. Sign in with <code>POST /api/v1/session</code>; send the token as
<code>Authorization: Bearer</code>, or use the cookie it sets and repeat the <code>{CSRF_COOKIE}</code> cookie in
<code>X-CSRF-Token</code> on writes. <code>Idempotency-Key</code> makes a retried write safe.</p>
<table><thead><tr><th>method</th><th>path</th><th>what</th><th>command</th><th>who</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


def create_app(settings: GatewaySettings, portal: PortalClient | None = None) -> FastAPI:
    metrics = GatewayMetrics(VERSION)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.gateway_metrics_port is not None:
            port = metrics.serve(settings.gateway_metrics_port, settings.gateway_metrics_host)
            log.info("gateway metrics on %s:%d/metrics", settings.gateway_metrics_host, port)
        try:
            yield
        finally:
            await asyncio.to_thread(metrics.close)
            await app.state.portal.close()

    app = TracedGateway(trust_trace_context=settings.gateway_trust_trace_context,
                        title="Service portal API", version=VERSION, docs_url=None, redoc_url=None,
                        openapi_url="/openapi.json", lifespan=lifespan,
                        description="Every customer and operator command of the service portal's catalogue over HTTP.")
    # Made here, connected on the first request: the gateway starts and answers /healthz without a broker.
    app.state.portal = portal or PortalClient(settings.amqp_url, timeout=settings.gateway_command_timeout)
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_body_bytes)
    app.add_middleware(CountRequests, metrics=metrics)  # outermost: a request the body limit refuses counts too

    for route in ROUTES:
        app.add_api_route(route.full_path, endpoint_for(route, settings), methods=[route.method],
                          operation_id=route.operation_id, summary=route.summary, tags=[route.tag],
                          status_code=route.status, openapi_extra=openapi.operation(route),
                          response_class=JSONResponse)

    @app.exception_handler(StarletteHTTPException)
    async def unrouted(request: Request, error: StarletteHTTPException) -> Response:
        # No route or no such verb: a problem like every other refusal, not FastAPI's {"detail": ...}.
        if error.status_code in (404, 405) and not request.url.path.startswith(PREFIX + "/"):
            # A person's mistyped or bookmarked address (GET /sign-out): a page, not a problem document.
            return web.not_found(request, error.status_code)
        if error.status_code != 405:
            code = {404: ErrorCode.NOT_FOUND}.get(error.status_code,
                                                  ErrorCode.INVALID_MESSAGE if error.status_code < 500 else
                                                  ErrorCode.INTERNAL)
            return problem(code, language_of(request))
        # Starlette names only the first route of the path; one path has a route per verb here.
        allowed = {method for route in app.routes if isinstance(route, APIRoute)
                   and route.path_regex.match(request.url.path) for method in route.methods or ()}
        return problem(METHOD_NOT_ALLOWED, language_of(request), headers={"Allow": ", ".join(sorted(allowed))})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def answers(service: str) -> bool:
        try:
            portal: PortalClient = app.state.portal
            health = await asyncio.wait_for(portal.health(service, timeout=settings.gateway_ready_timeout),
                                            settings.gateway_ready_timeout)
        except (PortalError, NotDelivered, TimeoutError):
            return False
        return health.status == "ok"

    async def services_ready() -> dict[str, bool]:
        return dict(zip(SERVICES, await asyncio.gather(*(answers(service) for service in SERVICES)), strict=True))

    # `/readyz` has no sign-in: requests at once share one round of health commands, and its answer serves for
    # READY_REUSE_SECONDS, so a flood of requests is not a flood of commands.
    readiness = Reused(services_ready, READY_REUSE_SECONDS)

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        ready = await readiness.get()
        if all(ready.values()):
            return JSONResponse({"status": "ok", "services": dict.fromkeys(SERVICES, "ok")})
        return problem(NO_SERVICE, language_of(request),
                       fields={service: "not answering" for service, ok in ready.items() if not ok},
                       headers=retry_after(503, settings))

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    async def docs() -> str:
        return docs_page()

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).update(openapi.components())
            app.openapi_schema = spec
        return app.openapi_schema

    web.install(app)
    app.openapi = document  # type: ignore[method-assign]
    return app
