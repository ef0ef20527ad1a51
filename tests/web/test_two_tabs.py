"""Two pages opened before the browser had a form cookie both send their forms, while another site's form is still
refused: in a real browser, which says itself where a form comes from (Fetch Metadata). No services run: a form
past the token check is answered "not answering" (503), one refused by it with the refusal page (403)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import gateway_process
from tests.web.conftest import new_context

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_first_of_two_tabs_opened_at_once_sends_its_form_and_another_sites_form_is_refused(
        module_amqp_url: str, browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    with gateway_process(module_amqp_url, tmp_path_factory.mktemp("tabs"),
                         PORTAL_GATEWAY_COMMAND_TIMEOUT="2") as url:
        context = await new_context(browser, "en")
        first = await context.new_page()
        await first.goto(f"{url}/sign-in")
        await context.clear_cookies()  # as if the second tab's request left before the first page's cookie came
        second = await context.new_page()
        await second.goto(f"{url}/sign-in")
        first_token = await first.locator("input[name=csrf]").first.input_value()
        cookie = next(cookie for cookie in await context.cookies() if cookie.get("name") == "portal_form")
        assert cookie.get("value") != first_token  # the cookie is the second tab's

        await first.locator("#login").fill("anna@example.com")
        await first.locator("#password").fill("a long password")
        async with first.expect_response(f"{url}/sign-in") as answer:
            await first.locator("form[action='/sign-in'] button").click()
        assert (await answer.value).status == 503  # past the token check, to the (absent) services
        await expect(first.locator("#login")).to_have_value("anna@example.com")

        # Another site's page posting the same form, token and all: refused, nothing sent.
        other = await context.new_page()
        await other.set_content(f'<form method="post" action="{url}/sign-in"><input name="csrf" value="{first_token}">'
                                '<input name="login" value="attacker"><input name="password" value="p">'
                                '<button>go</button></form>')
        async with other.expect_response(f"{url}/sign-in") as answer:
            await other.locator("button").click()
        assert (await answer.value).status == 403
        await context.close()
