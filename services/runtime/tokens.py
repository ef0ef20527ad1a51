"""Access tokens: signed by accounts, verified by every service locally, refused once revoked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt
from pydantic import BaseModel

from contracts.tokens import ALGORITHM, ISSUER, sign_token


class Role(StrEnum):
    CUSTOMER = "customer"
    DEALER = "dealer"
    OPERATOR = "operator"


class Claims(BaseModel):
    """Who is calling: what an access token carries."""

    user_id: str
    role: Role
    session_id: str
    customer_number: str | None = None
    # Set for a contract sign-in: the token sees only that contract's devices.
    contract_number: str | None = None
    issued_at: datetime
    expires_at: datetime


class InvalidToken(Exception):
    """The token is missing, malformed, signed with another key or expired."""


def issue_token(secret: str, *, user_id: str, role: Role, now: datetime, lifetime: timedelta,
                customer_number: str | None = None, contract_number: str | None = None,
                session_id: str | None = None) -> tuple[str, Claims]:
    # The token keeps milliseconds for `issued_at` and seconds for `expires_at`: so do the claims.
    issued_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
    claims = Claims(user_id=user_id, role=role, session_id=session_id or uuid.uuid4().hex,
                    customer_number=customer_number, contract_number=contract_number,
                    issued_at=issued_at, expires_at=(now + lifetime).replace(microsecond=0))
    token = sign_token(secret, user_id=claims.user_id, role=claims.role.value, session_id=claims.session_id,
                       customer_number=claims.customer_number, contract_number=claims.contract_number,
                       issued_at=issued_at, expires_at=claims.expires_at)
    return token, claims


def verify_token(token: str, secret: str) -> Claims:
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                             options={"require": ["exp", "iat", "sub", "sid", "role"]})
        return Claims(
            user_id=payload["sub"], role=Role(payload["role"]), session_id=payload["sid"],
            customer_number=payload.get("cus"), contract_number=payload.get("con"),
            issued_at=datetime.fromtimestamp(payload.get("iat_ms", payload["iat"] * 1000) / 1000, tz=UTC),
            expires_at=datetime.fromtimestamp(payload["exp"], tz=UTC),
        )
    except (jwt.PyJWTError, KeyError, ValueError) as error:
        raise InvalidToken(str(error)) from None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
