"""`python -m gateway.healthcheck`: the gateway container's health probe.

GET /healthz on this container's own port (PORTAL_GATEWAY_PORT): exits 0 when the gateway serves,
else 1. Kubernetes' liveness and readiness probes ask /healthz too: the gateway's own state, not the
services' (shared by every gateway pod; one service down must not take them all out of the Service).
Whether all six services answer is `/readyz`, the operators' status.
"""

from __future__ import annotations

import sys

from contracts.probes import local_url, probe_problem
from gateway.settings import GatewaySettings

TIMEOUT_SECONDS = 5.0


def healthz_url(settings: GatewaySettings) -> str:
    return local_url(settings.gateway_host, settings.gateway_port, "/healthz")


def main() -> int:
    problem = probe_problem(healthz_url(GatewaySettings()), {"status": "ok"}, TIMEOUT_SECONDS)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
