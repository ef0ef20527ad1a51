"""The notifier's own `PORTAL_NOTIFIER_*` settings, on top of those every service reads."""

from __future__ import annotations

from pydantic import Field

from contracts.accounts import Language
from services.runtime.instance import Instance
from services.runtime.settings import Settings


class NotifierSettings(Settings):
    # A temporarily refused mail is tried again after base, 2×base, 4×base, ... (at most max_delay).
    notifier_retry_base_delay: float = 30.0
    notifier_retry_max_delay: float = 3600.0
    # Attempts before a temporarily failing mail is given up on and marked `failed` (~1 day at the defaults).
    notifier_max_attempts: int = 12
    # How often the retry loop looks for due mails.
    notifier_poll_seconds: float = 1.0
    # Every SMTP operation (connect, each command) gives up after this many seconds.
    notifier_smtp_timeout: float = 30.0
    # A sender holds a mail this long; a sender that died frees it after that. Longer than a whole
    # SMTP conversation, so a slow sender is never overtaken by another replica.
    notifier_lease_seconds: float = 300.0
    # A reminder's one-click unsubscribe link works this long (ARCHITECTURE: such tokens expire); a mail read
    # late in the year, after the next reminders came with links of their own, still unsubscribes.
    notifier_unsubscribe_days: int = 365
    # How long a technician's visit lasts in its calendar entries, from the ETA on.
    notifier_visit_minutes: int = Field(default=120, ge=1)
    # The vendor's service desk, told when a customer adds a note to a ticket (OneRicoh: "Et varsel vil bli sendt
    # til Ricoh"); unset, no such mail is sent. Mails to it are in `notifier_service_desk_language`.
    notifier_service_desk_email: str | None = None
    notifier_service_desk_language: Language = "en"
    # A mail whose recipient is not known yet waits this long for the accounts event naming them, then is
    # recorded `failed` ("recipient never known").
    notifier_wait_days: int = Field(default=30, ge=1)
    # How often every replica looks for waiting mails whose recipient is known by now, or that waited too long.
    notifier_wait_sweep_seconds: float = Field(default=60.0, gt=0)

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return float(min(self.notifier_retry_base_delay * 2 ** max(attempts - 1, 0), self.notifier_retry_max_delay))


def notifier_settings(instance: Instance) -> NotifierSettings:
    return instance.settings_as(NotifierSettings)
