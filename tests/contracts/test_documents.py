"""The committed AsyncAPI documents are the ones the code generates (`make docs` rewrites them)."""

from __future__ import annotations

import json

import pytest

from contracts.dead_letters import list_dead_letters_command, replay_dead_letters_command
from contracts.topology import SERVICES
from deploy.asyncapi import DOCS, render


@pytest.mark.parametrize("service", SERVICES)
def test_the_committed_asyncapi_document_matches_the_code(service: str) -> None:
    committed = (DOCS / f"{service}.json").read_text(encoding="utf-8")
    assert committed == render(service), f"docs/asyncapi/{service}.json is stale: run `make docs`"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_documents_its_health_command(service: str) -> None:
    document = json.loads(render(service))
    assert f"{service}.health" in document["channels"]
    assert document["info"]["title"] == service


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_documents_its_dead_letter_commands(service: str) -> None:
    channels = json.loads(render(service))["channels"]
    assert list_dead_letters_command(service) in channels
    assert replay_dead_letters_command(service) in channels
