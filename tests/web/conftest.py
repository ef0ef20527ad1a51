"""The pages in a real browser: Debian's Chromium driven by Playwright, in front of the gateway and the six
services as processes (the e2e stack). Each page a test visits can be checked with axe-core and kept as a
screenshot (`SCREENSHOTS`, a test artefact).

Chromium comes from Debian (`make install` installs it as root); Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright

from tests.e2e.conftest import PUBLIC_URL, Stack, gateway_url, stack

__all__ = ["Stack", "gateway_url", "stack"]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("PORTAL_SCREENSHOTS", Path(__file__).parents[2] / ".data" / "screenshots"))
PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1280, height=900)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: `make install` installs it (as root)")
        pytest.skip("Debian's chromium is not installed: run `make install` as root")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(browser: Browser, language: str, phone: bool = False) -> BrowserContext:
    """A fresh browser profile (no cookies) whose Accept-Language is `language`."""
    locale = {"de": "de-DE", "en": "en-GB", "nb": "nb-NO"}[language]
    return await browser.new_context(locale=locale, viewport=PHONE if phone else DESKTOP)


async def sign_in(page: Page, gateway_url: str, login: str, password: str, next_path: str | None = None) -> None:
    """Through the sign-in page, as a person types it (the fields found by id, whatever the page's language)."""
    await page.goto(f"{gateway_url}/sign-in" + (f"?next={next_path}" if next_path else ""))
    await page.locator("#login").fill(login)
    await page.locator("#password").fill(password)
    await page.locator("form[action='/sign-in'] button[type=submit]").click()


def link_in_browser(link: str, base_url: str) -> str:
    """A mail's link (made for the stack's public address) opened against this test's gateway."""
    return base_url + link.removeprefix(PUBLIC_URL)


def mail_link(text: str, path: str) -> str:
    """The first link of a mail's text to `path` of the portal."""
    found = re.search(re.escape(PUBLIC_URL + path) + r"[^\s\"<>]*", text)
    assert found, f"no link to {path} in the mail"
    return found.group(0)


async def accessible(page: Page, name: str) -> None:
    """axe-core on the page as it is: no serious or critical violation; the page kept as a screenshot."""
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
    results = await Axe().run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    serious = [f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']]}"
               for violation in violations if violation["impact"] in ("serious", "critical")]
    assert not serious, f"{name}: {serious}"

