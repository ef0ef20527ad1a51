"""Every committed AsyncAPI document passes the official AsyncAPI CLI (`asyncapi validate`): no error, no warning.

The CLI comes from npm, pinned in deploy/asyncapi-cli/package-lock.json; `make install` installs it. All the
documents go through one Node process (deploy/asyncapi-cli/validate.js): about 9 s here for the six, where one
`asyncapi validate` per document took 4 s each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from contracts.topology import SERVICES
from deploy.asyncapi import DOCS

ROOT = Path(__file__).resolve().parents[2]
CLI_DIR = ROOT / "deploy" / "asyncapi-cli"


def _node() -> str:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are not installed, so the AsyncAPI CLI cannot be (sudo apt-get install npm)")
    assert (CLI_DIR / "node_modules" / "@asyncapi" / "cli" / "package.json").is_file(), (
        "the AsyncAPI CLI is not installed: run `make install` (npm ci in deploy/asyncapi-cli)")
    node = shutil.which("node")
    assert node is not None
    return node


def test_the_pinned_cli_is_the_one_installed() -> None:
    _node()
    wanted = json.loads((CLI_DIR / "package.json").read_text())["dependencies"]["@asyncapi/cli"]
    installed = json.loads((CLI_DIR / "node_modules" / "@asyncapi" / "cli" / "package.json").read_text())["version"]
    assert installed == wanted, "run `make install` again: package-lock.json changed"


def test_every_document_passes_the_asyncapi_cli_and_a_broken_one_does_not(tmp_path: Path) -> None:
    node = _node()
    documents = [DOCS / f"{service}.json" for service in SERVICES]
    broken = json.loads(documents[0].read_text())
    del broken["info"]["version"]  # required by the specification
    broken_file = tmp_path / "broken.json"
    broken_file.write_text(json.dumps(broken))
    # No usage metrics sent, no configuration written to the home directory.
    analytics = tmp_path / "asyncapi-analytics.json"
    analytics.write_text(json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "tests"}))
    env = {**os.environ, "CI": "true", "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),
           "SUPPRESS_NO_CONFIG_WARNING": "1", "HOME": str(tmp_path)}

    result = subprocess.run([node, str(CLI_DIR / "validate.js"), *map(str, documents), str(broken_file)],
                            cwd=CLI_DIR, env=env, capture_output=True, text=True, timeout=240, check=False)

    results: dict[str, str] = {}  # file: ok or failed
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            _, outcome, file = line.split(" ", 2)
            results[file] = outcome
    output = result.stdout + result.stderr
    assert {path: results.get(str(path)) for path in documents} == dict.fromkeys(documents, "ok"), output
    assert results.get(str(broken_file)) == "failed", output
    assert '"info" property must have required property "version"' in output
    assert result.returncode == 1
