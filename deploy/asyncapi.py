"""Write the AsyncAPI document of every service to `docs/asyncapi/<service>.json` (`make docs`).

FastStream generates them from the declared commands and events; the tests check that the
committed documents match the code.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from contracts.topology import SERVICES
from services.runtime.service import Service

DOCS = Path(__file__).resolve().parent.parent / "docs" / "asyncapi"


def declared_service(name: str) -> Service:
    service = importlib.import_module(f"services.{name}.app").service
    assert isinstance(service, Service)
    return service


def document(name: str) -> dict[str, Any]:
    instance = declared_service(name).instance()
    spec: dict[str, Any] = instance.app.schema.to_specification().to_jsonable()
    return spec


def render(name: str) -> str:
    return json.dumps(document(name), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        (DOCS / f"{name}.json").write_text(render(name), encoding="utf-8")
        print(f"wrote {DOCS / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
