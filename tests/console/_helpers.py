"""Console test helpers: logging in over plain HTTP (httpx) as a browser does, and the
flags Debian's chromium runs with (the ``browser`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import httpx
from playwright.sync_api import Locator, Page

COOKIE = "millpond_console"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def form_token(html: str) -> str:
    """The CSRF token of the first form on a console page."""
    found = _CSRF.search(html)
    assert found is not None, html
    return found.group(1)


def login(http: httpx.Client, key: str) -> httpx.Response:
    """GET the login form, POST it with ``key``: the login's answer (303 when it worked)."""
    form = http.get("/console/login")
    assert form.status_code == 200, form.text
    return http.post("/console/login", data={"api_key": key, "csrf": form_token(form.text)})


def password_login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    """GET the login form, POST it with a username and password: the login's answer."""
    form = http.get("/console/login")
    assert form.status_code == 200, form.text
    data = {"username": username, "password": password, "csrf": form_token(form.text)}
    return http.post("/console/login", data=data)


@contextmanager
def console_client(base_url: str, key: str) -> Iterator[httpx.Client]:
    """A client logged in to the console with ``key``."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        answer = login(http, key)
        assert answer.status_code == 303, answer.text
        assert http.cookies.get(COOKIE, path="/console")
        yield http


def follow(page: Page, target: str | Locator) -> None:
    """Click a link or a form's button and wait until the page it leads to has loaded.

    A bare click returns once the next document has begun: read at that moment (its
    ``content()``, a locator's ``count()``), the page may still be empty. Every click
    that loads a page goes through here; clicks handled in the page (a ``<details>``
    opened, the SQL history) are plain clicks.
    """
    with page.expect_navigation():
        (page.locator(target) if isinstance(target, str) else target).click()


def browser_login(page: Page, base_url: str, key: str) -> None:
    """Log in through the login page, as a person does."""
    page.goto(f"{base_url}/console/login")
    page.fill("input[name=api_key]", key)
    follow(page, "button:has-text('Log in')")


def screenshots_script() -> ModuleType:
    """``scripts/console_screenshots.py`` as a module: its seed and its pages."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "console_screenshots.py"
    spec = importlib.util.spec_from_file_location("console_screenshots", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
