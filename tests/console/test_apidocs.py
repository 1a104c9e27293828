"""The API docs page (``/docs``) in headless Chromium: Swagger UI renders the server's
OpenAPI document with every request to anywhere but the server refused (offline), no
script or style breaks the page's CSP, and its files are the vendored ones."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Route

STATIC = Path(__file__).resolve().parents[2] / "src" / "millpond" / "server" / "apidocs" / "static"


def test_the_docs_page_renders_offline(browser: Browser, base_url: str) -> None:
    context = browser.new_context()
    elsewhere: list[str] = []
    problems: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":  # a CSP violation, a failed load, a script error
            problems.append(message.text)

    context.route("**/*", only_the_server)
    try:
        page = context.new_page()
        page.on("console", console)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.goto(f"{base_url}/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "millpond" in page.inner_text(".swagger-ui .info .title")
        page.locator(".opblock-summary-path").first.wait_for(timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/v1/databases/{owner}/{name}/module" in paths, paths[:5]
    finally:
        context.close()
    assert elsewhere == []
    assert problems == []


def test_the_docs_files(base_url: str) -> None:
    page = httpx.get(f"{base_url}/docs")
    assert page.status_code == 200 and "https://" not in page.text and "<script>" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    for name, kind in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("init.js", "text/javascript"),
    ):
        r = httpx.get(f"{base_url}/docs/assets/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert r.content == (STATIC / name).read_bytes()
    for name in ("LICENSE", "../router.py", "SWAGGER_UI_VERSION", "nothing.js"):
        r = httpx.get(f"{base_url}/docs/assets/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", name
    assert (STATIC / "SWAGGER_UI_VERSION").read_text().strip().startswith("5.")
