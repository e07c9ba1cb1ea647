"""Signing in through the login form of the real console in a real browser."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import log_in


def test_wrong_password_stays_on_the_form_with_the_error(page: Page, make_user) -> None:
    make_user("olga", "operator")
    page.goto("/")  # anonymous: sent to the login page
    expect(page).to_have_url("/login/?next=/")

    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill("not-her-password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.locator("#login-errors")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value("olga")
    expect(page.locator("[data-nav]")).to_have_count(0)


def test_sign_in_then_out(page: Page, make_user) -> None:
    make_user("olga", "operator")
    log_in(page, "olga")

    expect(page).to_have_url("/")
    expect(page.locator(".console-user")).to_contain_text("olga")
    expect(page.locator('[data-nav="runs"]')).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url("/login/")
    page.goto("/")
    expect(page).to_have_url("/login/?next=/")
