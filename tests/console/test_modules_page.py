"""A database's module in the console, in headless Chromium: its reducers called through
their forms (typed arguments, defaults, a reducer's own error, a bad argument), its
tables, versions, scheduled runs and log — checked through the API; a database without
a module; a reader, who sees no call buttons and whose forged call is refused."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from console._helpers import browser_login, console_client, follow, form_token

MakeUser = Callable[..., tuple[str, str]]

MODULE = textwrap.dedent(
    '''
    import datetime
    from millpond.module import ReducerContext, SenderError, table, reducer, primary_key
    from millpond.module import ScheduleAt

    @table(public=True)
    class Note:
        id: int = primary_key(auto_inc=True)
        text: str = ""
        stars: int = 0
        tags: list[str] | None = None

    @table(scheduled="tick")
    class Timer:
        scheduled_id: int = primary_key(auto_inc=True)
        scheduled_at: ScheduleAt

    @reducer
    def add_note(
        ctx: ReducerContext, text: str, stars: int = 1, tags: list[str] | None = None
    ) -> int:
        """Add a note (stars from 0 to 5)."""
        if not 0 <= stars <= 5:
            raise SenderError("stars go from 0 to 5")
        print("adding", text)
        return ctx.db.note.insert(Note(text=text, stars=stars, tags=tags or [])).id

    @reducer
    def plan(ctx: ReducerContext) -> None:
        ctx.db.timer.insert(Timer(scheduled_at=datetime.timedelta(hours=1)))

    @reducer
    def tick(ctx: ReducerContext, timer: Timer) -> None:
        pass

    @reducer(private=True)
    def wipe(ctx: ReducerContext) -> None:
        for note in list(ctx.db.note):
            ctx.db.note.delete(note)
    '''
)


def _api(base_url: str, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{base_url}/v1{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        **kw,
    )


def _published(base_url: str, key: str, name: str) -> str:
    made = _api(base_url, key, "POST", "/databases", json={"name": name})
    assert made.status_code == 201, made.text
    db: str = made.json()["full_name"]
    r = _api(base_url, key, "POST", f"/databases/{db}/module", json={"files": {"app.py": MODULE}})
    assert r.status_code == 201, r.text
    return db


def _notes(base_url: str, key: str, db: str) -> Any:
    r = _api(
        base_url,
        key,
        "POST",
        "/query",
        json={"database": db, "sql": "SELECT text, stars, tags FROM note ORDER BY id"},
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_calling_reducers_and_reading_the_module(
    page: Page, base_url: str, make_user: MakeUser
) -> None:
    _, key = make_user(prefix="moduser")
    db = _published(base_url, key, "notes")
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}")
    follow(page, "a:has-text('Module')")
    assert page.locator("[data-version]").inner_text() == "1"
    reducers = page.locator("form[data-reducer]").evaluate_all(
        "forms => forms.map(f => f.dataset.reducer)"
    )
    assert reducers == ["add_note", "plan", "wipe"]  # not the scheduled one
    form = page.locator("form[data-reducer=add_note]")
    assert "Add a note" in form.inner_text() and "int8 = 1" in form.inner_text()

    # typed arguments; defaults for what is left empty
    form.locator("input[name='arg:text']").fill("first")
    form.locator("input[name='arg:tags']").fill('["a", "b"]')
    follow(page, form.locator("button[name=call]"))
    assert "add_note committed" in page.locator("[data-call-outcome]").inner_text()
    assert "returned 1" in page.locator("[data-call-outcome]").inner_text()
    assert _notes(base_url, key, db) == [["first", 1, ["a", "b"]]]

    # the reducer's own error, and an argument that is no JSON: the input kept
    form = page.locator("form[data-reducer=add_note]")
    form.locator("input[name='arg:text']").fill("second")
    form.locator("input[name='arg:stars']").fill("9")
    follow(page, form.locator("button[name=call]"))
    assert "stars go from 0 to 5" in page.locator("[data-call-error]").inner_text()
    assert page.input_value("form[data-reducer=add_note] input[name='arg:stars']") == "9"
    page.locator("form[data-reducer=add_note] input[name='arg:stars']").fill("lots")
    follow(page, page.locator("form[data-reducer=add_note] button[name=call]"))
    assert "write a JSON value" in page.locator("[data-call-error]").inner_text()
    assert len(_notes(base_url, key, db)) == 1

    # a scheduled run, the tables, the versions
    follow(page, page.locator("form[data-reducer=plan] button[name=call]"))
    assert page.locator("[data-schedule]").count() == 1
    assert "tick" in page.locator("[data-schedule]").inner_text()
    assert page.locator("tr[data-module-table=note]").count() == 1
    assert "private" in page.locator("tr[data-module-table=timer]").inner_text()
    assert "running" in page.locator("tr[data-module-version='1']").inner_text()

    # the log, newest first
    follow(page, "a:has-text('its log')")
    assert "adding first" in page.locator("tr[data-log]").first.inner_text()
    assert page.locator("meta[http-equiv=refresh]").count() == 1
    # the page reloads itself every 2 s: one reload may come between the click and its page
    follow(page, "a:has-text('stop')")
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)


def test_no_module_and_readers(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="modowner")
    reader, reader_key = make_user(prefix="modreader")
    plain = _api(base_url, key, "POST", "/databases", json={"name": "plain"}).json()
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{plain['full_name']}/module")
    assert "No module is published" in page.content()

    db = _published(base_url, key, "shared")
    shared = _api(
        base_url, key, "PUT", f"/databases/{db}/collaborators/{reader}", json={"role": "read"}
    )
    assert shared.status_code == 200
    with console_client(base_url, reader_key) as http:
        page_html = http.get(f"/console/databases/{db}/module").text
        assert 'data-reducer="add_note"' in page_html  # readers call reducers, as clients do
        assert "Scheduled runs" not in page_html and "Versions" not in page_html  # admins'
        token = form_token(page_html)
        r = http.post(
            f"/console/databases/{db}/module/call",
            data={"csrf": token, "reducer": "add_note", "arg:text": "by a reader"},
        )
        assert r.status_code == 200 and "data-call-outcome" in r.text, r.text
        r = http.post(
            f"/console/databases/{db}/module/call", data={"csrf": token, "reducer": "wipe"}
        )
        assert r.status_code == 403, r.text
        r = http.post(
            f"/console/databases/{db}/module/call",
            data={"csrf": token, "reducer": "nope"},
        )
        assert r.status_code == 404 and "reducer_not_found" in r.text
    assert _notes(base_url, key, db) == [["by a reader", 1, []]]  # not wiped
