"""`make demo`: a customer's journey played against the running local stack (`make run`), each step printed with
the mails it caused, so a newcomer sees the system work in a minute.

The vendor loads a customer with a page-price contract and a printer under it; a person of that customer signs up,
confirms from the mail, accepts the terms, sends a meter reading, orders toner and opens a service request; the
vendor ships the toner and dispatches a technician. Every step is a catalogue command through `PortalClient`, as
any gateway sends it; the mails are the `.eml` files the local mail sink writes (`.data/mail`).

    python -m deploy.local.journey        (or: make demo, with `make run` in another terminal)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from contracts.client import NotDelivered, PortalClient, PortalError
from services.runtime.settings import Settings

MailSource = Callable[[], list[EmailMessage]]
OFFICE = {"name": "Kanzlei Weber", "street": "Hauptstraße 1", "postal_code": "01067", "city": "Dresden",
          "country": "DE"}
TONER_BLACK = "44973512"  # the demo catalogue's black toner of an ES5431dn
CONFIRMATION = re.compile(r"/confirm-email\?token=([A-Za-z0-9_-]+)")


def mail_directory(directory: Path) -> MailSource:
    """The mails the local mail sink has written, oldest first."""
    def read() -> list[EmailMessage]:
        mails = []
        for path in sorted(directory.glob("*.eml")) if directory.is_dir() else []:
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if isinstance(parsed, EmailMessage):
                mails.append(parsed)
        return mails
    return read


class Journey:
    def __init__(self, portal: PortalClient, settings: Settings, mails: MailSource,
                 say: Callable[[str], None] = print) -> None:
        self.portal, self.settings, self.mails, self.say = portal, settings, mails, say
        self.seen = len(mails())
        self.operator = self.order = self.ticket = ""

    async def step(self, title: str, call: Awaitable[str], mails_expected: int = 0) -> None:
        """One step: its title, what the portal answered, and the mails it caused (waiting a moment for them)."""
        self.say(f"\n▶ {title}")
        self.say(f"  {await call}")
        for _ in range(75):  # up to 15 s: the notifier sends within a second of the event
            if len(self.mails()) - self.seen >= mails_expected:
                break
            await asyncio.sleep(0.2)
        new = self.mails()[self.seen:]
        self.seen += len(new)
        for mail in new:
            self.say(f"  ✉ to {mail['To']}: {mail['Subject']}")

    async def until_known(self, call: Callable[[], Awaitable[dict[str, Any]]],
                          codes: Iterable[str] = ("not_found",)) -> dict[str, Any]:
        """The reply once the service's copy of another service's data has arrived (events take a moment)."""
        waiting, deadline = set(codes), time.monotonic() + 30
        while True:
            try:
                return await call()
            except PortalError as error:
                if error.code not in waiting or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def play(self) -> None:
        portal, settings = self.portal, self.settings
        suffix = uuid.uuid4().hex[:6]
        customer, contract, serial = f"D{suffix}", f"K{suffix}", f"AK5A{int(suffix, 16) % 1_000_000:06d}"
        email_address, username, password = f"anna.{suffix}@example.com", f"anna{suffix}", "correct horse battery"
        today = datetime.now(UTC).date()
        session = await portal.call("accounts.login", {
            "login": settings.bootstrap_operator_email,
            "password": settings.bootstrap_operator_password.get_secret_value()})
        self.operator = operator = str(session["access_token"])

        async def vendor_loads_the_customer() -> str:
            await portal.call("accounts.operator.provision_customer", {
                "customer_number": customer, "name": OFFICE["name"], "contracts": [{
                    "contract_number": contract, "type": "page_price", "billing_period": "quarterly",
                    "start_date": (today - timedelta(days=200)).isoformat(), "includes_consumables": True}]},
                token=operator)
            last = (today - timedelta(days=60)).isoformat()
            await portal.call("registration.operator.import_installed_base", {"devices": [{
                "serial_number": serial, "model": "ES5431dn", "customer_number": customer, "contract_number": contract,
                "location": OFFICE, "counters": [{"name": "mono", "value": 12_000, "date": last},
                                                 {"name": "color", "value": 3_400, "date": last}]}]}, token=operator)
            return f"customer {customer}, contract {contract}, an ES5431dn with serial {serial}"
        await self.step("The vendor's ERP loads a customer, its contract and a printer", vendor_loads_the_customer())

        async def signs_up() -> str:
            registered = await self.until_known(lambda: portal.call("accounts.register", {
                "email": email_address, "username": username, "password": password, "password_confirm": password,
                "language": "de", "country": "DE", "accept_terms": True, "accept_privacy": True,
                "customer_number": customer, "serial_number": serial}, lang="de"), codes=())
            return f"user {registered['user_id']}: {registered['status']}"
        await self.step(f"{email_address} signs up with the customer number and the printer's serial", signs_up(), 1)

        async def confirms() -> str:
            mail = next(mail for mail in reversed(self.mails()) if email_address in str(mail["To"]))
            body = mail.get_body(preferencelist=("plain",))
            found = CONFIRMATION.search(str(body.get_content()) if body else "")
            if not found:
                raise SystemExit("the confirmation mail holds no link")
            confirmed = await portal.call("accounts.confirm_email", {"token": found.group(1)})
            return f"the link in the mail confirmed the address: {confirmed['status']}"
        await self.step("The person opens the confirmation link", confirms())

        token = ""

        async def signs_in() -> str:
            nonlocal token
            signed = await portal.call("accounts.login", {"login": username, "password": password})
            token = str(signed["access_token"])
            profile = await portal.call("accounts.get_profile", {}, token=token)
            await portal.call("accounts.accept_terms", {"terms_version": profile["current_terms_version"],
                                                        "privacy_version": profile["current_privacy_version"]},
                              token=token)
            devices = await portal.call("registration.list_devices", {}, token=token)
            return f"signed in, terms accepted; sees {[device['serial_number'] for device in devices['items']]}"
        await self.step("The person signs in and accepts the terms", signs_in())
        device = (await portal.call("registration.get_device", {"serial_number": serial}, token=token))["device_id"]

        async def reads() -> str:
            reading = await self.until_known(lambda: portal.call("metering.submit_reading", {
                "device_id": device, "readings": [{"counter": "mono", "value": 13_250},
                                                  {"counter": "color", "value": 3_610}]}, token=token))
            pages = ", ".join(f"{counter['counter']} {counter.get('printed_pages')}" for counter in reading["counters"])
            return f"reading stored for the period ending {reading['period_end']}; pages since the last: {pages}"
        await self.step("The person sends the meter reading", reads())

        async def orders() -> str:
            order = await self.until_known(lambda: portal.call("ordering.place_order", {
                "lines": [{"device_id": device, "article_number": TONER_BLACK, "quantity": 1}],
                "contact": {"name": "Anna Weber", "email": email_address}}, token=token))
            self.order = str(order["order_number"])
            return f"order {order['order_number']}: {order['status']}"
        await self.step("The person orders black toner", orders(), 1)

        async def reports() -> str:
            ticket = await self.until_known(lambda: portal.call("ticketing.open_ticket", {
                "device_id": device, "description": "Papierstau in Fach 2",
                "contact": {"name": "Anna Weber", "email": email_address, "phone": "+49 351 000000"}}, token=token))
            self.ticket = str(ticket["ticket_number"])
            return f"service request {ticket['ticket_number']}: {ticket['status']}"
        await self.step("The person reports a paper jam", reports(), 1)

        async def vendor_acts() -> str:
            await portal.call("ordering.operator.mark_shipped", {
                "order_number": self.order, "carrier": "DHL", "tracking_number": "00340434161094042557"},
                token=operator)
            eta = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
            await portal.call("ticketing.operator.set_status", {
                "ticket_number": self.ticket, "status": "dispatched", "technician": "Jonas Berger",
                "eta": eta.isoformat()}, token=operator)
            return f"order {self.order} shipped with DHL; technician Jonas Berger for {self.ticket}, tomorrow 09:00 UTC"
        await self.step("The vendor ships the toner and dispatches a technician", vendor_acts(), 2)
        self.say(f"\nDone. Sign in as {username} / {password} on the portal's pages to see it all.")


async def main() -> int:
    settings = Settings()
    data = Path(os.environ.get("PORTAL_LOCAL_DATA_DIR", ".data"))
    try:
        async with PortalClient(settings.amqp_url, timeout=20) as portal:
            await portal.health("accounts")
            journey = Journey(portal, settings, mail_directory(data / "mail"))
            if os.environ.get("PORTAL_SMTP_HOST"):
                print("(mails go to PORTAL_SMTP_HOST: the demo cannot show them here)")
            await journey.play()
    except (NotDelivered, TimeoutError, ConnectionError, OSError):
        print("The portal is not running: start it with `make run` in another terminal, then `make demo`.",
              file=sys.stderr)
        return 1
    except PortalError as error:
        print(f"The portal refused a step: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
