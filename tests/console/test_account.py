"""The console's account page: a user sets a password (then logs in with it), changes it
(the current one needed), and every error path changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page

from console._helpers import browser_login, console_client, follow, form_token, password_login

MakeUser = Callable[..., tuple[str, str]]


def test_setting_and_changing_a_password(page: Page, base_url: str, make_user: MakeUser) -> None:
    user, key = make_user(prefix="account")
    browser_login(page, base_url, key)
    follow(page, f"header a:has-text('{user}')")
    assert "none yet" in page.content()
    page.fill("input[name=password]", "the first one")
    page.fill("input[name=again]", "the first one!")
    follow(page, "button[name=set-password]")
    assert "the two new passwords differ" in page.locator(".flash.error").inner_text()
    page.fill("input[name=password]", "the first one")
    page.fill("input[name=again]", "the first one")
    follow(page, "button[name=set-password]")
    assert "/console/login" in page.url and "Your password is set" in page.content()

    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "the first one")
    follow(page, "button:has-text('Log in')")
    assert page.url.endswith("/console/databases")
    page.goto(f"{base_url}/console/account")
    assert "your password" in page.content()
    page.fill("input[name=current_password]", "not the one")
    page.fill("input[name=password]", "the second one")
    page.fill("input[name=again]", "the second one")
    follow(page, "button[name=set-password]")
    assert "wrong_password" in page.locator(".flash.error").inner_text()
    page.fill("input[name=current_password]", "the first one")
    page.fill("input[name=password]", "the second one")
    page.fill("input[name=again]", "the second one")
    follow(page, "button[name=set-password]")
    assert "/console/login" in page.url
    with httpx.Client(base_url=base_url) as http:
        assert password_login(http, user, "the first one").status_code == 401
    with httpx.Client(base_url=base_url) as http:
        assert password_login(http, user, "the second one").status_code == 303


def test_bad_passwords_change_nothing(base_url: str, make_user: MakeUser) -> None:
    user, key = make_user(prefix="badpass")
    with console_client(base_url, key) as http:
        token = form_token(http.get("/console/account").text)
        for data, code in (
            ({"password": "short", "again": "short"}, "invalid_password"),
            ({"password": "x" * 1025, "again": "x" * 1025}, "invalid_password"),
        ):
            r = http.post("/console/account/password", data={"csrf": token, **data})
            assert r.status_code == 422 and code in r.text, r.text
        r = http.post("/console/account/password", data={"password": "long enough 1"})
        assert r.status_code == 403  # no token
    me = httpx.get(f"{base_url}/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me["has_password"] is False and me["user"]["username"] == user
