"""A fresh browser context and page per console test, failing on any script error, CSP
violation or failed load of a page's file (the pages have no inline script or style:
either would be a bug). Pages that answer 4xx on purpose are not failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response

_FILES = ("stylesheet", "script", "image", "font", "media")
"""A page's own files (a fetch's answer may be a 4xx on purpose, as a document's may)."""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # a document's own 4xx is logged as a failed load too: responses are judged below
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def response(answer: Response) -> None:
        if answer.request.resource_type in _FILES and answer.status >= 400:
            problems.append(f"{answer.status} {answer.url}")

    opened.on("pageerror", lambda exc: problems.append(str(exc)))
    opened.on("console", console)
    opened.on("response", response)
    yield opened
    context.close()
    assert problems == [], problems
