"""Imports and exports in the console, in headless Chromium: a file previewed in place
(format, header, inferred types), a type changed, imported, followed to its end; a
failing import's error; exports of a query and of a table, downloaded; the job list;
and the upload form's token checked as the upload streams — checked through the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Page

from console._helpers import browser_login, console_client, follow, form_token

MakeUser = Callable[..., tuple[str, str]]
CSV = b"id,name,joined\n1,Ann,2026-01-02\n2,Bo,2026-02-03\n3,Cy,\n"


def _api(base_url: str, key: str, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method, f"{base_url}/v1{path}", headers={"Authorization": f"Bearer {key}"}, **kw
    )
    assert r.status_code < 300, r.text
    return r.json()


def _database(base_url: str, key: str, name: str) -> str:
    full_name: str = _api(base_url, key, "POST", "/databases", json={"name": name})["full_name"]
    return full_name


def _rows(base_url: str, key: str, db: str, sql: str) -> Any:
    return _api(base_url, key, "POST", "/query", json={"database": db, "sql": sql})["data"]


def _wait_done(page: Page) -> str:
    """The job's final state (its page refreshes itself while it runs)."""
    page.wait_for_selector("[data-state=DONE], [data-state=FAILED]", timeout=60_000)
    page.wait_for_load_state()  # the final page whole, not only its state so far
    state = page.get_attribute("[data-state]", "data-state")
    assert state is not None
    return state


def test_a_file_previewed_adjusted_and_imported(
    page: Page, base_url: str, make_user: MakeUser
) -> None:
    _, key = make_user(prefix="importer")
    db = _database(base_url, key, "imports")
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}")
    follow(page, "a:has-text('Import a file')")
    page.fill("input[name=table_name]", "people")
    page.set_input_files(
        "input[name=file]", {"name": "people.csv", "mimeType": "text/csv", "buffer": CSV}
    )
    page.click("button[name=preview]")
    page.wait_for_selector("[data-preview-result]")
    assert page.url.endswith(f"/console/databases/{db}/import")  # in place: no navigation
    preview = page.locator("[data-preview-result]").inner_text()
    assert "CSV" in preview and "header row" in preview and "Ann" in preview
    assert page.input_value("input[name='type:joined']") == "date"
    assert page.input_value("input[name='type:id']") in ("bigint", "integer", "smallint")
    page.fill("input[name='type:id']", "text")  # the file stays chosen
    follow(page, "button[name=import]")
    assert "/console/jobs/import/" in page.url
    assert _wait_done(page) == "DONE"
    assert "3 rows" in page.content()
    follow(page, "a:has-text('public.people')")
    assert page.locator("tr[data-column=id] code").inner_text() == "text"
    assert _rows(base_url, key, db, "SELECT id, joined FROM people ORDER BY id") == [
        ["1", "2026-01-02"],
        ["2", "2026-02-03"],
        ["3", None],
    ]

    # a type the file's values do not fit: the job fails and says where
    page.goto(f"{base_url}/console/databases/{db}/import")
    page.fill("input[name=table_name]", "people2")
    page.set_input_files(
        "input[name=file]", {"name": "people.csv", "mimeType": "text/csv", "buffer": CSV}
    )
    page.click("button[name=preview]")
    page.wait_for_selector("[data-preview-result]")
    page.fill("input[name='type:name']", "integer")
    follow(page, "button[name=import]")
    assert _wait_done(page) == "FAILED"
    error = page.locator(".sql-error").inner_text()
    assert "Ann" in error or "integer" in error
    assert _rows(base_url, key, db, "SELECT to_regclass('people2') IS NULL") == [[True]]

    # a bad type name is refused before any job
    page.goto(f"{base_url}/console/databases/{db}/import")
    page.fill("input[name=table_name]", "people3")
    page.set_input_files(
        "input[name=file]", {"name": "people.csv", "mimeType": "text/csv", "buffer": CSV}
    )
    page.click("button[name=preview]")
    page.wait_for_selector("[data-preview-result]")
    page.fill("input[name='type:name']", "no such type")
    page.click("button[name=preview]")  # previewed again with that type: said at once
    page.wait_for_selector("#preview .flash.error")
    assert "invalid_column_type" in page.locator("#preview").inner_text()
    assert len(_api(base_url, key, "GET", "/imports")) == 2


def test_exports_of_a_query_and_a_table(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="exporter")
    db = _database(base_url, key, "exports")
    _rows(
        base_url,
        key,
        db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    )
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}/sql")
    page.fill("textarea[name=sql]", "SELECT id, v FROM t ORDER BY id")
    follow(page, "button[name=run]")
    page.select_option("form.export select[name=export_format]", "csv")
    follow(page, "form.export button[name=export]")
    assert "/console/jobs/export/" in page.url
    assert _wait_done(page) == "DONE"
    link = page.get_attribute("a:has-text('Download')", "href")
    assert link is not None
    got = httpx.get(link if link.startswith("http") else base_url + link)
    assert got.status_code == 200 and got.text.replace("\r\n", "\n") == "id,v\n1,a\n2,b\n"

    page.goto(f"{base_url}/console/databases/{db}/tables/public/t")
    page.select_option("form.export select[name=export_format]", "ndjson")
    follow(page, "form.export button[name=export]")
    assert _wait_done(page) == "DONE"
    link = page.get_attribute("a:has-text('Download')", "href")
    assert link is not None
    lines = httpx.get(link if link.startswith("http") else base_url + link).text.splitlines()
    assert [json.loads(line) for line in lines] == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]

    follow(page, "header nav a:has-text('Imports and exports')")
    assert page.locator("tr[data-job]").count() == 2
    assert page.locator("tr[data-job] .state.done").count() == 2
    answer = page.goto(f"{base_url}/console/jobs/export/exp_nope")
    assert answer is not None and answer.status == 404


def test_the_upload_form_is_checked_as_it_streams(base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="uploader")
    reader, reader_key = make_user(prefix="upreader")
    db = _database(base_url, key, "guarded")
    _api(base_url, key, "PUT", f"/databases/{db}/collaborators/{reader}", json={"role": "read"})
    files = {"file": ("a.csv", CSV, "text/csv")}
    with console_client(base_url, key) as http:
        token = form_token(http.get(f"/console/databases/{db}/import").text)
        url = f"/console/databases/{db}/import"
        # no token, a wrong one, another site's form: refused, no job
        for data, headers in (
            ({"table_name": "x"}, {}),
            ({"table_name": "x", "csrf": "wrong"}, {}),
            ({"table_name": "x", "csrf": token}, {"Origin": "https://evil.test"}),
        ):
            r = http.post(url, data=data, files=files, headers=headers)
            assert r.status_code == 403, r.text
        # the preview without the page's script: the whole page, the file to choose again
        r = http.post(url + "/preview", data={"csrf": token, "table_name": "x"}, files=files)
        assert r.status_code == 200 and "Choose the file again" in r.text and "Ann" in r.text
        r = http.post(url, data={"csrf": token, "table_name": "x" * 64}, files=files)
        assert r.status_code == 422 and "validation_error" in r.text
    assert _api(base_url, key, "GET", "/imports") == []
    with console_client(base_url, reader_key) as http:
        assert "Import a file" not in http.get(f"/console/databases/{db}").text
        token = form_token(http.get(f"/console/databases/{db}/import").text)
        r = http.post(
            f"/console/databases/{db}/import", data={"csrf": token, "table_name": "x"}, files=files
        )
        assert r.status_code == 403 and "write" in r.text
    assert _api(base_url, key, "GET", "/imports") == []
