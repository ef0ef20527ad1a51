"""The fleet at once: many devices registered from the Excel template (OKI's "Add multiple devices", with its
status table of uploads and their result files), readings of many devices from a file, and the fleet's printed
pages per period with an xlsx export."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import ValidationError

from contracts import metering, registration
from contracts.base import FileObject
from gateway.files import file_response
from gateway.web.charts import fills_of, stacked
from gateway.web.view import Errors, Page, Refusal, View, refusal_errors, validation_errors

router = APIRouter(include_in_schema=False)
# The file's refusals belong beside the file field of these forms.
FILE_FIELD = dict.fromkeys(("file_too_large", "file_type_not_allowed", "not_a_spreadsheet", "spreadsheet_too_large",
                            "missing_columns", "duplicate_columns", "too_many_rows"), "file")


# --- many devices from the Excel template ------------------------------------------------------------------------

async def uploads_page(view: View, http_status: int = 200, errors: Errors | None = None,
                       queued: bool = False) -> Response:
    uploads = await view.call(registration.ListBulkUploads.routing_key, {"page_size": 50})
    return view.render("fleet_uploads.html", http_status, uploads=uploads["items"], errors=errors, queued=queued)


@router.get("/devices/uploads")
async def device_uploads(view: Page, queued: str = "") -> Response:
    # Taken as text, as a page number is: a flag typed wrong in the address is no flag, not FastAPI's JSON 422.
    return await uploads_page(view, queued=queued in ("1", "true", "on"))


@router.get("/devices/uploads/template")
async def device_template(view: Page) -> Response:
    template = await view.call(registration.BulkTemplate.routing_key, {"language": view.language})
    return view.finish(file_response(FileObject.model_validate(template)))


@router.post("/devices/uploads")
async def upload_devices(view: Page) -> Response:
    form = await view.form()
    try:
        file = await view.file("file")
    except ValidationError as error:
        return await uploads_page(view, 400, validation_errors(view, error, {"filename": "file"}))
    if file is None:
        missing = view.gettext("Please choose the filled-in template.")
        return await uploads_page(view, 400, Errors(fields={"file": missing}))
    try:
        await view.call(registration.BulkUpload.routing_key, {
            "file": file.model_dump(), "warranty_accepted": form.get("warranty_accepted") == "on"})
    except Refusal as error:
        return await uploads_page(view, 400, refusal_errors(view, error, FILE_FIELD))
    return view.redirect("/devices/uploads?queued=1")


@router.get("/devices/uploads/{upload_id}/result")
async def upload_result(view: Page, upload_id: str) -> Response:
    result = await view.call(registration.BulkResult.routing_key, {"upload_id": upload_id})
    return view.finish(file_response(FileObject.model_validate(result)))


# --- readings of many devices from a file -------------------------------------------------------------------------

@router.get("/readings/upload")
async def readings_upload_page(view: Page) -> Response:
    if not view.session:
        return view.redirect("/sign-in?next=/readings/upload")
    return view.render("fleet_readings.html", outcome=None)


@router.post("/readings/upload")
async def upload_readings(view: Page) -> Response:
    await view.form()
    try:
        file = await view.file("file")
    except ValidationError as error:
        return view.render("fleet_readings.html", 400, outcome=None,
                           errors=validation_errors(view, error, {"filename": "file"}))
    if file is None:
        return view.render("fleet_readings.html", 400, outcome=None,
                           errors=Errors(fields={"file": view.gettext("Please choose a file with readings.")}))
    try:
        # A reload of the answer sends the same file again: the same command, answered with the first reply.
        outcome = await view.call(metering.SubmitBulk.routing_key, {"file": file.model_dump()},
                                  message_id=view.repeated_id("readings", file.content_base64))
    except Refusal as error:
        return view.render("fleet_readings.html", 400, outcome=None, errors=refusal_errors(view, error, FILE_FIELD))
    return view.render("fleet_readings.html", outcome=outcome)


# --- the fleet's printed pages ------------------------------------------------------------------------------------

def usage_range(view: View, start: str | None, end: str | None) -> tuple[dict[str, str], Errors | None]:
    """The periods asked for; when none are given, the last year's and the running one (whose end is still ahead)."""
    today = view.today
    fields = {"from": start or (today - timedelta(days=365)).isoformat(),
              "to": end or (today + timedelta(days=366)).isoformat()}
    try:
        metering.Usage.model_validate(fields)
    except ValidationError as error:
        return fields, validation_errors(view, error, {"from": "start", "to": "end", "": "end"})
    return fields, None


@router.get("/usage")
async def usage(view: Page, start: str | None = None, end: str | None = None) -> Response:
    period, errors = usage_range(view, start, end)
    if errors:
        return view.render("fleet_usage.html", 400, period=period, rows=[], errors=errors)
    report = await view.call(metering.Usage.routing_key, period)
    periods: dict[str, dict[str, Any]] = {}
    for row in report["items"]:  # the fleet's pages per period, counter by counter
        summed = periods.setdefault(row["period_end"], {"period_end": row["period_end"], "total": 0,
                                                        "printed_pages": {}})
        summed["total"] += row["total"]
        for counter, pages in row["printed_pages"].items():
            summed["printed_pages"][counter] = summed["printed_pages"].get(counter, 0) + pages
    newest_first = [periods[end] for end in sorted(periods, reverse=True)]
    counters = sorted({counter for summed in newest_first for counter in summed["printed_pages"]})
    return view.render("fleet_usage.html", period=period, rows=report["items"],
                       chart=stacked(newest_first, counters, shown=None), fills=fills_of(counters))


@router.get("/usage/export")
async def usage_export(view: Page, start: str | None = None, end: str | None = None) -> Response:
    period, errors = usage_range(view, start, end)
    if errors:
        return view.render("fleet_usage.html", 400, period=period, rows=[], errors=errors)
    report = await view.call(metering.Usage.routing_key, {**period, "format": "xlsx"})
    return view.finish(file_response(FileObject.model_validate(report["file"])))
