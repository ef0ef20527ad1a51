"""The rules of an order (CATALOG §5 and the seeds), as pure functions of the request and the read models.

One delivery address per order (OKI: "Pro Bestellung kann nur eine Lieferadresse verarbeitet werden"): the devices'
locations must be the same address once spelling is set aside; the address delivered to is that location, and only
"z. Hd." and "Zusätzl. Info" may be given. Every line orders a consumable of its device's model, for a device whose
contract is known, running today and includes consumables.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from contracts import ordering as api
from contracts.ordering import model_key
from services.runtime.commands import CommandError
from services.runtime.mongo import Document
from services.runtime.readmodels import contract_of


def order_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year}-{seq:06d}"


def guard_key(customer_number: object, device_id: str, article_number: str) -> str:
    """One guard per customer, device and article: a device's new customer is not blocked by (nor told of) its
    previous customer's open orders."""
    return f"{customer_number or '-'}:{device_id}:{article_number}"


# --- one delivery address --------------------------------------------------------------------------------

_STREET_ABBREVIATION = re.compile(r"str\b\.?")  # after casefold: `Hauptstr.`, `Berliner Str` -> `...strasse`


def _words(text: str | None) -> str:
    folded = unicodedata.normalize("NFKC", text or "").casefold()  # casefold turns `ß` into `ss`
    folded = _STREET_ABBREVIATION.sub("strasse", folded)
    return " ".join(re.sub(r"[^\w]+", " ", folded).split())


def address_key(location: Mapping[str, object] | None) -> tuple[str, str, str]:
    """What makes two locations one delivery address: street, postcode and city, normalised (case, spacing,
    punctuation, `ß`/`ss`, `Str.`/`Straße`). The location's name and building location may differ."""
    location = location or {}
    street = _words(str(location.get("street") or ""))
    postal_code = re.sub(r"[^\w]", "", str(location.get("postal_code") or "").casefold())
    city = _words(str(location.get("city") or ""))
    return street, postal_code, city


# --- coverage ----------------------------------------------------------------------------------------------

def covered(device: Mapping[str, object], customer: Mapping[str, object] | None, today: date) -> bool:
    """Under a known contract that has begun, has not ended (its end date is its last day) and includes
    consumables. A contract accounts has not announced yet covers nothing until it has."""
    contract = contract_of(device, customer)
    if contract is None or not contract.get("includes_consumables"):  # stored booleans may read back as 1
        return False
    start = date.fromisoformat(str(contract["start_date"]))
    end = date.fromisoformat(str(contract["end_date"])) if contract.get("end_date") else None
    return start <= today and (end is None or today <= end)


# --- judging an order -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Judged:
    lines: list[api.OrderedLine]
    delivery_address: api.DeliveryAddress
    devices: list[Document]  # in the order of their first line


def judge(request: api.PlaceOrder, devices: Mapping[str, Document], customers: Mapping[str, Document],
          catalogues: Mapping[str, Sequence[Document]], today: date,
          defaults: Mapping[str, object] | None = None) -> Judged:
    """The order's lines and address, or the refusal, rules in the catalogue's order; `devices` holds only those the
    caller may see. Fields name lines by their index, as `validation_failed` does (`lines.1.article_number`).
    Without `delivery`, "z. Hd." and "Zusätzl. Info" are the first device's saved `defaults`."""
    seen: dict[tuple[str, str], int] = {}
    repeated = {}
    for index, line in enumerate(request.lines):
        pair = (line.device_id, line.article_number)
        if pair in seen:
            repeated[f"lines.{index}.article_number"] = f"ordered for this device in line {seen[pair]} already"
        seen.setdefault(pair, index)
    if repeated:
        raise CommandError("validation_failed", fields=repeated)

    unknown = {f"lines.{index}.device_id": "not_found" for index, line in enumerate(request.lines)
               if line.device_id not in devices}
    if unknown:
        raise CommandError("not_found", fields=unknown)

    first = devices[request.lines[0].device_id]
    others = {f"lines.{index}.device_id": "of another customer than the device of line 0"
              for index, line in enumerate(request.lines)
              if devices[line.device_id].get("customer_number") != first.get("customer_number")}
    if others:
        raise CommandError("multiple_customers", fields=others)

    address = address_key(first.get("location"))
    if not all(address):
        raise CommandError("no_delivery_address", fields={
            f"lines.{index}.device_id": "no street, postcode or city" for index, line in enumerate(request.lines)})
    elsewhere = {f"lines.{index}.device_id": "at another address than the device of line 0"
                 for index, line in enumerate(request.lines)
                 if address_key(devices[line.device_id].get("location")) != address}
    if elsewhere:
        raise CommandError("multiple_delivery_addresses", fields=elsewhere)

    items: list[Document] = []
    foreign = {}
    for index, line in enumerate(request.lines):
        device = devices[line.device_id]
        catalogue = catalogues.get(model_key(str(device.get("model") or ""))) or []
        item = next((item for item in catalogue if item["article_number"] == line.article_number), None)
        if item is None:
            foreign[f"lines.{index}.article_number"] = "not a consumable of this device's model"
        else:
            items.append(item)
    if foreign:
        raise CommandError("article_not_for_device", fields=foreign)

    uncovered = {f"lines.{index}.device_id": "no active contract that includes consumables"
                 for index, line in enumerate(request.lines)
                 if not covered(devices[line.device_id],
                                customers.get(str(devices[line.device_id].get("customer_number") or "")), today)}
    if uncovered:
        raise CommandError("not_covered_by_contract", fields=uncovered)

    lines = [api.OrderedLine(
        device_id=line.device_id, serial_number=devices[line.device_id]["serial_number"],
        model=devices[line.device_id]["model"], article_number=item["article_number"],
        description=item["description"], kind=item["kind"], quantity=line.quantity,
        included_in_contract=bool(item.get("included_in_contract", True)))
        for line, item in zip(request.lines, items, strict=True)]
    chosen: Mapping[str, object] = request.delivery.model_dump() if request.delivery else defaults or {}
    location = {key: value for key, value in (first.get("location") or {}).items()
                if key in api.DeliveryAddress.model_fields}
    delivery_address = api.DeliveryAddress(**location, attention=_text(chosen.get("attention")),
                                           additional_info=_text(chosen.get("additional_info")))
    ordered = list({line.device_id: devices[line.device_id] for line in request.lines}.values())
    return Judged(lines, delivery_address, ordered)


def _text(value: object) -> str | None:
    return str(value) if value else None
