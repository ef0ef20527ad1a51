"""PORTAL_SMTP_TLS and the SMTP login against servers that demand them: nothing goes out in clear.

Every server has a certificate from a test CA (trustme). The mailer builds its TLS context with
`ssl.create_default_context()`, which reads OpenSSL's default verify paths when it is called, so
pointing `SSL_CERT_FILE` at the test CA makes the notifier trust it without touching production
code; certificates are still verified as in production (see the test without that CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from contracts.client import PortalClient
from deploy.local.deps import free_port
from services.notifier.app import service
from services.notifier.settings import NotifierSettings
from services.notifier.store import delivery_id
from services.runtime.service import ServiceInstance
from services.runtime.settings import Settings
from tests.builders import random_email
from tests.notifier.support import list_deliveries, publish, reset_requested
from tests.support import Mailbox, eventually, running

USERNAME, PASSWORD = "notifier", "s3cret-Passw0rd"


@dataclass
class SecureMailbox(Mailbox):
    """A mailbox that checks logins and notes, for each mail, whether it came over TLS and after which login."""

    logins: list[str] = field(default_factory=list)  # every AUTH attempt that reached the authenticator
    received: list[tuple[bool, str | None]] = field(default_factory=list)  # (over TLS, authenticated login)

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append(auth_data.login.decode())
        valid = (auth_data.login, auth_data.password) == (USERNAME.encode(), PASSWORD.encode())
        return AuthResult(success=valid, handled=False, auth_data=auth_data)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        login = session.login_data.decode() if session.login_data else None
        self.received.append((over_tls, login))
        return await super().handle_DATA(server, session, envelope)


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[SecureMailbox]:
    mailbox = SecureMailbox(port=free_port())
    controller = Controller(mailbox, hostname=mailbox.host, port=mailbox.port, authenticator=mailbox.authenticate,
                            auth_required=True, **options)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def trusted_ca(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notifier, in this process, trusts the test CA."""
    path = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


@pytest.fixture
def starttls_server(server_tls: ssl.SSLContext) -> Iterator[SecureMailbox]:
    """Refuses MAIL before STARTTLS and unauthenticated mail, and offers AUTH only after STARTTLS."""
    with serving(tls_context=server_tls, require_starttls=True, auth_require_tls=True) as mailbox:
        yield mailbox


@pytest.fixture
def smtps_server(server_tls: ssl.SSLContext) -> Iterator[SecureMailbox]:
    """Speaks TLS from the first byte (SMTPS) and refuses unauthenticated mail."""
    # aiosmtpd counts only STARTTLS as encryption for `auth_require_tls`, so it would never offer AUTH here;
    # the connection is encrypted anyway, which is what its warning about auth_require_tls=False is about.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        with serving(ssl_context=server_tls, auth_require_tls=False) as mailbox:
            yield mailbox


@contextlib.asynccontextmanager
async def notifier_for(settings: Settings, mailbox: Mailbox, tls: Literal["none", "starttls", "tls"],
                       username: str | None = USERNAME, password: str = PASSWORD) -> AsyncIterator[ServiceInstance]:
    pointed = settings.model_copy(update={
        "smtp_host": mailbox.host, "smtp_port": mailbox.port, "smtp_tls": tls, "smtp_username": username,
        "smtp_password": SecretStr(password) if username else None})
    notifier_settings = NotifierSettings(**dict(pointed), notifier_retry_base_delay=0.2, notifier_retry_max_delay=1.0,
                                         notifier_poll_seconds=0.05, notifier_smtp_timeout=2.0)
    async with running(service, notifier_settings) as instance:
        yield instance


async def attempted(instance: ServiceInstance, message_id: str, address: str) -> dict[str, Any]:
    """The delivery once its first attempt is over."""
    found: list[dict[str, Any]] = []

    async def tried() -> bool:
        delivery = await instance.db.deliveries.find_one({"_id": delivery_id(message_id, address)})
        found[:] = [delivery] if delivery is not None and delivery["attempts"] >= 1 else []
        return bool(found)
    await eventually(tried)
    return found[0]


@pytest.mark.usefixtures("trusted_ca")
async def test_starttls_with_a_login_sends_the_mail_over_the_upgraded_connection(
        settings: Settings, starttls_server: SecureMailbox, amqp_url: str) -> None:
    event = reset_requested(random_email())
    async with notifier_for(settings, starttls_server, "starttls") as notifier:
        message_id = await publish(amqp_url, event)
        delivery = await attempted(notifier, message_id, event.email)

    assert (delivery["status"], delivery["last_error"]) == ("sent", None)
    assert [message["To"].addresses[0].addr_spec for message in starttls_server.messages] == [event.email]
    assert starttls_server.received == [(True, USERNAME)]
    assert starttls_server.logins == [USERNAME]


@pytest.mark.usefixtures("trusted_ca")
async def test_implicit_tls_with_a_login_sends_the_mail(
        settings: Settings, smtps_server: SecureMailbox, amqp_url: str) -> None:
    event = reset_requested(random_email())
    async with notifier_for(settings, smtps_server, "tls") as notifier:
        message_id = await publish(amqp_url, event)
        delivery = await attempted(notifier, message_id, event.email)

    assert (delivery["status"], delivery["last_error"]) == ("sent", None)
    assert [message["To"].addresses[0].addr_spec for message in smtps_server.messages] == [event.email]
    assert smtps_server.received == [(True, USERNAME)]


@pytest.mark.usefixtures("trusted_ca")
async def test_a_wrong_password_is_a_permanent_failure_recorded_as_failed(
        settings: Settings, starttls_server: SecureMailbox, amqp_url: str, portal: PortalClient,
        operator: str) -> None:
    event = reset_requested(random_email())
    async with notifier_for(settings, starttls_server, "starttls", password="wrong") as notifier:
        message_id = await publish(amqp_url, event)
        delivery = await attempted(notifier, message_id, event.email)
        await asyncio.sleep(0.5)  # longer than a retry would wait: a failed delivery is not tried again
        [listed] = (await list_deliveries(portal, operator, recipient=event.email)).items

    assert delivery["status"] == "failed"
    assert (listed.status, listed.attempts, listed.next_attempt_at) == ("failed", 1, None)
    assert listed.last_error is not None and "535" in listed.last_error
    assert set(starttls_server.logins) == {USERNAME}  # aiosmtplib tries each offered mechanism (LOGIN, PLAIN)
    assert starttls_server.messages == []


@pytest.mark.parametrize("username", [USERNAME, None], ids=["with-login", "without-login"])
async def test_no_tls_against_a_server_requiring_starttls_sends_nothing_in_clear(
        settings: Settings, starttls_server: SecureMailbox, amqp_url: str, username: str | None) -> None:
    event = reset_requested(random_email())
    async with notifier_for(settings, starttls_server, "none", username=username) as notifier:
        message_id = await publish(amqp_url, event)
        delivery = await attempted(notifier, message_id, event.email)
        await asyncio.sleep(0.5)  # a retry, if any, sends nothing either
        status = (await attempted(notifier, message_id, event.email))["status"]

    assert "sent" not in (delivery["status"], status)
    assert starttls_server.messages == []
    assert starttls_server.logins == []  # the password never reached the server


async def test_a_certificate_from_an_untrusted_ca_is_refused(
        settings: Settings, starttls_server: SecureMailbox, amqp_url: str) -> None:
    event = reset_requested(random_email())
    async with notifier_for(settings, starttls_server, "starttls") as notifier:
        message_id = await publish(amqp_url, event)
        delivery = await attempted(notifier, message_id, event.email)

    assert delivery["status"] == "retrying"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["last_error"]
    assert starttls_server.logins == []
    assert starttls_server.messages == []
