"""Steps that many registration tests take."""

from __future__ import annotations

from contracts.accounts import TermsAccepted
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role
from tests.builders import publish_event, token_for
from tests.support import eventually


async def customer(settings: Settings, registration: ServiceInstance, amqp_url: str, *, accept: bool = True,
                   role: Role = Role.CUSTOMER, customer_number: str | None = "C-1") -> str:
    token, claims = token_for(settings, role, customer_number=customer_number)
    if accept:
        await publish_event(amqp_url, TermsAccepted.routing_key, TermsAccepted(
            user_id=claims.user_id, terms_version="1", privacy_version="1").model_dump())

        async def known() -> bool:
            return await registration.db.terms_accepted.find_one({"_id": claims.user_id}) is not None
        await eventually(known)
    return token
