"""An adversarial review of the gateway: each test shows a defect it found (fixed; the docstring says what it was)."""

from __future__ import annotations

import base64
import json

import httpx

from contracts.client import PortalClient
from gateway.cookies import CSRF_COOKIE, SESSION_COOKIE
from gateway.settings import GatewaySettings
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.accounts.flows import active_user
from tests.builders import PDF, device_registration
from tests.gateway.conftest import gateway
from tests.gateway.test_files import XLSX
from tests.gateway.test_sessions import signed_in
from tests.registration.flows import customer
from tests.registration.test_bulk import valid_rows, workbook
from tests.support import EventTap, eventually


async def test_a_csrf_token_the_attacker_chose_is_refused(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    """The double-submit check only compares the `portal_csrf` cookie with the header; nothing ties the token to
    the session. Whoever can plant a cookie for the gateway's host (a sibling subdomain, a plain-http page on the
    same host: cookie tossing) sets `portal_csrf` to a value of their own and then sends it as X-CSRF-Token
    beside the victim's session cookie. A token derived from the session (an HMAC of it) would be refused."""
    await signed_in(http, portal, tap)
    session = http.cookies[SESSION_COOKIE]
    http.cookies.clear()
    http.cookies.set(SESSION_COOKIE, session)  # the victim's, sent by the browser
    http.cookies.set(CSRF_COOKIE, "planted-by-attacker")  # tossed in from a sibling origin

    response = await http.post("/api/v1/contacts", json={"name": "Mallory", "email": "m@example.com"},
                               headers={"X-CSRF-Token": "planted-by-attacker"})

    assert response.status_code == 403


async def test_sign_in_refuses_a_body_a_cross_site_form_can_send(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    """Login CSRF: the gateway parses any body as JSON whatever its Content-Type. A form on another site with
    `enctype="text/plain"` (a simple request: no preflight, no CORS needed) posts `{"login": ..., "password": ...}`
    of the attacker's account; the reply sets the session cookie in the victim's browser, who then works (types
    contacts, uploads receipts) in the attacker's account. Sign-in needs no CSRF token, so only the media type
    can stop it: JSON routes should insist on `application/json` (415 otherwise)."""
    person, _ = await active_user(portal, tap)
    body = json.dumps({"login": person["email"], "password": person["password"]})

    response = await http.post("/api/v1/session", content=body, headers={"Content-Type": "text/plain"})

    assert response.status_code == 415
    assert SESSION_COOKIE not in http.cookies


async def test_a_download_header_carries_no_control_characters_of_the_file_name(
        http: httpx.AsyncClient, settings: Settings, registration: ServiceInstance, amqp_url: str) -> None:
    """`download()` replaces quotes and backslashes of the file name but keeps control characters, and the name
    of a bulk upload's result is the one the uploader gave its part (ESC here: httpx percent-encodes the others,
    a browser or curl need not). uvicorn refuses a header value with a control character (h11 and httptools
    alike), so in production the result of such an upload can never be downloaded: a 500 on every try. The
    ASCII fallback should replace control characters as well (`filename*` already percent-encodes them)."""
    bearer = {"Authorization": f"Bearer {await customer(settings, registration, amqp_url)}"}
    queued = await http.post("/api/v1/device-uploads", headers=bearer, data={"data": '{"warranty_accepted": true}'},
                             files={"file": ("rows\x1b[2J.xlsx", workbook(valid_rows(1)), XLSX)})
    assert queued.status_code == 202, queued.text
    upload_id = queued.json()["upload_id"]

    async def processed() -> bool:
        uploads = (await http.get("/api/v1/device-uploads", headers=bearer)).json()["items"]
        return bool(uploads[0]["status"] == "processed")
    await eventually(processed, timeout=30)
    result = await http.get(f"/api/v1/device-uploads/{upload_id}/result", headers=bearer)

    assert result.status_code == 200
    disposition = result.headers["content-disposition"]
    assert not any(ord(character) < 0x20 or ord(character) == 0x7F for character in disposition), disposition


async def test_an_upload_route_takes_the_file_only_as_its_own_part(
        http: httpx.AsyncClient, settings: Settings, registration: ServiceInstance, amqp_url: str) -> None:
    """README: files go up as multipart, "no base64 crosses HTTP". But `payload_of` keeps whatever the JSON part
    `data` holds and only overrides an upload field when a part of that name is a file: a `FileObject` inside
    `data` goes to the service as it is. That by-passes what the multipart parser guarantees of a part's
    name (no CR or LF: the header line ends there), so a name like the one below reaches the download's
    Content-Disposition with its line break (see the test above)."""
    bearer = {"Authorization": f"Bearer {await customer(settings, registration, amqp_url)}"}
    smuggled = {"filename": "rows\r\nSet-Cookie: portal_session=planted\r\n.xlsx", "content_type": XLSX,
                "content_base64": base64.b64encode(workbook(valid_rows(1))).decode()}

    response = await http.post("/api/v1/device-uploads", headers=bearer,
                               files={"data": (None, json.dumps({"warranty_accepted": True, "file": smuggled}))})

    assert response.status_code == 422, response.text
    assert "file" in response.json()["fields"]


async def test_a_query_parameter_cannot_name_another_device_than_the_path(
        http: httpx.AsyncClient, settings: Settings, registration: ServiceInstance, amqp_url: str) -> None:
    """A GET merges the query into the command beside the path's fields, and only colliding names are fixed by
    the path: `GetDevice` has two ways to name a device, and the service prefers `device_id`. So
    `/devices/by-serial/<serial>?device_id=<other>` answers the other device: the URL says one resource, the reply
    is another (what a proxy, a cache or an audit log keyed by the path sees is wrong). A route's path fields
    should be the only identity of its resource: the route should fix the other one to nothing, or refuse it."""
    bearer = {"Authorization": f"Bearer {await customer(settings, registration, amqp_url)}"}
    fields = device_registration()
    del fields["proof_of_purchase"]
    registered = await http.post("/api/v1/devices", headers=bearer, data={"data": json.dumps(fields)},
                                 files={"proof_of_purchase": ("receipt.pdf", PDF, "application/pdf")})
    assert registered.status_code == 201, registered.text

    device_id = registered.json()["device_id"]

    response = await http.get("/api/v1/devices/by-serial/NO-SUCH-SERIAL", headers=bearer,
                              params={"device_id": device_id})

    assert response.status_code in (404, 422), response.text
    # Each route still finds the device by its own name (the other one sent to the service as none).
    by_id = await http.get(f"/api/v1/devices/{device_id}", headers=bearer)
    assert by_id.status_code == 200, by_id.text
    by_serial = await http.get(f"/api/v1/devices/by-serial/{by_id.json()['serial_number']}", headers=bearer)
    assert by_serial.json()["device_id"] == device_id


async def test_a_repeated_query_parameter_is_refused(http: httpx.AsyncClient, registration: ServiceInstance) -> None:
    """`{**request.query_params}` keeps the last of repeated values and drops the others without a word, while
    every command field is a single value and the OpenAPI document says so. A proxy, a web application firewall
    or a log that reads the first value sees another request than the one the service runs (HTTP parameter
    pollution); a parameter given twice should be 422 `validation_failed` naming it."""
    response = await http.get("/api/v1/device-uploads/template?language=de&language=en")

    assert response.status_code == 422, response.headers.get("content-disposition")
    assert response.json()["fields"] == {"language": "given more than once"}


async def test_a_json_body_the_gateway_admits_fits_into_a_command(
        gateway_settings: GatewaySettings, accounts: ServiceInstance) -> None:
    """The limit counts the request's bytes, but the command is the body parsed and written again by
    `json.dumps`, whose `ensure_ascii` turns each non-ASCII character into `\\uXXXX` escapes: "é" grows from 2 bytes
    to 6, an emoji from 4 to 12. Under the default 7 MiB limit (chosen to stay under the services' 10 MiB) a body
    of accented text becomes a command three times its size: the broker carries ~20 MiB for one request, and
    the service refuses it as 422 `validation_failed` `{"body": "larger than 10485760 bytes"}` instead of the
    gateway's 413 (the limit should bound the command sent, or the command be written as UTF-8)."""
    limit = GatewaySettings.model_fields["gateway_max_body_bytes"].default
    body = json.dumps({"name": "é" * (limit // 2 - 100), "email": "kari@example.com"}, ensure_ascii=False).encode()
    assert len(body) <= limit

    async with gateway(gateway_settings.model_copy(update={"gateway_max_body_bytes": limit})) as http:
        response = await http.post("/api/v1/contacts", content=body, headers={
            "Authorization": "Bearer x", "Content-Type": "application/json"})

    assert response.status_code == 413, response.text


async def test_a_deeply_nested_json_body_is_400(http: httpx.AsyncClient) -> None:
    """`json_object` turns `ValueError` into 400 `invalid_message`, but `json.loads` raises `RecursionError` (a
    `RuntimeError`) on a body nested a few thousand levels deep: it falls through to the catch-all and is answered
    500 `internal`, with a stack trace logged for every such request. A client's malformed body is the client's
    error (and "no 5xx" is what the Schemathesis run is meant to show); no service is even asked."""
    response = await http.post("/api/v1/contacts", content=b"[" * 50_000, headers={
        "Authorization": "Bearer x", "Content-Type": "application/json"})

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_message"


async def test_an_upload_with_an_over_long_file_name_is_422(http: httpx.AsyncClient) -> None:
    """`payload_of` builds the `FileObject` itself (`filename` and `content_type` at most 255 characters), outside
    the `ValidationError` handling the GET path has: a part named with 300 characters raises a `ValidationError`
    that the catch-all answers 500 `internal` ("please try again": it will fail again). It is the client's
    field: 422 `validation_failed` naming `proof_of_purchase.filename`. No service is asked."""
    response = await http.post("/api/v1/devices", headers={"Authorization": "Bearer x"}, data={"data": "{}"},
                               files={"proof_of_purchase": ("a" * 300 + ".pdf", PDF, "application/pdf")})

    assert response.status_code == 422, response.text
    assert "proof_of_purchase.filename" in response.json()["fields"]


async def test_a_personal_reply_is_never_stored_by_a_cache(
        http: httpx.AsyncClient, portal: PortalClient, tap: EventTap, accounts: ServiceInstance) -> None:
    """Replies to a signed-in caller (profile, devices, the result files) come without any Cache-Control. A shared
    cache between browser and gateway (a corporate proxy, a CDN in front of the replicas) may keep a 200 to a
    GET: RFC 9111 keeps it from storing a reply to a request with `Authorization`, but a request signed in by
    the cookie has no such guard, so the next user of that cache could be served someone else's profile. The
    browser's own cache keeps them on shared machines too. Personal replies should say `no-store`."""
    await signed_in(http, portal, tap)

    profile = await http.get("/api/v1/me")

    assert profile.status_code == 200
    assert "no-store" in profile.headers.get("cache-control", "")
