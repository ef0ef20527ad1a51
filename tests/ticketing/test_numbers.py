"""Ticket numbers in a database of their own: the project number starts at PORTAL_TICKETING_FIRST_NUMBER and counts
on across devices, and a request refused because the device has an open ticket spends none."""

from __future__ import annotations

import pytest

from contracts.client import PortalClient, PortalError
from services.runtime.service import ServiceInstance
from services.ticketing.settings import TicketingSettings
from tests.ticketing.flows import customer_device, es5462, move, opened

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def settings(settings: TicketingSettings) -> TicketingSettings:
    return settings.model_copy(update={"ticketing_first_number": 7_000_001})


async def test_project_numbers_start_at_the_first_number_and_a_refused_ticket_spends_none(
        settings: TicketingSettings, portal: PortalClient, amqp_url: str, ticketing: ServiceInstance) -> None:
    token, first = await customer_device(amqp_url, ticketing, settings)
    second = await es5462(amqp_url, ticketing, first["customer_number"])
    assert await opened(portal, token, first) == "7000001/1"
    for _ in range(3):
        with pytest.raises(PortalError) as refused:
            await opened(portal, token, first)
        assert refused.value.fields == {"ticket_number": "7000001/1", "updatable": "true"}
    assert await opened(portal, token, second) == "7000002/1"
    await move(portal, settings, "7000001/1", "cancelled")
    assert await opened(portal, token, first) == "7000003/2"
