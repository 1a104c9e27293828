"""Logging in to the console with a username and password: through the page in chromium,
and over plain HTTP (httpx) for what a person cannot see — one answer (and about the
same time) for an unknown user and a wrong password, the login form's CSRF checks, and
every way a password session ends: a password change or reset, the user's deletion,
logout, sign out everywhere, and its absolute expiry."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page

from _waiting import wait_until
from conftest import RunningServer
from console._helpers import COOKIE, follow, form_token, login, password_login

MakeUser = Callable[..., tuple[str, str]]
PASSWORD = "a long enough password"
GENERIC = "Wrong username or password."


@pytest.fixture
def user(base_url: str, make_user: MakeUser) -> tuple[str, str]:
    """A fresh user with the password :data:`PASSWORD`: (username, API key)."""
    name, key = make_user(prefix="pwc")
    r = httpx.put(
        f"{base_url}/v1/me/password",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 204, r.text
    return name, key


@pytest.fixture
def browsers(base_url: str) -> Iterator[Callable[[], httpx.Client]]:
    """``new()``: another browser (an httpx client with its own cookies)."""
    made: list[httpx.Client] = []

    def new() -> httpx.Client:
        made.append(httpx.Client(base_url=base_url, timeout=30))
        return made[-1]

    yield new
    for http in made:
        http.close()


def _signed_in(http: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Client:
    answer = password_login(http, username, password)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/databases"
    return http


def _alive(http: httpx.Client) -> bool:
    """Whether the client's session still opens a page (an ended one goes to login)."""
    r = http.get("/console/databases")
    assert r.status_code in (200, 303), r.text
    return r.status_code == 200


def test_logging_in_with_a_password_in_the_browser(
    page: Page, base_url: str, user: tuple[str, str]
) -> None:
    name, _ = user
    page.goto(f"{base_url}/console/login")
    assert page.locator("input[name=username]").is_visible()  # the default
    assert page.locator("input[name=api_key]").is_visible()  # or a key
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", "not the password")
    follow(page, "button:has-text('Log in')")
    assert page.url.endswith("/console/login")
    assert GENERIC in page.content()
    assert page.input_value("input[name=password]") == ""  # the password is never sent back

    page.fill("input[name=password]", PASSWORD)  # the username is kept
    follow(page, "button:has-text('Log in')")
    assert page.url.endswith("/console/databases")
    assert page.inner_text("header .user") == name  # the user, with write rights
    page.goto(f"{base_url}/console/keys")
    assert page.locator("form[action='/console/keys/new'] button").count() >= 1

    follow(page, "button:has-text('Log out')")
    assert "You are logged out." in page.content()
    page.goto(f"{base_url}/console/databases")
    assert page.url.endswith("/console/login")


def test_an_unknown_user_and_a_wrong_password_answer_alike(
    browsers: Callable[[], httpx.Client], user: tuple[str, str]
) -> None:
    name, _ = user

    def attempt(username: str, password: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        answer = password_login(browsers(), username, password)
        return answer, time.perf_counter() - started

    tries = [
        (attempt(name, "wrong password"), attempt(f"nobody-{name}", PASSWORD)) for _ in range(3)
    ]
    for (wrong, _), (unknown, _) in tries:
        assert wrong.status_code == unknown.status_code == 401
        assert GENERIC in wrong.text and GENERIC in unknown.text
        assert COOKIE not in wrong.headers.get("set-cookie", "")
    # an unknown user's login does the work of a real check (a dummy hash's) too
    wrong_s = statistics.median(w[1] for w, _ in tries)
    unknown_s = statistics.median(u[1] for _, u in tries)
    assert unknown_s > wrong_s / 3, (unknown_s, wrong_s)


def test_a_user_without_a_password_logs_in_with_a_key_only(
    browsers: Callable[[], httpx.Client], make_user: MakeUser
) -> None:
    name, key = make_user(prefix="pwnone")
    r = password_login(browsers(), name, "")
    assert r.status_code == 401 and GENERIC in r.text
    assert login(browsers(), key).status_code == 303


def test_the_password_form_needs_its_token_and_our_site(
    browsers: Callable[[], httpx.Client], user: tuple[str, str]
) -> None:
    name, _ = user
    data = {"username": name, "password": PASSWORD}
    http = browsers()
    token = form_token(http.get("/console/login").text)
    for sent in ({}, {"csrf": "x" * 43}):
        r = http.post("/console/login", data={**data, **sent})
        assert r.status_code == 403 and "csrf_failed" in r.text
    r = http.post(
        "/console/login", data={**data, "csrf": token}, headers={"Origin": "http://evil.test"}
    )
    assert r.status_code == 403 and "cross_site_request" in r.text
    assert not http.cookies.get(COOKIE, path="/console")


def test_a_password_change_or_reset_ends_the_sessions(
    base_url: str,
    browsers: Callable[[], httpx.Client],
    user: tuple[str, str],
    make_user: MakeUser,
) -> None:
    name, key = user
    _, admin = make_user(is_admin=True, prefix="pwcadmin")
    first = _signed_in(browsers(), name)
    with_key = browsers()
    assert login(with_key, key).status_code == 303
    changed = httpx.put(
        f"{base_url}/v1/me/password",
        json={"password": "the next password", "current_password": PASSWORD},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert changed.status_code == 204, changed.text
    assert not _alive(first) and not _alive(with_key)

    second = _signed_in(browsers(), name, "the next password")
    assert _alive(second)
    reset = httpx.put(
        f"{base_url}/v1/users/{name}/password",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert reset.status_code == 204, reset.text
    assert not _alive(second)
    assert _alive(_signed_in(browsers(), name))


def test_deleting_the_user_ends_the_session(
    base_url: str, admin_key: str, browsers: Callable[[], httpx.Client], user: tuple[str, str]
) -> None:
    name, _ = user
    http = _signed_in(browsers(), name)
    gone = httpx.delete(
        f"{base_url}/v1/users/{name}", headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert gone.status_code == 204, gone.text
    assert not _alive(http)


def _log_out(http: httpx.Client, everywhere: bool = False) -> httpx.Response:
    token = form_token(http.get("/console/databases").text)
    data = {"csrf": token, **({"everywhere": "1"} if everywhere else {})}
    return http.post("/console/logout", data=data)


def test_logout_and_signing_out_everywhere(
    browsers: Callable[[], httpx.Client], user: tuple[str, str]
) -> None:
    name, key = user
    here, there = _signed_in(browsers(), name), _signed_in(browsers(), name)
    with_key = browsers()
    assert login(with_key, key).status_code == 303
    out = _log_out(here)
    assert out.status_code == 303 and out.headers["location"] == "/console/login?notice=signed_out"
    assert not _alive(here) and _alive(there) and _alive(with_key)

    again = _signed_in(browsers(), name)
    out = _log_out(again, everywhere=True)
    assert out.headers["location"] == "/console/login?notice=signed_out_everywhere"
    assert not _alive(again) and not _alive(there) and not _alive(with_key)


def test_password_sessions_expire(
    browsers: Callable[[], httpx.Client],
    user: tuple[str, str],
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server.settings, "console_session_ttl_s", 1.0)
    http = _signed_in(browsers(), user[0])
    wait_until(lambda: not _alive(http), what="the password session's expiry")


def test_a_throttled_username_gets_a_plain_429_page(
    browsers: Callable[[], httpx.Client], user: tuple[str, str]
) -> None:
    name, key = user
    for _ in range(10):
        assert password_login(browsers(), name, "wrong password").status_code == 401
    r = password_login(browsers(), name, PASSWORD)
    assert r.status_code == 429
    assert "password logins are paused for 15 minutes" in r.text
    assert login(browsers(), key).status_code == 303  # a key still logs in
