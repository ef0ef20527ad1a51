"""A client written from CATALOG.md alone is never refused for a field the catalogue does not name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT.parent / "shared" / "conformance" / "catalog_fields.py"


@pytest.mark.skipif(not CHECK.exists(), reason="../shared/conformance is not beside this checkout")
def test_no_request_requires_a_field_the_catalogue_does_not_name() -> None:
    result = subprocess.run([sys.executable, str(CHECK), "--docs", str(ROOT / "docs/asyncapi"),
                             "--catalog", str(ROOT.parent / "shared" / "CATALOG.md")],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1].startswith("catalog:"), result.stdout + result.stderr
    required = [line for line in result.stdout.splitlines() if line.startswith("REQUIRED")]
    assert required == []
