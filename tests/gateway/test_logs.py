"""The gateway's log lines take the services' format: with PORTAL_LOG_FORMAT=json, uvicorn's too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def test_the_gateway_writes_json_lines_naming_itself_uvicorns_included() -> None:
    with socket.socket() as taken:  # uvicorn cannot bind: it logs an error and the process ends at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
        env |= {"PORTAL_LOG_FORMAT": "json", "PORTAL_GATEWAY_HOST": "127.0.0.1",
                "PORTAL_GATEWAY_PORT": str(taken.getsockname()[1])}
        ended = subprocess.run([sys.executable, "-m", "gateway"], env=env, capture_output=True, timeout=60)

    assert ended.returncode != 0
    lines = [json.loads(line) for line in ended.stderr.decode().splitlines() if line.strip()]  # JSON only
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert errors and errors[0]["logger"] == "uvicorn.error" and "address already in use" in errors[0]["message"]
    assert {line["service"] for line in lines} == {"gateway"}
