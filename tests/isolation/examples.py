"""A valid body for every command, aimed at customer A's resources: what operator commands are tried with when others
send them, and where the fuzzing starts from."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from contracts.dead_letters import list_dead_letters_command, replay_dead_letters_command
from contracts.topology import SERVICES, command_queue, health_command
from deploy.local.demo import OKI_MODELS
from tests.builders import device_registration, random_email, random_id, random_serial, sign_up
from tests.isolation.world import CONTACT, FRIEDRICHSTRASSE, PASSWORD, TONER_K, World, reading_of, today
from tests.registration.test_bulk import row, upload_body, workbook

NEW_PASSWORD = "purple monkey dishwasher"
UNKNOWN_TOKEN = "n0t-a-real-link-token-" + "x" * 21


def example_bodies(world: World) -> dict[str, dict[str, Any]]:
    a = world.a
    a1 = a.devices["a1"]
    readings = reading_of(a1)["readings"]
    day = today().isoformat()
    return {
        "accounts.health": {},
        "accounts.register": sign_up(),
        "accounts.confirm_email": {"token": UNKNOWN_TOKEN},
        "accounts.resend_confirmation": {"email": random_email()},
        # Addresses nobody has: failed sign-ins lock the account they name.
        "accounts.login": {"login": random_email(), "password": PASSWORD, "remember_me": True},
        "accounts.contract_login": {"customer_number": random_id("C-"), "contract_number": "K-1"},
        "accounts.logout": {},
        "accounts.request_password_reset": {"email": random_email()},
        "accounts.reset_password": {"token": UNKNOWN_TOKEN, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
        "accounts.change_password": {"current_password": "not the password", "password": NEW_PASSWORD,
                                     "password_confirm": NEW_PASSWORD},
        "accounts.recover_username": {"first_name": "Claudia", "last_name": "Zimmermann", "email": random_email()},
        "accounts.get_profile": {},
        "accounts.update_profile": {"first_name": "Claudia", "phone": "+49 211 5266 252", "language": "de",
                                    "address": {"street1": "Hansaallee 187", "postal_code": "40549",
                                                "city": "Düsseldorf", "country": "DE"},
                                    "communication": {"email": True, "sms": False}},
        "accounts.accept_terms": {"terms_version": "1", "privacy_version": "1"},
        "accounts.list_contacts": {},
        "accounts.add_contact": {"name": "Empfang", "email": random_email(), "phone": "0211 1234"},
        "accounts.list_contracts": {},
        "accounts.operator.provision_customer": {"customer_number": a.number, "name": "Übernommen GmbH",
                                                 "contracts": []},
        "accounts.operator.list_pending_verifications": {"page": 1, "page_size": 50},
        "accounts.operator.decide_verification": {"user_id": a.user_id, "approve": False, "reason": "unknown"},
        "registration.health": {},
        "registration.operator.upsert_models": {"models": [{**OKI_MODELS[0], "serial_hint": "Behind the tray."}]},
        "registration.operator.import_installed_base": {"devices": [{
            "serial_number": a1.serial_number, "model": "ES5462 MFP", "customer_number": world.b.number,
            "contract_number": world.b.contracts[0], "location": FRIEDRICHSTRASSE}]},
        "registration.lookup_serial": {"serial_number": a1.serial_number},
        "registration.serial_hint": {"model": "C332"},
        "registration.list_models": {"page": 1, "page_size": 20, "text": "ES"},
        "registration.register_device": device_registration(serial_number=random_serial("AK6C")),
        "registration.list_devices": {"page": 1, "page_size": 50, "text": "Flur"},
        "registration.get_device": {"device_id": a1.device_id},
        "registration.rename_device": {"device_id": a1.device_id, "friendly_name": "Keller"},
        "registration.set_reminders": {"device_id": a1.device_id, "reminders": False,
                                       "reminder_email": "reminders@example.com"},
        "registration.deregister_devices": {"device_ids": [a1.device_id]},
        "registration.bulk_template": {"language": "de"},
        "registration.bulk_upload": upload_body(workbook([row(a1.serial_number)])),
        "registration.list_bulk_uploads": {"page": 1, "page_size": 50},
        "registration.bulk_result": {"upload_id": a.upload_id},
        "registration.claim_device": {"serial_number": a1.serial_number, "postal_code": "99999"},
        "registration.claim_same_location": {"device_ids": [a1.device_id]},
        "registration.request_address_change": {"device_id": a1.device_id, "address": FRIEDRICHSTRASSE,
                                                "reason": "Umzug"},
        "registration.operator.list_requests": {"kind": "address_change"},
        "registration.operator.decide_request": {"request_id": a.request_id, "approve": True, "reason": "ok"},
        "metering.health": {},
        "metering.preview_reading": reading_of(a1, 3000),
        "metering.submit_reading": reading_of(a1, 3000),
        "metering.device_report": {"serial_number": a1.serial_number, "readings": readings, "reading_date": day},
        "metering.operator.record_estimate": {"device_id": a1.device_id, "readings": readings, "reading_date": day},
        "metering.submit_bulk": {"readings": [{"serial_number": a1.serial_number, "counter": reading["counter"],
                                               "value": 3000, "reading_date": day} for reading in readings]},
        "metering.history": {"device_id": a1.device_id},
        "metering.usage": {"from": "2000-01-01", "to": "2100-12-31", "format": "json"},
        "metering.list_due": {"page": 1, "page_size": 50},
        "metering.operator.run_reminders": {"as_of": day},
        "metering.operator.overdue": {"period_end": "2025-12-31"},
        "metering.submit_by_link": {"token": UNKNOWN_TOKEN, "readings": [
            {"device_id": a1.device_id, "counter": "mono", "value": 3000}]},
        "metering.link_devices": {"token": UNKNOWN_TOKEN},
        "ordering.health": {},
        "ordering.operator.upsert_consumables": {"model": "ES5462 MFP", "items": [
            {"article_number": TONER_K, "description": "TONER-K", "kind": "toner", "color": "black"}]},
        "ordering.list_orderable": {"device_id": a1.device_id},
        "ordering.place_order": {"lines": [{"device_id": a1.device_id, "article_number": TONER_K, "quantity": 2}],
                                 "contact": {"name": CONTACT["name"], "email": CONTACT["email"]},
                                 "delivery": {"attention": "Empfang", "save_as_default": True},
                                 "confirm_duplicate": True},
        "ordering.get_order": {"order_number": a.order_number},
        "ordering.list_orders": {"device_id": a1.device_id},
        "ordering.operator.list_orders": {"status": "placed"},
        "ordering.operator.mark_shipped": {"order_number": a.order_number, "carrier": "DHL",
                                           "tracking_number": "00340434", "tracking_url": "https://dhl.example/1"},
        "ordering.operator.mark_delivered": {"order_number": a.order_number},
        "ticketing.health": {},
        "ticketing.open_ticket": {"device_id": a1.device_id, "contact": CONTACT, "description": "Druckt streifig"},
        "ticketing.add_note": {"ticket_number": a.ticket_number, "text": "Auch Fach 3"},
        "ticketing.cancel_ticket": {"ticket_number": a.ticket_number, "reason": "Selbst behoben"},
        "ticketing.get_ticket": {"ticket_number": a.ticket_number},
        "ticketing.list_tickets": {"device_id": a1.device_id},
        "ticketing.operator.list_tickets": {},
        "ticketing.operator.set_status": {"ticket_number": a.ticket_number, "status": "dispatched",
                                          "technician": "Ola Tekniker",
                                          "eta": f"{(today() + timedelta(days=1)).isoformat()}T09:00:00Z"},
        "notifier.health": {},
        "notifier.operator.list_deliveries": {"recipient": a.email},
        "notifier.unsubscribe": {"token": UNKNOWN_TOKEN},
        # Every service's dead letters, answered by the shared runtime: the queue of its health command.
        **{list_dead_letters_command(service): {"page": 1, "page_size": 50} for service in SERVICES},
        **{replay_dead_letters_command(service): {"queue": command_queue(health_command(service)), "all": True}
           for service in SERVICES},
    }
