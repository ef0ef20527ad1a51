"""The access token on the wire (`authorization: Bearer <token>`): a JWT, shared by who signs and who verifies it.

accounts signs tokens and every service verifies them (services/runtime/tokens.py); the operators'
CLI (admin/) signs one itself for the local stack. Both build the claims here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jwt

ALGORITHM = "HS256"
ISSUER = "portal.accounts"
# The signing key of the local stack when PORTAL_TOKEN_SECRET is not set; refused when PORTAL_ENV=production.
LOCAL_TOKEN_SECRET = "local-development-secret-change-me-0123456789"


def sign_token(secret: str, *, user_id: str, role: str, session_id: str, issued_at: datetime, expires_at: datetime,
               customer_number: str | None = None, contract_number: str | None = None) -> str:
    payload: dict[str, Any] = {
        "iss": ISSUER, "sub": user_id, "role": role, "sid": session_id,
        "cus": customer_number, "con": contract_number,
        # Milliseconds: a revocation "of every session until now" must not spare a token of the same second.
        "iat_ms": round(issued_at.timestamp() * 1000), "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)
