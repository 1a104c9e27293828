"""The console's realtime inspector in headless Chromium: a subscription's rows, then
another writer's inserts, updates and deletes arriving live; a refused query; the
socket closed when the session's key is revoked; handshakes from another site or
without a session refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from console._helpers import COOKIE, browser_login, console_client, follow, form_token

MakeUser = Callable[..., tuple[str, str]]


def _api(base_url: str, key: str, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method, f"{base_url}/v1{path}", headers={"Authorization": f"Bearer {key}"}, **kw
    )
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def _sql(base_url: str, key: str, db: str, sql: str) -> None:
    _api(base_url, key, "POST", "/query", json={"database": db, "sql": sql})


def _grid(page: Page) -> list[list[str]]:
    return [r.split("\t") for r in page.locator("[data-live-rows] tbody tr").all_inner_texts()]


def test_rows_and_changes_arrive_live(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="inspector")
    db = _api(base_url, key, "POST", "/databases", json={"name": "live"})["full_name"]
    _sql(
        base_url,
        key,
        db,
        "CREATE TABLE msgs (id int PRIMARY KEY, body text, room int);"
        " INSERT INTO msgs VALUES (1, 'hi', 7), (2, 'yo', 7), (3, 'elsewhere', 8)",
    )
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}")
    follow(page, "a:has-text('Realtime inspector')")
    assert page.input_value("input[name=query]") == "SELECT * FROM public.msgs"
    page.fill("input[name=query]", "SELECT * FROM msgs WHERE room = 7")
    page.click("button[name=subscribe]")
    page.wait_for_selector("[data-live-status]:has-text('Live:')")
    assert _grid(page) == [["1", "hi", "7"], ["2", "yo", "7"]]

    # another writer's changes, as they commit
    _sql(base_url, key, db, "INSERT INTO msgs VALUES (4, 'new', 7), (5, 'not here', 8)")
    page.wait_for_selector("[data-change=insert]")
    _sql(base_url, key, db, "UPDATE msgs SET body = 'hello' WHERE id = 1")
    page.wait_for_selector("[data-change=update]")
    _sql(base_url, key, db, "DELETE FROM msgs WHERE id = 2")
    page.wait_for_selector("[data-change=delete]")
    assert sorted(_grid(page)) == [["1", "hello", "7"], ["4", "new", "7"]]
    kinds = page.locator("[data-change]").evaluate_all("items => items.map(i => i.dataset.change)")
    assert kinds == ["delete", "update", "insert"]
    assert '"body":"new"' in page.locator("[data-change=insert] code").inner_text()

    # a query the realtime service does not serve: said so
    page.fill("input[name=query]", "SELECT id FROM msgs")
    page.click("button[name=subscribe]")
    page.wait_for_selector("[data-live-status]:has-text('Refused')")
    assert "unsupported_query" in page.inner_text("[data-live-status]")

    # the session's key revoked: the socket closes as a key's would
    page.fill("input[name=query]", "SELECT * FROM msgs")
    page.click("button[name=subscribe]")
    page.wait_for_selector("[data-live-status]:has-text('Live:')")
    me = _api(base_url, key, "GET", "/me")
    _api(base_url, key, "DELETE", f"/keys/{me['key']['id']}")
    page.wait_for_selector("[data-live-status]:has-text('(4001)')", timeout=20_000)


def test_handshakes_need_the_session_and_this_site(base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="wsguard")
    db = _api(base_url, key, "POST", "/databases", json={"name": "guarded"})["full_name"]
    url = base_url.replace("http://", "ws://") + f"/console/databases/{db}/live"
    with console_client(base_url, key) as http:
        cookie = http.cookies.get(COOKIE, path="/console")
    assert cookie
    cases = [
        ({"Origin": "https://evil.test", "Cookie": f"{COOKIE}={cookie}"}, 4003),
        ({"Origin": base_url}, 4001),
        ({"Origin": base_url, "Cookie": f"{COOKIE}=mps_forged"}, 4001),
        ({"Cookie": f"{COOKIE}={cookie}"}, 4003),  # no Origin: not a page of ours
    ]
    for headers, code in cases:
        with connect(url, additional_headers=headers, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code, headers
    headers = {"Origin": base_url, "Cookie": f"{COOKIE}={cookie}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    with connect(url.replace(db, "nobody/nothing"), additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004


def test_logging_out_closes_the_inspector(base_url: str, make_user: MakeUser) -> None:
    _, key = make_user(prefix="wslogout")
    db = _api(base_url, key, "POST", "/databases", json={"name": "bye"})["full_name"]
    url = base_url.replace("http://", "ws://") + f"/console/databases/{db}/live"
    with console_client(base_url, key) as http:
        cookie = http.cookies.get(COOKIE, path="/console")
        headers = {"Origin": base_url, "Cookie": f"{COOKIE}={cookie}"}
        with connect(url, additional_headers=headers, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            token = form_token(http.get("/console/databases").text)
            assert http.post("/console/logout", data={"csrf": token}).status_code == 303
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
