"""Read-only answers of registration are not kept: anonymous callers cannot grow the store."""

from __future__ import annotations

from contracts.client import PortalClient
from services.runtime.service import ServiceInstance


async def test_twenty_anonymous_template_downloads_store_nothing(registration: ServiceInstance,
                                                                 portal: PortalClient) -> None:
    before = await registration.db.message_claims.count_documents({})
    for _ in range(20):
        template = await portal.call("registration.bulk_template", {})
        assert template["content_base64"]
    assert await registration.db.message_claims.count_documents({}) == before
