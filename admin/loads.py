"""`portal-admin load`'s words for a load's results (`contracts.loads` plans and sends it, as the back office's
uploads do): each row's message in English, and the rows as JSON."""

from __future__ import annotations

from typing import Any

from contracts.errors import message_for
from contracts.loads import NO_REPLY, NOT_SENT, RowResult


def message(result: RowResult) -> str | None:
    """Why a row is not in, as the CLI says it (`customer_number: required`); None for a row that is in."""
    if result.ok:
        return None
    if result.problems:
        return "; ".join(f"{problem.column}: {problem.text}" for problem in result.problems)
    if result.withheld_for is not None:
        return f"another row of {result.withheld_for} was refused, and its list is replaced as a whole"
    if result.code == NOT_SENT:
        return "not sent: the load stopped"
    if result.code == NO_REPLY:
        return "sent, but no reply within the timeout: it may still be applied; load the file again to be sure"
    if result.sent_with:
        return f"not saved: sent in one call with refused row {', '.join(str(row) for row in result.sent_with)}"
    return result.said or message_for(result.code or "", "en")


def as_json(result: RowResult) -> dict[str, Any]:
    return {"row": result.row, "key": result.key, "ok": result.ok, "code": result.code, "message": message(result)}
