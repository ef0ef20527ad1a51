"""`python -m services.runtime.healthcheck <service>`: the containers' health probe.

Asks this container's own service process: GET `/healthz` on its metrics port (PORTAL_METRICS_PORT, over the
loopback when it listens everywhere) and exits 0 when the process answers `ok` for `<service>`, else 1 with the
reason on stderr, within TIMEOUT_SECONDS. The process answers `ok` while its heartbeat is fresh: every 5 s it checks
that it has started consuming and is not stopping, its broker connection is up and its database answers
(`ServiceInstance._heartbeat`); a hung event loop stops the heartbeat and fails the probe within 15 s. Nothing goes
over the broker, so another replica cannot answer for this one. Docker's HEALTHCHECK and the Kubernetes probes run
it.
"""

from __future__ import annotations

import sys

from contracts.probes import local_url, probe_problem
from contracts.topology import SERVICES
from services.runtime.settings import Settings

TIMEOUT_SECONDS = 5.0


def healthz_url(settings: Settings) -> str | None:
    """Where this container's service answers its health; None when it serves no metrics port."""
    if not settings.metrics_port:  # unset, or 0 (a free port nobody outside the process knows)
        return None
    return local_url(settings.metrics_host, settings.metrics_port, "/healthz")


def probe(service: str, settings: Settings, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when this container's `service` process answers `ok`, else what went wrong."""
    url = healthz_url(settings)
    if url is None:
        return "PORTAL_METRICS_PORT is not set: the service serves no /healthz to probe"
    return probe_problem(url, {"service": service, "status": "ok"}, timeout)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: python -m services.runtime.healthcheck {{{','.join(SERVICES)}}}", file=sys.stderr)
        return 2
    problem = probe(argv[0], Settings())
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
