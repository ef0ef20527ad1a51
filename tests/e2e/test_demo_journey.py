"""`make demo` plays its journey against a running stack: here against the six services as processes, its lines
and the mails each step caused as a newcomer reads them."""

from __future__ import annotations

import pytest

from deploy.local.journey import Journey
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_demo_journey_runs_from_sign_up_to_a_dispatched_technician_showing_each_mail(stack: Stack) -> None:
    lines: list[str] = []
    await Journey(stack.portal, stack.settings, lambda: list(stack.mailbox.messages), say=lines.append).play()
    steps = [line for line in lines if line.startswith("\n▶")]
    mails = [line for line in lines if line.startswith("  ✉")]
    assert len(steps) == 8, lines
    # The mails in German, each under the step that caused it: confirmation, order, receipt, shipping, dispatch.
    assert len(mails) == 5, lines
    assert "Bitte bestätigen Sie Ihre E-Mail-Adresse" in mails[0]
    assert lines[-1].startswith("\nDone.")
