"""`python -m gateway`: the gateway on uvicorn at PORTAL_GATEWAY_HOST:PORTAL_GATEWAY_PORT."""

from __future__ import annotations

import uvicorn

from gateway import tracing
from gateway.app import VERSION, create_app
from gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    tracing.configure(VERSION)  # installs nothing unless OTEL_* asks for traces
    # Behind a load balancer: any number of these run side by side, they share nothing.
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                log_level="warning", proxy_headers=True)


if __name__ == "__main__":
    main()
