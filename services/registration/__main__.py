"""Run registration as its own process: `python -m services.registration`."""

from services.registration.app import service

service.run()
