"""Run accounts as its own process: `python -m services.accounts`."""

from services.accounts.app import service

service.run()
