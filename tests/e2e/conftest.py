"""The six services as real processes, started once per test module that asks for `stack`: its own vhost, database
prefix and SMTP server, the demo catalogue loaded, the bootstrap operator signed in. Its tests keep to themselves
with customers, people and serials of their own.

The stack builds on the `module_*` fixtures of tests/conftest.py (not on `amqp_url`, `settings`, `portal`,
`mailbox`), so the in-process journeys beside it keep their per-test fixtures. A module using `stack` runs its tests in
one event loop (`pytestmark = pytest.mark.asyncio(loop_scope="module")`), the loop its client lives in.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.client import PortalClient
from contracts.topology import SERVICES
from deploy.local.demo import load_demo_catalogue
from deploy.local.deps import free_port
from services.runtime.settings import Settings
from tests.builders import sign_up
from tests.support import TEST_QUEUE_TYPE, Mailbox, ServiceProcesses, eventually, plain_text, wait_healthy

PUBLIC_URL = "https://portal.example.test"
CONFIRMATION_LINK = re.compile(r"https://portal\.example\.test/confirm-email\?token=([A-Za-z0-9_-]+)")
# How long nothing more may arrive before "each mail once" holds: the notifier sends within a second of an event.
QUIET_SECONDS = 3.0
# Six processes on two shared cores start slowly.
STARTUP_SECONDS = 90.0


@dataclass
class SignedUp:
    """Someone who signed up and confirmed their address from the mail."""

    request: dict[str, Any]
    user_id: str
    status: str  # after confirming: `active` or `pending_verification`

    @property
    def email(self) -> str:
        return str(self.request["email"])

    @property
    def language(self) -> str:
        return str(self.request["language"])


@dataclass
class Stack:
    portal: PortalClient
    settings: Settings
    mailbox: Mailbox
    operator: str  # the bootstrap operator's access token
    mongo: AsyncMongoClient[dict[str, Any]]

    def db(self, service: str) -> AsyncDatabase[dict[str, Any]]:
        """A service's database, for assertions only: the tests act through `portal`."""
        return self.mongo[self.settings.database_name(service)]

    async def mail(self, address: str, subject: str, timeout: float = 30.0) -> EmailMessage:
        """The first mail to `address` whose subject matches the pattern `subject`, waiting for it."""
        found: list[EmailMessage] = []

        async def arrived() -> bool:
            found[:] = [mail for mail in self.mailbox.to(address) if re.search(subject, str(mail["Subject"]))]
            return bool(found)
        await eventually(arrived, timeout=timeout, step=0.1)
        return found[0]

    async def sign_up(self, language: str, **fields: Any) -> SignedUp:
        """`accounts.register`, then `accounts.confirm_email` with the token of the confirmation mail's link."""
        request = sign_up(language=language, **fields)
        registered = await self.portal.call("accounts.register", request, lang=language)
        assert registered["status"] == "pending_confirmation"
        mail = await self.mail(request["email"], ".")
        link = CONFIRMATION_LINK.search(plain_text(mail))
        assert link, "no confirmation link in the mail"
        confirmed = await self.portal.call("accounts.confirm_email", {"token": link.group(1)}, lang=language)
        assert confirmed["user_id"] == registered["user_id"]
        return SignedUp(request, registered["user_id"], confirmed["status"])

    async def sign_in(self, person: SignedUp) -> str:
        session = await self.portal.call("accounts.login", {"login": person.request["username"],
                                                            "password": person.request["password"],
                                                            "remember_me": True}, lang=person.language)
        return str(session["access_token"])

    async def approve(self, person: SignedUp) -> None:
        """The operator finds the person among the pending verifications and approves them."""
        pending = await self.portal.call("accounts.operator.list_pending_verifications", {"page_size": 200},
                                         token=self.operator)
        assert person.user_id in [user["user_id"] for user in pending["items"]]
        decided = await self.portal.call("accounts.operator.decide_verification", {
            "user_id": person.user_id, "approve": True, "reason": "Kundennummer geprüft"}, token=self.operator)
        assert decided["status"] == "active"

    async def mails_once(self, address: str, expected: Mapping[str, str], language: str) -> dict[str, EmailMessage]:
        """Every mail `address` gets, by kind, once the mailbox stayed quiet: exactly one mail per kind of `expected`
        (the notifier's mail name → a pattern only that mail's subject in `language` matches), nothing else, each in
        `language`; the notifier's deliveries for the address say the same."""
        async def all_arrived() -> bool:
            return len(self.mailbox.to(address)) >= len(expected)
        await eventually(all_arrived, timeout=45, step=0.2)
        await asyncio.sleep(QUIET_SECONDS)
        mails = self.mailbox.to(address)
        kinds = [[kind for kind, subject in expected.items() if re.search(subject, str(mail["Subject"]))]
                 for mail in mails]
        subjects = [str(mail["Subject"]) for mail in mails]
        assert all(len(matching) == 1 for matching in kinds), f"unexpected or ambiguous mails: {subjects}"
        assert Counter(kind for (kind,) in kinds) == Counter(expected.keys()), f"not each once: {subjects}"
        assert {mail["Content-Language"] for mail in mails} == {language}
        assert {mail["Auto-Submitted"] for mail in mails} == {"auto-generated"}
        deliveries = [delivery async for delivery in self.db("notifier").deliveries.find(
            {"recipient": address.lower()}, {"mail": 1, "status": 1, "language": 1})]
        assert Counter(delivery["mail"] for delivery in deliveries) == Counter(expected.keys())
        assert {(delivery["status"], delivery["language"]) for delivery in deliveries} == {("sent", language)}
        return {kind: mail for (kind,), mail in zip(kinds, mails, strict=True)}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(module_amqp_url: str, mongo_url: str, module_database_prefix: str, module_mailbox: Mailbox,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = Settings(amqp_url=module_amqp_url, mongodb_url=mongo_url, database_prefix=module_database_prefix,
                        smtp_host=module_mailbox.host, smtp_port=module_mailbox.port, public_url=PUBLIC_URL,
                        event_retry_base_delay=0.05, graceful_timeout=5, outbox_poll_seconds=0.5,
                        queue_type=TEST_QUEUE_TYPE)
    # The reminder scheduler runs today's schedule at start-up and then sleeps: only `run_reminders` runs it again.
    with ServiceProcesses(settings, extra_env={"PORTAL_METERING_SCHEDULER_SECONDS": "3600"},
                          log_dir=tmp_path_factory.mktemp("services")) as processes:
        processes.start(*SERVICES)
        async with PortalClient(module_amqp_url, timeout=20) as portal, \
                AsyncMongoClient[dict[str, Any]](mongo_url, timeoutMS=10_000) as mongo:
            await asyncio.gather(*(wait_healthy(portal, name, timeout=STARTUP_SECONDS) for name in SERVICES))
            await load_demo_catalogue(module_amqp_url, settings)
            session = await portal.call("accounts.login", {
                "login": settings.bootstrap_operator_email,
                "password": settings.bootstrap_operator_password.get_secret_value()})
            yield Stack(portal, settings, module_mailbox, session["access_token"], mongo)


@pytest.fixture(scope="module")
def gateway_url(module_amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The HTTP gateway as its own process in front of the stack's services (its own vhost)."""
    with gateway_process(module_amqp_url, tmp_path_factory.mktemp("gateway")) as url:
        yield url


@contextmanager
def gateway_process(amqp_url: str, log_dir: Path, **variables: str) -> Iterator[str]:
    """A gateway process on a free port, with `PORTAL_*` variables of the caller's (a vendor's brand); its URL."""
    port = free_port()
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")},
           **variables, "PORTAL_AMQP_URL": amqp_url, "PORTAL_GATEWAY_PORT": str(port)}
    with (log_dir / "gateway.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not answers(url):
            assert process.poll() is None, "the gateway exited"
            assert time.monotonic() < deadline, "the gateway did not answer /healthz"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
