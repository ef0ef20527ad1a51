"""Run metering as its own process: `python -m services.metering`."""

from services.metering.app import service

service.run()
