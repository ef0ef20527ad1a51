"""The fleet at once in the browser: many devices from the Excel template (download, fill in, upload, the status
table of uploads and the result file, as OKI's "Add multiple devices"), readings of many devices from a file, and
the fleet's printed pages with a chart and an xlsx export."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest
from playwright.async_api import Browser, Page, expect

from services.registration import excel
from tests.builders import random_serial
from tests.e2e.conftest import Stack
from tests.web.conftest import accessible, new_context, sign_in
from tests.web.test_account_pages import company_with_a_device

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def signed_in_customer(stack: Stack, browser: Browser, gateway_url: str, language: str) -> tuple[Page, str]:
    """A page signed in as an active user of a company with one device, terms accepted; the device's serial."""
    customer, serial = await company_with_a_device(stack)
    person = await stack.sign_up(language, country="DE", customer_number=customer, serial_number=serial)
    token = await stack.sign_in(person)
    profile = await stack.portal.call("accounts.get_profile", {}, token=token)
    await stack.portal.call("accounts.accept_terms", {"terms_version": profile["current_terms_version"],
                                                      "privacy_version": profile["current_privacy_version"]},
                            token=token)
    context = await new_context(browser, language)
    page = await context.new_page()
    await sign_in(page, gateway_url, person.email, person.request["password"])
    await expect(page).to_have_url(re.compile(r"/$"))
    return page, serial


async def test_a_customer_registers_devices_from_the_template_and_downloads_the_result(
        stack: Stack, gateway_url: str, browser: Browser, tmp_path: Path) -> None:
    page, _ = await signed_in_customer(stack, browser, gateway_url, "de")
    await page.goto(f"{gateway_url}/devices/uploads")
    await accessible(page, "device-uploads-de")

    # Without a file: the message is beside the file field, in German.
    await page.get_by_role("button", name="Hochladen").click()
    await expect(page.locator("#file-error")).to_have_text("Bitte wählen Sie die ausgefüllte Vorlage.")

    async with page.expect_download() as download:
        await page.get_by_role("link", name="Vorlage herunterladen").click()
    template = tmp_path / "template.xlsx"
    await (await download.value).save_as(template)
    book = openpyxl.load_workbook(template)
    sheet = book[excel.DATA_SHEET[excel.language_of("de")]]
    bought = date.today() - timedelta(days=10)
    serials = [random_serial("AK6C"), random_serial("AK6C")]
    for serial in serials:
        sheet.append([serial, bought, f"Drucker {serial[-3:]}", None, None, "Hauptstraße 1", "01067", "Dresden", "DE"])
    sheet.append(["NOT-A-SERIAL", bought])
    filled = tmp_path / "geraete.xlsx"
    book.save(filled)

    await page.locator("#file").set_input_files(filled)
    await page.get_by_label("Ich akzeptiere die Garantiebedingungen für jedes Gerät der Datei").check()
    await page.get_by_role("button", name="Hochladen").click()
    await expect(page.get_by_role("status")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="geraete.xlsx")
    for _ in range(60):  # processed in the background: the person reloads the status table
        if await row.filter(has_text="Verarbeitet").count():
            break
        await page.wait_for_timeout(500)
        await page.reload()
    await expect(row.get_by_role("cell").nth(3)).to_have_text("3")  # total
    await expect(row.get_by_role("cell").nth(4)).to_have_text("2")  # processed
    await expect(row.get_by_role("cell").nth(5)).to_have_text("1")  # unprocessed
    await accessible(page, "device-uploads-processed-de")
    async with page.expect_download() as download:
        await row.get_by_role("link").click()
    await (await download.value).save_as(tmp_path / "result.xlsx")
    result = openpyxl.load_workbook(tmp_path / "result.xlsx")
    assert any("NOT-A-SERIAL" in str(cell.value) for sheet in result.worksheets for line in sheet.iter_rows()
               for cell in line)
    await page.context.close()


async def test_a_customer_sends_readings_by_file_and_sees_the_fleets_printed_pages(
        stack: Stack, gateway_url: str, browser: Browser, tmp_path: Path) -> None:
    page, serial = await signed_in_customer(stack, browser, gateway_url, "en")
    await page.goto(f"{gateway_url}/readings/upload")
    await accessible(page, "readings-upload-en")
    readings = tmp_path / "readings.csv"
    readings.write_text(f"serial_number;counter;value\n{serial};mono;1100\n{serial};color;5\n")  # colour went down
    await page.locator("#file").set_input_files(readings)
    await page.get_by_role("button", name="Upload readings").click()
    await expect(page.get_by_role("status")).to_have_text("0 devices' readings are stored.")
    await expect(page.get_by_role("row").filter(has_text=serial).first).to_contain_text("lower")

    readings.write_text(f"serial_number;counter;value\n{serial};mono;1100\n{serial};color;60\n")
    await page.locator("#file").set_input_files(readings)
    await page.get_by_role("button", name="Upload readings").click()
    await expect(page.get_by_role("status")).to_have_text("1 device's reading is stored.")
    await accessible(page, "readings-upload-done-en")

    await page.goto(f"{gateway_url}/usage")
    await expect(page.get_by_role("img", name="Printed pages of the fleet per period")).to_be_visible()
    await expect(page.get_by_role("row").filter(has_text=serial)).to_contain_text("1,050")  # 1,000 mono + 50 colour
    await accessible(page, "usage-en")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Export as Excel (xlsx)").click()
    await (await download.value).save_as(tmp_path / "usage.xlsx")
    exported = openpyxl.load_workbook(tmp_path / "usage.xlsx")
    assert any(serial == cell.value for sheet in exported.worksheets for line in sheet.iter_rows() for cell in line)

    await page.goto(f"{gateway_url}/usage?start=2026-05-01&end=2026-01-01")
    await expect(page.locator(".error-summary")).to_be_visible()
    await page.context.close()
