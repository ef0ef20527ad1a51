"""Run notifier as its own process: `python -m services.notifier`."""

from services.notifier.app import service

service.run()
