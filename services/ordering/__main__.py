"""Run ordering as its own process: `python -m services.ordering`."""

from services.ordering.app import service

service.run()
