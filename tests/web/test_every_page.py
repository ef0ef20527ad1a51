"""axe-core on every page a customer and an operator can reach by following links: a crawl from the dashboard and
from the back office, each HTML page checked and kept as a screenshot, so no page escapes the check because no
journey happens to open it."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import Stack
from tests.support import retried_while
from tests.web.conftest import accessible, new_context, sign_in
from tests.web.test_office_pages import company_under_contract, operator_in_office

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_PAGES = 80  # a bound on the crawl, far above the portal's page count: a link that makes new links is a defect
# Links the crawl does not follow: files (not pages), and one page per kind of list item is enough.
FILES = re.compile(r"/(export|template)$|/result$|\.xlsx$")


def page_kind(path: str) -> str:
    """A page's kind: ids and numbers in its path are one page for the crawl (`/devices/{id}`)."""
    return re.sub(r"/[0-9a-f]{16,}|/\d+|/[A-Z]{2}[A-Z0-9]{4,}", "/{id}", path)


async def crawl(page: Page, context: BrowserContext, start: str, name: str) -> list[str]:
    """Every same-origin page reachable by GET links from `start`, each checked by axe; the paths checked."""
    origin = urlsplit(start)
    queue, seen_kinds, checked = [start], set[str](), list[str]()
    while queue and len(checked) < MAX_PAGES:
        url = queue.pop(0)
        path = urlsplit(url).path
        if page_kind(path) in seen_kinds:
            continue
        seen_kinds.add(page_kind(path))
        probe = await context.request.get(url, max_redirects=0)
        if probe.status != 200 or not probe.headers.get("content-type", "").startswith("text/html"):
            continue  # a redirect (its target is listed on its own page) or a file
        await page.goto(url)
        await accessible(page, f"every-{name}-{page_kind(path).strip('/').replace('/', '-') or 'home'}")
        checked.append(path)
        for href in await page.locator("a[href]").evaluate_all("links => links.map(link => link.href)"):
            target = urlsplit(urljoin(url, href))
            if (target.scheme, target.netloc) == (origin.scheme, origin.netloc) and not FILES.search(target.path):
                queue.append(target._replace(fragment="").geturl())
    assert len(checked) < MAX_PAGES, f"the crawl did not end: {checked}"
    return checked


async def test_every_page_a_customer_and_an_operator_reach_passes_axe(
        stack: Stack, gateway_url: str, browser: Browser) -> None:
    # A customer whose lists hold something: a device under contract, an order and a service request.
    customer, serial = await company_under_contract(stack)
    person = await stack.sign_up("nb", country="NO", customer_number=customer, serial_number=serial)
    token = await stack.sign_in(person)
    profile = await stack.portal.call("accounts.get_profile", {}, token=token)
    await stack.portal.call("accounts.accept_terms", {"terms_version": profile["current_terms_version"],
                                                      "privacy_version": profile["current_privacy_version"]},
                            token=token)
    device = await retried_while(["not_found"], lambda: stack.portal.call(
        "registration.get_device", {"serial_number": serial}, token=token))
    await retried_while(["not_found"], lambda: stack.portal.call("ticketing.open_ticket", {
        "device_id": device["device_id"], "description": "Papirstopp i skuff 2",
        "contact": {"name": "Kari Nordmann", "email": person.email}}, token=token))
    context = await new_context(browser, "nb")
    page = await context.new_page()
    await sign_in(page, gateway_url, person.email, person.request["password"])
    await expect(page).to_have_url(re.compile(r"/$"))
    customer_pages = await crawl(page, context, f"{gateway_url}/", "customer")
    await context.close()
    assert {"/", "/profile", "/devices/new", "/devices/claim", "/tickets", "/orders", "/usage"} <= {
        *customer_pages}, customer_pages
    assert any(path.startswith("/devices/") and page_kind(path) == "/devices/{id}" for path in customer_pages)

    context, page = await operator_in_office(browser, stack, gateway_url, "de")
    office_pages = await crawl(page, context, f"{gateway_url}/office", "office")
    await context.close()
    assert {"/office", "/office/orders", "/office/tickets", "/office/readings", "/office/uploads", "/office/mail",
            "/office/dead-letters"} <= {*office_pages}, office_pages

    # Signed out: the pages anyone can open.
    context = await new_context(browser, "en")
    page = await context.new_page()
    public_pages = await crawl(page, context, f"{gateway_url}/sign-in", "public")
    await context.close()
    assert {"/sign-in", "/sign-up", "/password", "/username"} <= {*public_pages}, public_pages
    print(f"axe on {len(customer_pages)} customer, {len(office_pages)} office and {len(public_pages)} public pages:",
          customer_pages, office_pages, public_pages)


async def test_the_crawl_takes_ids_for_one_page_and_files_for_no_page() -> None:
    assert page_kind("/devices/0f1e2d3c4b5a69788796a5b4c3d2e1f0") == "/devices/{id}"
    assert page_kind("/tickets/1484049/1") == "/tickets/{id}/{id}"
    assert page_kind("/office/orders") == "/office/orders"
    assert FILES.search("/usage/export") and FILES.search("/devices/uploads/template")
    assert not FILES.search("/devices/uploads")
