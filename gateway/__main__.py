"""`python -m gateway`: the gateway on uvicorn at PORTAL_GATEWAY_HOST:PORTAL_GATEWAY_PORT."""

from __future__ import annotations

import uvicorn

from contracts.logs import configure_logging
from contracts.tracing import install as install_tracing
from gateway.app import VERSION, create_app
from gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging(level=settings.log_level, log_format=settings.log_format, service="gateway")
    install_tracing("gateway", VERSION)  # installs nothing unless OTEL_* asks for traces
    # Behind a load balancer: any number of these run side by side, they share nothing. `log_config=None`: uvicorn's
    # lines go through the handler configured above; its access log stays off (warning).
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                log_level="warning", log_config=None, proxy_headers=True)


if __name__ == "__main__":
    main()
