"""Accessibility of the console: every documented page (``PAGES`` of
scripts/console_screenshots.py, on its seeded demo) renders, and axe-core (vendored by
``scripts/vendor-axe-core``, a test tool only) finds no serious or critical violation on
it, light at a desktop's width and dark at a phone's (where no page may be wider than
the screen); and a core flow works from the keyboard alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from conftest import RunningServer
from console._helpers import screenshots_script

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"


_WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > 391 && e.parentElement
               && e.parentElement.getBoundingClientRect().right <= 391)
  .slice(0, 3).map(e => e.tagName + '.' + e.className + ' in ' + e.parentElement.tagName)
  .join('; ')"""
"""What sticks out first, to say which element makes a page wider than the phone."""


def _serious(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.help + ' — ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
    )
    assert isinstance(found, list)
    return [str(v) for v in found]


@pytest.mark.parametrize(("scheme", "phone"), [("light", False), ("dark", True)])
def test_every_page_renders_without_serious_violations(
    browser: Browser, server: RunningServer, scheme: str, phone: bool
) -> None:
    """Light at a desktop's width; dark at a phone's (390 px), where no page may scroll
    sideways: wide tables and code scroll inside their own box."""
    shots = screenshots_script()
    demo = shots.seed(
        server.url, server.admin_key, f"a11y{scheme}{int(time.time() * 1000) % 10**7}"
    )
    # axe is injected as a script of its own: the pages' CSP (rightly) refuses it
    size = {"width": 390, "height": 844} if phone else {"width": 1100, "height": 760}
    context = browser.new_context(
        bypass_csp=True,
        color_scheme=scheme,  # type: ignore[arg-type]
        viewport=size,  # type: ignore[arg-type]
        is_mobile=phone,
    )
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        found: dict[str, list[str]] = {}
        wide: dict[str, str] = {}
        for shot in shots.PAGES:
            if shot.name != "login" and "/console/login" in page.url:
                shots.login(page, demo)
            shots.open_shot(page, demo, shot)  # waits for the page's own content
            assert demo.key not in page.content(), shot.name
            if phone and page.evaluate("document.documentElement.scrollWidth") > 390:
                wide[shot.name] = page.evaluate(_WIDEST)
            problems = _serious(page)
            if problems:
                found[shot.name] = problems
        assert (found, wide) == ({}, {})
    finally:
        context.close()


def test_a_database_is_made_with_the_keyboard_alone(
    browser: Browser, server: RunningServer, make_user: Any
) -> None:
    user, key = make_user(prefix="keyboard")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{server.url}/console/login")
        assert page.evaluate("document.activeElement.name") == "username"  # autofocus
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")  # back past the brand: the skip link is first
        assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
        page.focus("input[name=api_key]")
        page.keyboard.type(key)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.endswith("/console/databases")
        page.focus("input[name=name]")
        page.keyboard.type("typed")
        for _ in range(10):  # to the button, through the form's own fields only
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.name") == "create":
                break
        assert page.evaluate("document.activeElement.textContent") == "Create database"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.endswith(f"/console/databases/{user}/typed")
    finally:
        context.close()
    made = httpx.get(
        f"{server.url}/v1/databases/{user}/typed", headers={"Authorization": f"Bearer {key}"}
    )
    assert made.status_code == 200
