"""Helpers of the CLI's tests: `portal-admin` run as an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys


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
