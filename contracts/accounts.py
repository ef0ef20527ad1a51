"""accounts: people, customers, contracts, sessions (CATALOG §2)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from contracts.base import Event


class SessionRevoked(Event):
    """A session (or every session of a user) may no longer be used, from now until `until`."""

    name: ClassVar[str] = "accounts.session.revoked"

    session_id: str | None = Field(default=None, description="The revoked session, or none for all of the user's.")
    user_id: str | None = Field(default=None, description="With no `session_id`: every session of this user "
                                                          "issued before `revoked_at` is refused.")
    revoked_at: datetime = Field(description="When the revocation took effect (UTC).")
    until: datetime = Field(description="After this, every token it concerns has expired anyway (UTC).")
