"""Logging in, the language switch, the menu each role sees, and a refused page."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.console.browser.conftest import PHONE, login


def test_login_shows_the_board_in_vietnamese_then_english(page: Page) -> None:
    page.goto("/")
    assert "/login" in page.url  # redirected to log in first
    expect(page.locator("h1")).to_have_text("Đăng nhập")
    login(page, "operator")
    expect(page.locator("nav.main-nav")).to_contain_text("Chương trình")
    expect(page.locator(".emergency-entry")).to_have_text("KHẨN CẤP")
    page.click("text=English")
    expect(page.locator("nav.main-nav")).to_contain_text("Programme")
    expect(page.locator(".emergency-entry")).to_have_text("EMERGENCY")


def test_wrong_password_is_refused_with_a_message(page: Page) -> None:
    page.goto("/login")
    page.fill("#username", "viewer")
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("Sai tên đăng nhập hoặc mật khẩu.")


def test_a_viewer_sees_no_emergency_entry_and_is_refused_the_page(page: Page) -> None:
    login(page, "viewer")
    expect(page.locator(".emergency-entry")).to_have_count(0)
    expect(page.locator("nav.main-nav")).not_to_contain_text("Nhật ký")  # audit: admin only
    resp = page.goto("/emergency")
    assert resp is not None and resp.status == 403


def test_the_menu_fits_a_phone_screen(page: Page) -> None:
    page.set_viewport_size(PHONE)
    login(page, "admin")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width} px)"
    expect(page.locator(".emergency-entry")).to_be_visible()
