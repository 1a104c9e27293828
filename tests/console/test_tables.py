"""The console's table browser in headless Chromium: tables, columns, keys and indexes;
rows paged, sorted and filtered; insert, edit and delete through the page, checked
through the API; readers, tables without a key, odd names and markup in values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Dialog, Page

from console._helpers import browser_login, console_client, follow, form_token

MakeUser = Callable[..., tuple[str, str]]

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric, note text,
                    made timestamptz DEFAULT now());
CREATE INDEX items_name ON items (name);
INSERT INTO items (id, name, price)
  SELECT i, 'item ' || i, i * 1.5 FROM generate_series(1, 120) i;
CREATE TABLE orders (id bigint PRIMARY KEY, item int REFERENCES items (id));
CREATE TABLE log (at timestamptz, line text);
INSERT INTO log VALUES (now(), '<script>alert(1)</script>');
CREATE SCHEMA "my schema";
CREATE TABLE "my schema"."we""ird tab" ("the id" int PRIMARY KEY, "a b" text);
INSERT INTO "my schema"."we""ird tab" VALUES (1, 'x');
CREATE VIEW cheap AS SELECT * FROM items WHERE price < 10
"""


def _query(base_url: str, key: str, db: str, sql: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/query",
        json={"database": db, "sql": sql},
        headers={"Authorization": f"Bearer {key}"},
    )


def _value(base_url: str, key: str, db: str, sql: str) -> Any:
    r = _query(base_url, key, db, sql)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _setup(base_url: str, key: str, name: str) -> str:
    made = httpx.post(
        f"{base_url}/v1/databases", json={"name": name}, headers={"Authorization": f"Bearer {key}"}
    )
    assert made.status_code == 201, made.text
    db: str = made.json()["full_name"]
    assert _query(base_url, key, db, SCHEMA).status_code == 200
    return db


def _open(page: Page, row_id: int, label: str) -> None:
    """Follow the row's Edit (or, for a reader, Open) link."""
    link = page.locator(f"a[href$='row?key=%5B%22{row_id}%22%5D']")
    assert link.inner_text() == label
    follow(page, link)


def _ids(page: Page) -> list[int]:
    return [int(t) for t in page.locator("table.results tbody tr td:first-child").all_inner_texts()]


def test_browsing_a_table(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="browse")
    db = _setup(base_url, key, "browse")
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}")
    follow(page, "a:has-text('Browse tables')")
    listed = page.locator("tr[data-table]").evaluate_all("rows => rows.map(r => r.dataset.table)")
    assert listed[:4] == ["public.cheap", "public.items", "public.log", "public.orders"]
    assert 'my schema.we"ird tab' in listed
    assert "view" in page.locator("tr[data-table='public.cheap']").inner_text()
    follow(page, "tr[data-table='public.items'] a")

    # structure
    assert page.locator("tr[data-column=price] code").inner_text() == "numeric"
    assert page.locator("tr[data-column=id] .badge").inner_text() == "primary key"
    assert "now()" in page.locator("tr[data-column=made]").inner_text()
    assert "CREATE INDEX items_name ON public.items USING btree (name)" in page.content()

    # paging, by the primary key
    assert _ids(page) == list(range(1, 51))
    follow(page, "a[rel=next]")
    assert _ids(page) == list(range(51, 101))
    follow(page, "a[rel=next]")
    assert _ids(page) == list(range(101, 121)) and page.locator("a[rel=next]").count() == 0
    follow(page, "a[rel=prev]")
    assert _ids(page)[0] == 51

    # sorting: a header sorts up, again down
    follow(page, "table.results th a:has-text('price')")
    assert _ids(page)[:3] == [1, 2, 3]
    follow(page, "table.results th a:has-text('price')")
    assert _ids(page)[:3] == [120, 119, 118]

    # filters, kept with the sort
    page.select_option("select[name=col]", "name")
    page.select_option("select[name=op]", "contains")
    page.fill("input[name=val]", "11")
    follow(page, "button[name=apply]")
    assert _ids(page) == [*range(119, 109, -1), 11]  # still sorted by price, descending
    page.select_option("select[name=col]", "price")
    page.select_option("select[name=op]", ">=")
    page.fill("input[name=val]", "178.5")
    follow(page, "button[name=apply]")
    assert _ids(page) == [120, 119]
    page.select_option("select[name=col]", "id")
    page.select_option("select[name=op]", "=")
    page.fill("input[name=val]", "not a number")
    follow(page, "button[name=apply]")
    assert "invalid input syntax for type integer" in page.locator(".flash.error").inner_text()
    assert _ids(page)[:2] == [1, 2]  # the page still shows the rows, unfiltered
    page.select_option("select[name=col]", "note")
    page.select_option("select[name=op]", "is null")
    follow(page, "button[name=apply]")
    assert len(_ids(page)) == 50

    # odd names and markup in values are only text
    page.goto(f"{base_url}/console/databases/{db}/tables/public/log")
    assert page.locator("table.results td", has_text="<script>alert(1)</script>").count() == 1
    assert "no primary key" in page.content() and page.locator("a:has-text('Edit')").count() == 0
    page.goto(f"{base_url}/console/databases/{db}/tables")
    follow(page, "tr[data-table='my schema.we\"ird tab'] a")
    assert page.locator("tr[data-column='the id'] .badge").inner_text() == "primary key"
    assert page.locator("table.results tbody tr").inner_text().split("\t")[:2] == ["1", "x"]

    # a table that is not there
    answer = page.goto(f"{base_url}/console/databases/{db}/tables/public/nope")
    assert answer is not None and answer.status == 404 and "table_not_found" in page.content()


def test_editing_rows(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="editor")
    db = _setup(base_url, key, "edits")
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}/tables/public/items")

    # insert: empty fields get their default
    page.fill("input[name='v:id']", "500")
    page.fill("input[name='v:name']", "lamp")
    page.fill("input[name='v:price']", "19.90")
    follow(page, "button[name=insert]")
    assert "Inserted a row." in page.content()
    row = _value(
        base_url, key, db, "SELECT name, price, note, made IS NOT NULL FROM items WHERE id = 500"
    )
    assert row == [["lamp", "19.90", None, True]]
    page.fill("input[name='v:id']", "500")  # the same key again: Postgres says no
    page.fill("input[name='v:name']", "again")
    follow(page, "button[name=insert]")
    assert "duplicate key value" in page.locator(".flash.error").inner_text()
    assert _value(base_url, key, db, "SELECT count(*) FROM items") == [[121]]

    # edit: a value changed, another set to NULL; the rest untouched
    _value(base_url, key, db, "UPDATE items SET note = 'keep?' WHERE id = 7")
    page.goto(f"{base_url}/console/databases/{db}/tables/public/items")
    _open(page, 7, "Edit")
    assert page.input_value("textarea[name='v:note']") == "keep?"
    page.fill("textarea[name='v:name']", "seventh")
    page.check("input[name='null:note']")
    follow(page, "button[name=save]")
    assert "Saved the row." in page.content()
    assert _value(base_url, key, db, "SELECT name, note, price FROM items WHERE id = 7") == [
        ["seventh", None, "10.5"]
    ]

    # a row changed by someone else meanwhile is not overwritten blindly: it is gone
    page.goto(f"{base_url}/console/databases/{db}/tables/public/items")
    _open(page, 8, "Edit")
    _value(base_url, key, db, "DELETE FROM items WHERE id = 8")
    page.fill("textarea[name='v:name']", "eighth")
    follow(page, "button[name=save]")
    assert "no longer there" in page.locator(".flash.error").inner_text()

    # nothing changed: said so
    page.goto(f"{base_url}/console/databases/{db}/tables/public/items")
    _open(page, 9, "Edit")
    follow(page, "button[name=save]")
    assert "no value was changed" in page.locator(".flash.error").inner_text()

    # delete, asked first
    page.goto(f"{base_url}/console/databases/{db}/tables/public/items")
    _open(page, 9, "Edit")
    follow(page, "button[name=delete]")
    assert asked == ["Delete this row?"] and "Deleted the row." in page.content()
    assert _value(base_url, key, db, "SELECT count(*) FROM items WHERE id = 9") == [[0]]


def test_readers_browse_but_do_not_write(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, owner_key = make_user(prefix="tableowner")
    reader, reader_key = make_user(prefix="tablereader")
    db = _setup(base_url, owner_key, "shared")
    shared = httpx.put(
        f"{base_url}/v1/databases/{db}/collaborators/{reader}",
        json={"role": "read"},
        headers={"Authorization": f"Bearer {owner_key}"},
    )
    assert shared.status_code == 200, shared.text
    browser_login(page, base_url, reader_key)
    page.goto(f"{base_url}/console/databases/{db}/tables/public/items")
    assert _ids(page)[:2] == [1, 2]
    assert page.locator("button[name=insert]").count() == 0
    _open(page, 3, "Open")
    assert page.locator("button[name=save]").count() == 0
    assert page.get_attribute("textarea[name='v:name']", "readonly") is not None
    # the forms forged anyway: Postgres refuses the reader's role; nothing changes
    with console_client(base_url, reader_key) as http:
        token = form_token(http.get("/console/databases").text)
        url = f"/console/databases/{db}/tables/public/items/rows"
        for data in (
            {"action": "insert", "v:id": "900", "v:name": "forged"},
            {"action": "delete", "key": '["3"]'},
            {"action": "update", "key": '["3"]', "v:name": "forged", "was:name": "item 3"},
        ):
            r = http.post(url, data={"csrf": token, **data})
            assert r.status_code == 400, r.text
            assert "in a read-only transaction (sql_error)" in r.text, r.text
        r = http.post(url, data={"csrf": token, "action": "delete", "key": "not json"})
        assert r.status_code == 422 and "validation_error" in r.text
        r = http.post(url, data={"csrf": token, "action": "drop"})
        assert r.status_code == 422
    count = _value(
        base_url, owner_key, db, "SELECT count(*), max(name) FROM items WHERE id IN (3, 900)"
    )
    assert count == [[1, "item 3"]]
