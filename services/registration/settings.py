"""registration's own `PORTAL_*` settings, on top of those every service reads."""

from __future__ import annotations

from services.runtime.instance import Instance
from services.runtime.settings import Settings

MB = 1024 * 1024
# Commands whose bodies carry files (proofs, spreadsheets, ERP imports of megabytes): how many one
# replica holds at once, so their bodies cannot fill its memory.
FILE_PREFETCH = 2


class RegistrationSettings(Settings):
    # Device rows per bulk upload; a file with more is `failed` with `too_many_rows` (OKI: 25).
    bulk_max_rows: int = 25
    # Bigger bulk files are refused at upload (`file_too_large`); the body limit caps them anyway.
    bulk_max_file_bytes: int = 5 * MB
    # How often the bulk loop looks for queued uploads (an upload also wakes it at once).
    bulk_poll_seconds: float = 1.0
    # A replica holds an upload this long (renewed every batch); one that died frees it after that.
    bulk_lease_seconds: float = 120.0
    # Rows stored in one write, and between two updates of the counts (and renewals of the lease).
    bulk_batch_rows: int = 200
    # An upload whose processing crashed this often is marked `failed` with `internal`.
    bulk_max_attempts: int = 3
    # Devices of `import_installed_base` read and written per batch (one bulk write each).
    import_batch_devices: int = 500


def registration_settings(instance: Instance) -> RegistrationSettings:
    return instance.settings_as(RegistrationSettings)
