"""Browser tests: Debian's Chromium, headless, driven by Playwright, against the console on
a real HTTP port (the same app and database fixtures as the API tests)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from scripts import screenshots
from tests.console.conftest import PASSWORDS

CHROMIUM = shutil.which("chromium") or screenshots.CHROMIUM
CHROMIUM_ARGS = [
    *screenshots.CHROMIUM_ARGS,  # the flags Debian's Chromium needs here, headless
    # Microphone recording without a device or a permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
PHONE = {"width": 360, "height": 740}


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run `make test` (it installs Debian's chromium)")
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def context(browser: Browser, live_server: str) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=live_server, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh")
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def login(page: Page, role: str, password: str | None = None) -> None:
    """Log in through the form as one of the suite's users (admin, operator, viewer)."""
    page.goto("/login")
    page.fill("#username", role)
    page.fill("#password", password or PASSWORDS[role])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: not url.endswith("/login"))
