"""A person's first visit, end to end: accounts and the notifier as real processes, real SMTP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from contracts.client import PortalClient
from services.runtime.settings import Settings
from tests.builders import sign_up
from tests.support import Mailbox, ServiceProcesses, eventually, outcome, plain_text, wait_healthy

LINK = re.compile(r"confirm-email\?token=([A-Za-z0-9_-]+)")


@pytest.fixture
def services(settings: Settings) -> Iterator[None]:
    with ServiceProcesses(settings) as processes:
        processes.start("accounts", "notifier")
        yield


async def test_sign_up_mail_confirm_sign_in_profile_logout_and_the_token_is_refused(
        services: None, portal: PortalClient, mailbox: Mailbox) -> None:
    await wait_healthy(portal, "accounts")
    await wait_healthy(portal, "notifier")
    request = sign_up(language="de")
    await portal.call("accounts.register", request, lang="de")

    async def mailed() -> bool:
        return any(request["email"] in str(message["To"]) for message in mailbox.messages)
    await eventually(mailed, timeout=20)
    mail = next(message for message in mailbox.messages if request["email"] in str(message["To"]))
    assert mail["Auto-Submitted"] == "auto-generated"
    match = LINK.search(plain_text(mail))
    assert match, "no confirmation link in the mail"

    assert (await portal.call("accounts.confirm_email", {"token": match.group(1)}))["status"] == "active"
    session = await portal.call("accounts.login", {"login": request["username"], "password": request["password"]})
    token = session["access_token"]
    profile = await portal.call("accounts.update_profile", {"first_name": "Clara", "last_name": "Zimmermann"},
                                token=token)
    assert profile["first_name"] == "Clara" and profile["language"] == "de"
    assert await portal.call("accounts.logout", {}, token=token) == {}
    assert await outcome(portal, "accounts.get_profile", {}, token) == "unauthenticated"
    assert len([message for message in mailbox.messages if request["email"] in str(message["To"])]) == 1
