"""Run ticketing as its own process: `python -m services.ticketing`."""

from services.ticketing.app import service

service.run()
