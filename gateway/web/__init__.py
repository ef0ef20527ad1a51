"""The portal's web pages, served by the gateway beside the API: the customer's portal and the operator's back
office, rendered on the server (jinja2), in de, en and nb, in the vendor's brand."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from contracts.client import NotDelivered, PortalError
from contracts.errors import ErrorCode, message_for
from gateway.cookies import clear_session_cookies
from gateway.limits import BodyTooLarge
from gateway.web import (
    account_pages,
    device_pages,
    fleet_pages,
    office_pages,
    order_pages,
    portal_pages,
    register_pages,
)
from gateway.web.view import FormRefused, SignInNeeded, view_of

log = logging.getLogger("gateway")
STATIC = Path(__file__).parent / "static"
# /devices/uploads, /devices/new and /devices/claim before /devices/{device_id}: the first route that matches a path
# serves it.
ROUTERS = (account_pages.router, portal_pages.router, fleet_pages.router, register_pages.router, device_pages.router,
           order_pages.router, office_pages.router)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        for route in router.routes:  # a page answers HEAD as GET (link checkers, monitors)
            if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
                route.methods.add("HEAD")
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/brand.css", include_in_schema=False)
    async def brand_css(request: Request) -> Response:
        # The vendor's colour, checked for contrast when the settings load; a file, as the pages allow no inline style.
        settings = request.app.state.settings
        return Response(f":root {{ --brand: {settings.brand_colour}; }}\n", media_type="text/css",
                        headers={"Cache-Control": "public, max-age=300"})

    @app.exception_handler(SignInNeeded)
    async def sign_in_first(request: Request, error: SignInNeeded) -> Response:
        view = view_of(request)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = view.redirect(f"/sign-in?next={quote(target if request.method == 'GET' else '/', safe='/')}")
        if view.session:  # expired or signed out elsewhere: the stale cookies go
            clear_session_cookies(response, view.settings)
        return response

    for kind in (PortalError, NotDelivered, TimeoutError):
        app.add_exception_handler(kind, trouble)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> Response:
        # Said on a page of its own: the form cannot be shown again, as its fields were never read.
        view = view_of(request)
        megabytes = view.settings.gateway_max_body_bytes / (1024 * 1024)
        response = view.render("too_large.html", 413, megabytes=f"{megabytes:.0f}", back=request.url.path)
        response.headers["Connection"] = "close"
        return response

    @app.exception_handler(FormRefused)
    async def form_refused(request: Request, error: FormRefused) -> Response:
        # Most often a page kept open across a sign-in or sign-out: the form again, freshly signed, is the way on.
        return view_of(request).render("refused.html", 403)


def trouble(request: Request, error: Exception) -> Response:
    """What a page shows when a service refused or did not answer a read it needed."""
    view = view_of(request)
    if isinstance(error, PortalError) and error.code in (ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_FAILED):
        return view.render("not_found.html", 404)  # another customer's id looks like no id at all
    if isinstance(error, PortalError) and error.code == ErrorCode.FORBIDDEN:
        return view.render("office_not_allowed.html", 403)  # a customer opening the back office
    if isinstance(error, PortalError):  # a service's limit: 429, with the Retry-After every page of that status has
        return view.render("trouble.html", 429 if error.code == ErrorCode.RATE_LIMITED else 400,
                           message=error.message or message_for(error.code, view.language))
    log.warning("%s %s: no service answered (%r)", request.method, request.url.path, error)
    return view.render("trouble.html", 503, message=view.gettext(
        "The portal is not answering right now. Nothing was changed; please try again in a moment."))


def not_found(request: Request, status: int = 404) -> Response:
    return view_of(request).render("not_found.html", status)
