"""Helpers of the CLI's tests: `portal-admin` run as an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from contracts.client import PortalClient, PortalError
from services.runtime.settings import Settings
from tests.builders import operator_token


async def portal_admin(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `python -m admin ...` as an operator would; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "admin", *args, env={**env, "COLUMNS": "250"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def known_model(portal: PortalClient, settings: Settings, serial: str) -> str | None:
    """The model registration knows `serial` by (its catalogue's serial patterns), or None."""
    try:
        found = await portal.call("registration.lookup_serial", {"serial_number": serial},
                                  token=operator_token(settings))
    except PortalError as error:
        assert error.code == "unknown_serial"
        return None
    return str(found["model"])
