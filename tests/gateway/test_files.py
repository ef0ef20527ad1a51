"""Files up as multipart and down as downloads; bodies over the limit refused before they are read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from io import BytesIO

import httpx
import openpyxl  # type: ignore[import-untyped, unused-ignore]

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import PDF, device_registration
from tests.registration.flows import customer
from tests.registration.test_bulk import valid_rows, workbook
from tests.support import eventually

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
LIMIT = 64 * 1024  # the `gateway_settings` fixture's


class CountingBody:
    """A request body that counts how much of it the server read."""

    def __init__(self, size: int) -> None:
        self.size, self.sent = size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.size:
            self.sent += 16 * 1024
            yield b"x" * (16 * 1024)


async def test_a_body_declared_too_large_is_refused_before_any_of_it_is_read(http: httpx.AsyncClient) -> None:
    body = CountingBody(10 * LIMIT)

    response = await http.post("/api/v1/devices", content=body, headers={
        "Content-Length": str(body.size), "Content-Type": "multipart/form-data; boundary=x", "Accept-Language": "de"})

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["message"] == "Die Anfrage ist zu groß."
    assert body.sent == 0


async def test_a_body_without_a_length_is_read_no_further_than_the_limit(http: httpx.AsyncClient) -> None:
    body = CountingBody(10 * LIMIT)  # sent chunked: no Content-Length to refuse it by

    response = await http.post("/api/v1/contacts", content=body, headers={"Authorization": "Bearer x"})

    assert response.status_code == 413
    assert body.sent <= LIMIT + 16 * 1024


async def test_the_bulk_template_is_a_real_download(http: httpx.AsyncClient, registration: ServiceInstance) -> None:
    response = await http.get("/api/v1/device-uploads/template", params={"language": "de"})

    assert response.status_code == 200
    assert response.headers["content-type"] == XLSX
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"device-bulk-upload-template-de.xlsx\"; "
        "filename*=UTF-8''device-bulk-upload-template-de.xlsx")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert openpyxl.load_workbook(BytesIO(response.content)).sheetnames  # the bytes themselves, no base64


async def test_a_device_registers_with_its_proof_of_purchase_as_a_multipart_upload(
        http: httpx.AsyncClient, settings: Settings, registration: ServiceInstance, amqp_url: str,
        portal: PortalClient) -> None:
    token = await customer(settings, registration, amqp_url)
    fields = device_registration()
    del fields["proof_of_purchase"]

    response = await http.post("/api/v1/devices", headers={"Authorization": f"Bearer {token}"},
                               data={"data": json.dumps(fields)},
                               files={"proof_of_purchase": ("Kaufbeleg März.pdf", PDF, "application/pdf")})

    assert response.status_code == 201, response.text
    assert response.json()["warranty"]["months"] == 36
    device = await portal.call("registration.get_device", {"device_id": response.json()["device_id"]}, token=token)
    assert device["serial_number"] == fields["serial_number"]


async def test_a_multipart_body_that_does_not_parse_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/devices", content=b"--x\r\n", headers={
        "Authorization": "Bearer x", "Content-Type": "multipart/form-data"})  # no boundary

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_message"


async def test_an_upload_route_refuses_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/devices", json=device_registration(), headers={"Authorization": "Bearer x"})

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


async def test_a_bulk_upload_goes_up_as_multipart_and_its_result_comes_down_as_a_download(
        http: httpx.AsyncClient, settings: Settings, registration: ServiceInstance, amqp_url: str) -> None:
    bearer = {"Authorization": f"Bearer {await customer(settings, registration, amqp_url)}"}

    queued = await http.post("/api/v1/device-uploads", headers=bearer, data={"data": '{"warranty_accepted": true}'},
                             files={"file": ("Geräte Dezember.xlsx", workbook(valid_rows(2)), XLSX)})

    assert queued.status_code == 202, queued.text
    upload_id = queued.json()["upload_id"]
    uploads: list[dict[str, object]] = []

    async def processed() -> bool:
        uploads[:] = (await http.get("/api/v1/device-uploads", headers=bearer)).json()["items"]
        return uploads[0]["status"] == "processed"
    await eventually(processed, timeout=30)
    assert (uploads[0]["upload_id"], uploads[0]["filename"], uploads[0]["processed"]) == (
        upload_id, "Geräte Dezember.xlsx", 2)
    result = await http.get(f"/api/v1/device-uploads/{upload_id}/result", headers=bearer)
    assert result.status_code == 200
    assert result.headers["content-type"] == XLSX
    assert result.headers["content-disposition"].startswith("attachment; filename=")
    rows = list(openpyxl.load_workbook(BytesIO(result.content)).active.iter_rows(values_only=True))
    assert len(rows) >= 3  # the header and the two devices, each with its result
