"""Every vendor runs its own portal: a second gateway with another vendor's settings shows that vendor's name,
logo, colour, contact and legal links, and the pages stay usable and accessible on a phone's screen."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import Stack, gateway_process
from tests.web.conftest import accessible, new_context

pytestmark = pytest.mark.asyncio(loop_scope="module")

VENDOR = {"PORTAL_BRAND_NAME": "Kopiertechnik Nord", "PORTAL_BRAND_COLOUR": "#7a1f3d",
          "PORTAL_BRAND_CONTACT_EMAIL": "service@kopiertechnik.example",
          "PORTAL_BRAND_CONTACT_PHONE": "+47 22 00 00 00",
          "PORTAL_BRAND_TERMS_URL": "https://kopiertechnik.example/vilkar",
          "PORTAL_BRAND_PRIVACY_URL": "https://kopiertechnik.example/personvern"}


async def test_a_vendors_own_portal_on_a_phone(stack: Stack, module_amqp_url: str, browser: Browser,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    with gateway_process(module_amqp_url, tmp_path_factory.mktemp("vendor"), **VENDOR) as vendor_url:
        context = await new_context(browser, "nb", phone=True)
        page = await context.new_page()
        await page.goto(f"{vendor_url}/sign-in")
        await expect(page).to_have_title(re.compile("Kopiertechnik Nord$"))
        await expect(page.get_by_role("banner")).to_contain_text("Kopiertechnik Nord")
        footer = page.get_by_role("contentinfo")
        await expect(footer.get_by_role("link", name="service@kopiertechnik.example")).to_be_visible()
        await expect(footer.get_by_role("link", name="Vilkår")).to_have_attribute(
            "href", "https://kopiertechnik.example/vilkar")
        await expect(footer.get_by_role("link", name="Personvernerklæring")).to_have_attribute(
            "href", "https://kopiertechnik.example/personvern")
        assert await page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor") == \
            "rgb(122, 31, 61)"
        # On a phone: nothing wider than the screen, the form's fields and button fully on it.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        for field in ("#login", "#password", "form[action='/sign-in'] button"):
            box = await page.locator(field).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, field
        await accessible(page, "sign-in-phone-vendor-nb")
        # By keyboard: the first Tab reaches the skip link, which takes the focus past the header to the content.
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Hopp til innholdet")).to_be_focused()
        await page.keyboard.press("Enter")
        await page.keyboard.press("Tab")
        await expect(page.locator("#login")).to_be_focused()
        await page.goto(f"{vendor_url}/sign-up")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await accessible(page, "sign-up-phone-vendor-nb")
        await context.close()
