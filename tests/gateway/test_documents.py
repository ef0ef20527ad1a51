"""The OpenAPI document: committed as the code generates it, every route in it; the offline docs page."""

from __future__ import annotations

import json
import re

import httpx

from gateway.openapi import DOCUMENT, render
from gateway.routes import ROUTES


def test_the_committed_openapi_document_matches_the_code() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), "docs/openapi.json is stale: run `make docs`"


async def test_openapi_31_documents_every_route_with_its_problems(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()

    assert document["openapi"].startswith("3.1")
    assert document == json.loads(render())
    for route in ROUTES:
        operation = document["paths"][route.full_path][route.method.lower()]
        assert operation["description"] == f"Catalogue command `{route.command}`."
        assert operation["responses"]["404"] == {"$ref": "#/components/responses/problem404"}
        assert str(route.status) in operation["responses"]
    assert "Problem" in document["components"]["schemas"]


async def test_the_docs_page_lists_every_operation_and_loads_nothing_from_outside(http: httpx.AsyncClient) -> None:
    response = await http.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for route in ROUTES:
        assert route.full_path in response.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", response.text)
    assert "<script" not in response.text
