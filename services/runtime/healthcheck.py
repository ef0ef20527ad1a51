"""`python -m services.runtime.healthcheck <service>`: the containers' health probe.

Sends `<service>.health` over the broker (PORTAL_AMQP_URL) and exits 0 when a replica answers `ok`
(the broker and its database answer, every queue is consumed), else 1 with the reason on stderr.
Any replica of the service may answer, so it checks the service as a whole, not one container
(a process that hangs stops answering the broker's heartbeats, and the broker hands its
unacknowledged messages to another replica). Docker's HEALTHCHECK and the Kubernetes probes run it.
"""

from __future__ import annotations

import asyncio
import sys

from contracts.client import NotDelivered, PortalClient, PortalError
from contracts.topology import SERVICES
from services.runtime.settings import Settings

TIMEOUT_SECONDS = 5.0


async def probe(service: str, amqp_url: str, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when `service` answers its health `ok` within `timeout` seconds, else what went wrong."""
    portal = PortalClient(amqp_url, timeout=timeout)
    try:
        health = await asyncio.wait_for(portal.health(service), timeout)
    except (NotDelivered, PortalError, TimeoutError, OSError) as error:
        return f"{service}.health: {error!r}"
    finally:
        try:
            await asyncio.wait_for(portal.close(), 1.0)
        except (TimeoutError, OSError):
            pass
    return None if health.status == "ok" else f"{service} is {health.status}"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: python -m services.runtime.healthcheck {{{','.join(SERVICES)}}}", file=sys.stderr)
        return 2
    problem = asyncio.run(probe(argv[0], Settings().amqp_url))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
