"""The operator token the CLI sends: given (`--token`, PORTAL_ADMIN_TOKEN), or minted for the local stack."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from contracts.tokens import LOCAL_TOKEN_SECRET, sign_token

MINTED_LIFETIME = timedelta(minutes=15)
MINTED_USER = "portal-admin"


class NoToken(Exception):
    """No token given, and none may be minted here."""


def operator_token(given: str | None) -> str:
    """`given`, else an operator token signed with PORTAL_TOKEN_SECRET (the local default when unset).

    Only outside production: there an operator signs in (`accounts.login`) and passes the token,
    so every operator action is someone's; whoever holds the production secret could mint
    tokens anyway, but the tool does not make that the easy path.
    """
    if given:
        return given
    if os.environ.get("PORTAL_ENV", "development") == "production":
        raise NoToken("PORTAL_ENV is production: give an operator's token with --token or PORTAL_ADMIN_TOKEN")
    now = datetime.now(UTC)
    return sign_token(os.environ.get("PORTAL_TOKEN_SECRET") or LOCAL_TOKEN_SECRET, user_id=MINTED_USER,
                      role="operator", session_id=uuid.uuid4().hex, issued_at=now, expires_at=now + MINTED_LIFETIME)
