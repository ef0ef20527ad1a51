"""Services import only `contracts` and the runtime, never one another; the CLI and the gateway only `contracts`
(import-linter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
SERVICE_NAMES = ("accounts", "registration", "metering", "ordering", "ticketing", "notifier")
RUNTIME_LAYERS = ("service", "events", "commands", "instance")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


def test_the_tree_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout


def skeleton(root: Path) -> None:
    """The packages and runtime modules the import contracts name, all empty."""
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    for package in ("contracts", "services", "services/runtime", "admin", "gateway", "deploy",
                    *(f"services/{name}" for name in SERVICE_NAMES)):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for module in RUNTIME_LAYERS:
        (root / f"services/runtime/{module}.py").write_text("")


def test_a_service_importing_another_service_breaks_the_contract(tmp_path: Path) -> None:
    skeleton(tmp_path)
    (tmp_path / "services/metering/handlers.py").write_text("from services.registration import store\n")
    (tmp_path / "services/registration/store.py").write_text("")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Services never import one another BROKEN" in result.stdout


def test_the_command_pipeline_importing_the_service_breaks_the_contract(tmp_path: Path) -> None:
    skeleton(tmp_path)
    (tmp_path / "services/runtime/commands.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from services.runtime.service import Service\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Runtime pipelines sit below the service (no import cycle) BROKEN" in result.stdout


def test_the_operators_cli_importing_the_runtime_breaks_the_contract(tmp_path: Path) -> None:
    skeleton(tmp_path)
    (tmp_path / "admin/cli.py").write_text("from services.runtime import tokens\n")
    (tmp_path / "services/runtime/tokens.py").write_text("")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "The operators' CLI speaks only the contracts BROKEN" in result.stdout


def test_the_gateway_importing_a_service_or_the_deployment_breaks_the_contract(tmp_path: Path) -> None:
    for culprit in ("from services.runtime import tokens\n", "from deploy import local\n"):
        skeleton(tmp_path)
        (tmp_path / "services/runtime/tokens.py").write_text("")
        (tmp_path / "deploy/local.py").write_text("")
        (tmp_path / "gateway/app.py").write_text(culprit)
        result = lint_imports(tmp_path)
        assert result.returncode != 0, culprit
        assert "The HTTP gateway speaks only the contracts BROKEN" in result.stdout
