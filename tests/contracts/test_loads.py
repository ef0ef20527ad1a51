"""contracts.loads: a load's plan and its sending, with a stand-in for the portal (pure logic; the CLI's and the back
office's tests load files into the real services)."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import loads
from contracts.client import PortalError

ROWS = [(line, {"model": f"Model {line}", "article_number": "4711", "serial_pattern": pattern, "counters": "mono"})
        for line, pattern in [(2, "^A$"), (3, "^(B"), (4, "^C$")]]


class Registration:
    """Refuses a call naming its items whose pattern is no regular expression, as registration does."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []

    async def call(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append([model["model"] for model in body["models"]])
        refused = {f"models.{index}.serial_pattern": "not a regular expression"
                   for index, model in enumerate(body["models"]) if model["serial_pattern"].startswith("^(")}
        if refused:
            raise PortalError("validation_failed", "Some fields are missing or invalid.", refused)
        return {"count": len(body["models"])}


async def test_a_batch_refused_for_one_item_is_sent_again_without_it() -> None:
    registration = Registration()
    results, batches = loads.plan("models", ROWS)

    await loads.send(batches, registration.call)

    assert registration.sent == [["Model 2", "Model 3", "Model 4"], ["Model 2", "Model 4"]]
    assert [(result.row, result.code) for result in results] == [(2, None), (3, "validation_failed"), (4, None)]
    assert results[1].problems == [loads.Problem("serial_pattern", loads.SERVICE_SAYS, "not a regular expression")]


async def test_a_refusal_of_the_call_stops_the_load_and_its_rows_say_not_sent() -> None:
    async def forbidden(command: str, body: dict[str, Any]) -> dict[str, Any]:
        raise PortalError("forbidden")

    results, batches = loads.plan("models", ROWS[:1])

    with pytest.raises(loads.CallRefused):
        await loads.send(batches, forbidden)
    assert [result.code for result in results] == [loads.NOT_SENT]


def test_an_empty_cell_is_a_missing_column_and_a_model_with_a_refused_consumable_is_withheld() -> None:
    rows = [(2, {"model": "C332", "article_number": "1", "description": "TONER", "kind": "toner"}),
            (3, {"model": "C332", "article_number": "", "description": "DRUM", "kind": "drum"})]

    results, batches = loads.plan("consumables", rows)

    assert batches == []
    assert (results[0].code, results[0].withheld_for) == (loads.NOT_SENT, "C332")
    assert results[1].problems == [loads.Problem("article_number", "missing", "required")]
