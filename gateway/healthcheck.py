"""`python -m gateway.healthcheck`: the gateway container's health probe.

GET /healthz on this container's own port (PORTAL_GATEWAY_PORT): exits 0 when the gateway serves,
else 1. Kubernetes' liveness and readiness probes ask /healthz too: the gateway's own state, not the
services' (shared by every gateway pod; one service down must not take them all out of the Service).
Whether all six services answer is `/readyz`, the operators' status.
"""

from __future__ import annotations

import json
import sys
import urllib.request

from contracts.probes import local_url
from gateway.settings import GatewaySettings

TIMEOUT_SECONDS = 5.0


def healthz_url(settings: GatewaySettings) -> str:
    return local_url(settings.gateway_host, settings.gateway_port, "/healthz")


def main() -> int:
    url = healthz_url(GatewaySettings())
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except (OSError, ValueError) as error:
        print(f"{url}: {error!r}", file=sys.stderr)
        return 1
    if body != {"status": "ok"}:
        print(f"{url}: {body!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
