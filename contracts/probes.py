"""What the container health probes share: the address a process's own HTTP port answers on from inside it."""

from __future__ import annotations


def local_url(host: str, port: int, path: str) -> str:
    """`http://host:port/path` as seen from the same container: a process listening everywhere is asked over the
    loopback, an IPv6 address goes in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"
