"""The flags console in headless Chromium (Debian's, driven by Playwright) against the
session's server: login, create, rules (actor list, rollout, trait), on for everyone and
back, soft delete, restore, hard delete, the audit log, logout; revoked keys, read-only
keys, other users' environments and CSRF, checked through the API. The flag page's other
forms and their errors are in test_flags_pages.py."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Dialog, Page

from conftest import FlagsEnv
from console._helpers import browser_login, console_client, follow, login


def _check(env: FlagsEnv, key: str, **who: Any) -> dict[str, Any]:
    result: dict[str, Any] = env("POST", f"/flags/{key}/check", json=who)
    return result


def _add_rule(page: Page, kind: str, fields: dict[str, str]) -> None:
    """Add a rule with one condition through the flag page's "Add a rule" form."""
    form = "#add-rule form"
    page.click("#add-rule > summary")
    page.select_option(f"{form} select[name=add_kind]", kind)
    follow(page, f"{form} button[value=add]")
    for name, value in fields.items():
        page.fill(f"{form} [name='{name}']", value)
    follow(page, f"{form} button[value=save]")


def test_the_flag_lifecycle(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    env = flags_env
    asked: list[str] = []
    blocked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    browser_login(page, base_url, env.key)
    assert page.url.endswith("/console/databases")  # a user's key: the platform's home
    follow(page, "header nav a:has-text('Flags')")
    assert "No active flags" in page.content()
    page.fill("input[name=key]", "new-editor")
    page.fill("input[name=name]", "New editor")
    follow(page, "button[name=create]")
    assert "/console/flags/new-editor" in page.url
    assert env("GET", "/flags/new-editor")["name"] == "New editor"

    # rules, built condition by condition: an actor list, a 30% rollout and a trait rule
    _add_rule(page, "actor_list", {"c0.actors": "id=u1\nid=u2"})
    _add_rule(page, "rollout", {"c0.percentage": "30"})
    _add_rule(page, "trait", {"c0.trait_key": "tier", "c0.trait_value": "gold"})
    assert "Saved rule" in page.content()
    assert len(env("GET", "/flags/new-editor/rules")) == 3
    people = [{"event_type": "identify", "keys": {"id": f"x{i}"}} for i in range(200)]
    env(
        "POST",
        "/events",
        json={"events": [*people, {"event_type": "identify", "keys": {"id": "u1"}}]},
    )
    assert _check(env, "new-editor", user={"id": "u1"})["reason"] == "RULE_MATCH"
    env("POST", "/companies", 201, json={"keys": {"id": "acme"}, "traits": {"tier": "gold"}})
    assert _check(env, "new-editor", company={"id": "acme"})["value"] is True
    rolled = sum(_check(env, "new-editor", user={"id": f"x{i}"})["value"] for i in range(200))
    assert 30 < rolled < 90  # about 30% of 200
    assert "30% of users, picked by their id" in page.inner_text("#rules")

    # the list says what it answers; on for everyone, and back to the rules
    follow(page, "text=← all flags")
    row = "tr[data-flag=new-editor]"
    assert page.inner_text(f"{row} .state") == "on by rules (3)"
    follow(page, f"{row} button[name=everyone][value=on]")
    assert page.inner_text(f"{row} .state") == "on for everyone"
    assert _check(env, "new-editor", user={"id": "nobody"})["reason"] == "GLOBAL_OVERRIDE"
    follow(page, f"{row} button[name=everyone][value=rules]")
    assert page.inner_text(f"{row} .state") == "on by rules (3)"
    assert _check(env, "new-editor", user={"id": "nobody"})["value"] is False

    # soft delete, restore, delete for good
    follow(page, "tr[data-flag=new-editor] button[name=delete]")
    assert env("GET", "/flags") == []
    follow(page, ".tabs a:has-text('Deleted')")
    follow(page, "tr[data-flag=new-editor] button[name=restore]")
    assert env("GET", "/flags/new-editor")["deleted_at"] is None
    page.goto(f"{base_url}/console/flags?env={env.id}")
    follow(page, "tr[data-flag=new-editor] button[name=delete]")
    follow(page, ".tabs a:has-text('Deleted')")
    follow(page, "tr[data-flag=new-editor] button[name=purge]")
    assert env("GET", "/flags", params={"include_deleted": True}) == []

    # who changed what
    follow(page, "header a:has-text('Audit log')")
    entries = page.locator("tr.audit-entry")
    assert entries.count() >= 6
    assert "Deleted for good flag new-editor" in entries.first.inner_text()
    assert env.key not in page.content()

    # the page's script and style work under its CSP (none of them is inline)
    assert asked == ["Delete new-editor?", "Delete new-editor?", "Delete new-editor for good?"]
    assert blocked == []
    background = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(23, 32, 46)"  # console.css's --top

    follow(page, "button:has-text('Log out')")
    page.goto(f"{base_url}/console/flags")
    assert page.url.endswith("/console/login")


def test_picking_an_environment(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    made = flags_env.http.post(
        "/v1/flags/environments",
        json={"name": "staging"},
        headers={"Authorization": f"Bearer {flags_env.key}"},
    )
    assert made.status_code == 201, made.text
    staging = made.json()["id"]
    browser_login(page, base_url, flags_env.key)
    page.goto(f"{base_url}/console/flags")
    with page.expect_navigation():  # the select submits its form (console.js)
        page.select_option("select[name=env]", staging)
    assert f"env={staging}" in page.url


def test_bad_and_revoked_keys(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    browser_login(page, base_url, "mp_" + "x" * 40)
    assert "Unknown, revoked or expired API key." in page.content()
    made = flags_env("POST", "/keys", 201, json={"scope": "write"})
    browser_login(page, base_url, made["secret"])
    assert page.url.endswith("/console/flags")  # a key bound to the environment: flags only
    flags_env("DELETE", f"/keys/{made['id']}", 204)
    page.goto(f"{base_url}/console/flags")
    assert "/console/login" in page.url and "session ended" in page.content()


def test_read_only_keys_see_no_buttons(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    flags_env("POST", "/flags", 201, json={"key": "beta"})
    browser_login(page, base_url, flags_env.bound_key(scope="read"))
    assert page.locator("tr[data-flag=beta]").count() == 1
    assert page.locator("button[name=everyone]").count() == 0
    assert page.locator("button[name=create]").count() == 0


def test_csrf_and_other_users(base_url: str, flags_env: FlagsEnv, make_user: Any) -> None:
    flags_env("POST", "/flags", 201, json={"key": "beta"})
    url = f"/console/flags/beta/toggle?env={flags_env.id}"
    with console_client(base_url, flags_env.key) as http:
        r = http.post(url, data={})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        r = http.post(url, data={"csrf": "0" * 32})
        assert r.status_code == 403
        r = http.post(url, data={"csrf": "\u00e9" * 32})  # not even ASCII: still a 403
        assert r.status_code == 403
    assert flags_env("GET", "/flags/beta")["default_value"] is False  # nothing changed
    _, stranger = make_user(prefix="stranger")
    with console_client(base_url, stranger) as http:
        page = http.get(f"/console/flags?env={flags_env.id}")
        assert page.status_code == 404 and "beta" not in page.text
    with httpx.Client(base_url=base_url) as http:
        r = http.get("/console/flags", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        answer = login(http, flags_env.key)
        assert answer.status_code == 303
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("millpond_console=")
        ).lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        assert "max-age=" in cookie


def test_unknown_flags_and_environments_are_clear_errors(
    base_url: str, flags_env: FlagsEnv
) -> None:
    with console_client(base_url, flags_env.key) as http:
        missing = http.get(f"/console/flags/nope?env={flags_env.id}")
        assert missing.status_code == 404 and "flag_not_found" in missing.text
        other = http.get("/console/flags/nope?env=env_0000000000000000")
        assert other.status_code == 404 and "environment_not_found" in other.text
