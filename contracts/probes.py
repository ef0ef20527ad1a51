"""What the container health probes share: the address a process's own HTTP port answers on from inside it, and the
one GET that asks it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping


def local_url(host: str, port: int, path: str) -> str:
    """`http://host:port/path` as seen from the same container: a process listening everywhere is asked over the
    loopback, an IPv6 address goes in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def probe_problem(url: str, expected: Mapping[str, object], timeout: float) -> str | None:
    """None when GET `url` answers the JSON `expected` within `timeout`, else what went wrong (for stderr)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.load(response)
    except (OSError, ValueError) as error:  # refused, timed out, 503 (HTTPError), not JSON
        return f"{url}: {error!r}"
    if body != expected:
        return f"{url}: {body!r}"
    return None
