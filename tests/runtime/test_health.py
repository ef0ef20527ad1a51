from contracts.client import PortalClient
from services.accounts.app import service as accounts
from services.runtime.settings import Settings
from tests.support import running


async def test_a_service_answers_its_health_command(settings: Settings, portal: PortalClient) -> None:
    async with running(accounts, settings):
        health = await portal.health("accounts")
    assert health.service == "accounts"
    assert health.status == "ok"


async def test_health_says_starting_until_every_queue_is_consumed(settings: Settings, portal: PortalClient) -> None:
    async with running(accounts, settings) as instance:
        instance.ready = False  # as between the first subscriber and the last
        assert (await portal.health("accounts")).status == "starting"
        instance.ready = True
        assert (await portal.health("accounts")).status == "ok"
