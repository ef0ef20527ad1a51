"""The OpenAPI 3.1 document of the gateway: schemas from the contracts' models, written to `docs/openapi.json`.

`python -m gateway.openapi` (part of `make docs`) writes it; a test fails when the committed one is stale.
"""

from __future__ import annotations

import copy
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from contracts.topology import SERVICES
from gateway.problems import Problem
from gateway.routes import ROUTES, Route

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
REF = "#/components/schemas/{model}"
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)
ERROR_TEXT = {400: "Not a JSON object (`invalid_message`)", 401: "No valid session (`unauthenticated`)",
              403: "Not allowed (`forbidden`; also a cookie-authenticated write without its CSRF token)",
              404: "Not found, or not yours (`not_found`)",
              409: "A conflict or a refusal of the catalogue (`conflict`, `email_taken`, `already_dispatched`, ...)",
              413: "The request body is too large", 415: "Not the documented media type", 422: "`validation_failed`",
              429: "`rate_limited`; retry after `Retry-After` seconds", 500: "`internal`",
              503: "No service answered; retry after `Retry-After` seconds"}


@cache
def schemas() -> tuple[dict[tuple[Any, JsonSchemaMode], dict[str, Any]], dict[str, Any]]:
    """Every request and reply model as a component, and the reference to each."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for route in ROUTES:
        models.append((route.request, "validation"))
        if route.reply is not None:
            models.append((route.reply, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    definitions: dict[str, Any] = top.get("$defs", {})
    return dict(refs), definitions


def component(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    reference: dict[str, Any] = schemas()[0][(model, mode)]
    return reference


def request_schema(route: Route) -> dict[str, Any]:
    """The command's schema without the fields the path or the route sets."""
    name = component(route.request, "validation")["$ref"].rsplit("/", 1)[1]
    schema: dict[str, Any] = copy.deepcopy(schemas()[1][name])
    for taken in path_parameters(route) | set(route.fixed) | set(route.path_fields(dummy_path(route))):
        schema.get("properties", {}).pop(taken, None)
        if taken in schema.get("required", []):
            schema["required"].remove(taken)
    schema.pop("title", None)
    return schema


def path_parameters(route: Route) -> set[str]:
    return {part[1:-1] for part in route.path.split("/") if part.startswith("{")}


def dummy_path(route: Route) -> dict[str, str]:
    return dict.fromkeys(path_parameters(route), "x")


def operation(route: Route) -> dict[str, Any]:
    """What FastAPI cannot see of a generic endpoint: parameters, body, responses, security."""
    body = request_schema(route)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1, **({"enum": list(SERVICES)} if name == "service" else {})}}
        for name in sorted(path_parameters(route))]
    extra: dict[str, Any] = {}
    if route.method == "GET":
        required = set(body.get("required", []))
        parameters += [{"name": name, "in": "query", "required": name in required, "schema": schema}
                       for name, schema in body.get("properties", {}).items()]
    elif route.uploads:
        properties: dict[str, Any] = {"data": {
            "type": "string", "contentMediaType": "application/json",
            "description": "The command's other fields as a JSON object: "
                           + ", ".join(f"`{name}`" for name in body.get("properties", {}) if name not in route.uploads)
                           + "."}}
        properties.update({name: {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
                           for name in route.uploads})
        extra["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": properties,
            "required": [name for name in route.uploads if name in body.get("required", [])]}}}}
    else:
        extra["requestBody"] = {"required": bool(body.get("required")),
                                "content": {"application/json": {"schema": body}}}
    if route.method != "GET":
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "description": "Becomes the command's message id: a retry with the same key and body is "
                                          "applied once and answered the same.",
                           "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                                      "pattern": "^[\\x21-\\x7e]+$"}})
    if parameters:
        extra["parameters"] = parameters
    extra["responses"] = responses(route)
    extra["security"] = [] if route.anonymous else [{"bearer": []}, {"cookie": []}]
    extra["description"] = f"Catalogue command `{route.command}`."
    return extra


def responses(route: Route) -> dict[str, Any]:
    if route.download is not None:
        success: dict[str, Any] = {
            "description": "The file, as a download",
            "headers": {"Content-Disposition": {"schema": {"type": "string"},
                                                "description": "`attachment` with the file's name"}},
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        XLSX: {"schema": {"type": "string", "format": "binary"}}}}
    else:
        reply = component(route.reply, "serialization") if route.reply is not None else {"type": "object"}
        success = {"description": "The command's reply", "content": {"application/json": {"schema": reply}}}
    return {str(route.status): success,
            **{str(status): {"$ref": f"#/components/responses/problem{status}"} for status in ERROR_STATUSES}}


def components() -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": component(Problem, "serialization")}}
    return {"schemas": schemas()[1],
            "responses": {f"problem{status}": {"description": ERROR_TEXT[status], "content": problem}
                          for status in ERROR_STATUSES},
            "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "cookie": {"type": "apiKey", "in": "cookie", "name": "portal_session",
                   "description": "Set at sign-in; writes need the `portal_csrf` cookie's value in `X-CSRF-Token`. "
                                  "With PORTAL_ENV=production both names carry the `__Host-` prefix."}}}


def render() -> str:
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    return json.dumps(create_app(GatewaySettings()).openapi(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    DOCUMENT.write_text(render(), encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

if __name__ == "__main__":
    sys.exit(main())
