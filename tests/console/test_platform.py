"""The platform's pages of the console in headless Chromium: databases (create, the
Connect panel, settings, collaborators, delete with its confirmation), the SQL editor
(results with types, errors at their position with the hint, the selection, history,
read-only callers) and API keys (created and shown once, revoked) — each checked
through the API, error paths included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Dialog, Page

from conftest import FlagsEnv
from console._helpers import browser_login, console_client, follow, form_token, password_login

MakeUser = Callable[..., tuple[str, str]]


def _api(base_url: str, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{base_url}/v1{path}", headers={"Authorization": f"Bearer {key}"}, **kw
    )


def _accept_dialogs(page: Page) -> list[str]:
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    return asked


def _database(base_url: str, key: str, name: str, sql: str = "") -> str:
    made = _api(base_url, key, "POST", "/databases", json={"name": name})
    assert made.status_code == 201, made.text
    full_name: str = made.json()["full_name"]
    if sql:
        ran = _api(base_url, key, "POST", "/query", json={"database": full_name, "sql": sql})
        assert ran.status_code == 200, ran.text
    return full_name


def test_a_database_from_creation_to_deletion(
    page: Page, base_url: str, make_user: MakeUser
) -> None:
    user, key = make_user(prefix="studio")
    friend, _ = make_user(prefix="friend")
    asked = _accept_dialogs(page)
    browser_login(page, base_url, key)
    assert page.url.endswith("/console/databases")
    assert "No databases yet" in page.content()

    # create, with a limit: the list shows its size against it
    page.fill("input[name=name]", "shop")
    page.fill("input[name=storage_limit_mb]", "100")
    follow(page, "button[name=create]")
    assert page.url.endswith(f"/console/databases/{user}/shop")
    assert page.locator(".flash.ok").inner_text() == f"Created {user}/shop."
    made = _api(base_url, key, "GET", f"/databases/{user}/shop").json()
    assert made["storage_limit_bytes"] == 100 * 1024 * 1024 and made["is_private"]
    conn_url = page.input_value("#conn-url")
    assert conn_url.startswith(f"postgresql://{user}:$MILLPOND_API_KEY@127.0.0.1:")
    assert f"/{user}%2Fshop?sslmode=require" in conn_url
    assert f"dbname={user}/shop" in page.input_value("#conn-psql")
    assert f'mp.query("{user}/shop"' in page.input_value("#conn-sdk")
    assert key not in page.content()  # the key is never shown again
    follow(page, "header nav a:has-text('Databases')")
    row = page.locator(f"tr[data-database='{user}/shop']")
    assert "of 100 MB" in row.inner_text() and row.locator("meter").count() == 1
    follow(page, row.locator("a"))

    # a name taken, and a bad limit: the error on the page, nothing changed
    page.goto(f"{base_url}/console/databases")
    page.fill("input[name=name]", "shop")
    follow(page, "button[name=create]")
    assert "already" in page.locator(".flash.error").inner_text()
    page.fill("input[name=name]", "other")
    page.fill("input[name=storage_limit_mb]", "lots")
    follow(page, "button[name=create]")
    assert "number of MB" in page.locator(".flash.error").inner_text()
    names = [d["name"] for d in _api(base_url, key, "GET", "/databases").json()]
    assert names == ["shop"]

    # settings: rename, make public, drop the limit
    page.goto(f"{base_url}/console/databases/{user}/shop")
    page.fill("form[action$='/settings'] input[name=name]", "store")
    page.uncheck("form[action$='/settings'] input[name=is_private]")
    page.fill("form[action$='/settings'] input[name=storage_limit_mb]", "")
    follow(page, "button[name=save]")
    assert page.url.endswith(f"/console/databases/{user}/store")
    now = _api(base_url, key, "GET", f"/databases/{user}/store").json()
    assert not now["is_private"] and now["storage_limit_bytes"] is None

    # collaborators: share, see, remove (asked first)
    page.fill("form[action$='/collaborators'] input[name=username]", friend)
    page.select_option("form[action$='/collaborators'] select[name=role]", "write")
    follow(page, "button[name=share]")
    assert f"{friend} can now write it." in page.content()
    shared = _api(base_url, key, "GET", f"/databases/{user}/store/collaborators").json()
    assert [(c["username"], c["role"]) for c in shared] == [(friend, "write")]
    page.fill("form[action$='/collaborators'] input[name=username]", "nobody-at-all")
    follow(page, "button[name=share]")
    assert page.locator(".flash.error").count() == 1
    follow(page, page.locator(f"tr[data-collaborator='{friend}'] button"))
    assert asked == [f"Remove {friend}'s access?"]
    assert _api(base_url, key, "GET", f"/databases/{user}/store/collaborators").json() == []

    # delete: a wrong confirmation deletes nothing; the right one does
    page.fill("input[name=confirm]", "store")
    follow(page, "button[name=delete]")
    assert f"type {user}/store to confirm" in page.locator(".flash.error").inner_text()
    assert _api(base_url, key, "GET", f"/databases/{user}/store").status_code == 200
    page.fill("input[name=confirm]", f"{user}/store")
    follow(page, "button[name=delete]")
    assert page.url.endswith("/console/databases")
    assert f"Deleted {user}/store." in page.content()
    assert _api(base_url, key, "GET", f"/databases/{user}/store").status_code == 404


def test_the_sql_editor(page: Page, base_url: str, make_user: MakeUser) -> None:
    user, key = make_user(prefix="sqler")
    db = _database(base_url, key, "lab")
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/databases/{db}/sql")
    page.fill(
        "textarea[name=sql]",
        "CREATE TABLE t (id bigint PRIMARY KEY, label text, price numeric, at date);\n"
        "INSERT INTO t VALUES (1, 'lamp', 19.90, '2026-01-02'), (2, NULL, 3, NULL);\n"
        "SELECT * FROM t ORDER BY id",
    )
    assert page.locator("pre.highlight .tok-kw").count() >= 6  # highlighted as typed
    follow(page, "button[name=run]")
    heads = page.locator("table.results th").all_inner_texts()
    assert [h.split("\n") for h in heads] == [
        ["id", "int8"],
        ["label", "text"],
        ["price", "numeric"],
        ["at", "date"],
    ]
    cells = [r.split("\t") for r in page.locator("table.results tbody tr").all_inner_texts()]
    assert cells == [["1", "lamp", "19.90", "2026-01-02"], ["2", "NULL", "3", "NULL"]]
    assert page.locator("td.null").count() == 2
    assert "2 rows" in page.locator(".result").inner_text()

    # an error: its line with a caret under the position, and Postgres' hint
    page.fill("textarea[name=sql]", "SELECT 1;\nSELECT lower(id) FROM t")
    follow(page, "button[name=run]")
    error = page.locator(".sql-error").inner_text()
    assert "function lower(bigint) does not exist" in error
    assert "SQLSTATE 42883" in error and "Hint: No function matches" in error
    at = page.locator(".sql-error pre.at").inner_text().split("\n")
    assert at[0] == "line 2: SELECT lower(id) FROM t"
    assert at[1].index("^") == at[0].index("lower(")
    assert page.input_value("textarea[name=sql]") == "SELECT 1;\nSELECT lower(id) FROM t"

    # the selection runs alone (button, then Ctrl+Enter)
    page.fill("textarea[name=sql]", "DELETE FROM t;\nSELECT count(*) AS n FROM t")
    text = page.input_value("textarea[name=sql]")
    start = text.index("SELECT")
    page.eval_on_selector(
        "textarea[name=sql]", f"e => {{ e.focus(); e.setSelectionRange({start}, {len(text)}); }}"
    )
    follow(page, "button[name=run-selection]")
    assert page.locator("table.results tbody tr").inner_text() == "2"  # nothing deleted
    page.eval_on_selector(
        "textarea[name=sql]", f"e => {{ e.focus(); e.setSelectionRange({start}, {len(text)}); }}"
    )
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("table.results")
    assert page.locator("table.results tbody tr").inner_text() == "2"

    # history: newest first, in this browser, and back into the editor on a click
    page.goto(f"{base_url}/console/databases/{db}/sql")
    history = page.locator("ol.history li").all_inner_texts()
    assert history[0] == "SELECT count(*) AS n FROM t" and len(history) == 3
    page.locator("ol.history li button").nth(1).click()
    assert page.input_value("textarea[name=sql]") == "SELECT 1;\nSELECT lower(id) FROM t"

    # nothing to run; and a database that is not there
    page.fill("textarea[name=sql]", " ")
    with page.expect_navigation():  # past the browser's own check of the required field
        page.eval_on_selector("form.editor", "f => f.submit()")
    assert "there is no SQL to run" in page.content()
    page.goto(f"{base_url}/console/databases/{user}/nope/sql")
    assert "database_not_found" in page.content()


def test_a_reader_gets_a_read_only_editor(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, owner_key = make_user(prefix="lender")
    reader, reader_key = make_user(prefix="reader")
    db = _database(base_url, owner_key, "ro", "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    shared = _api(
        base_url, owner_key, "PUT", f"/databases/{db}/collaborators/{reader}", json={"role": "read"}
    )
    assert shared.status_code == 200, shared.text
    browser_login(page, base_url, reader_key)
    row = page.locator(f"tr[data-database='{db}']")
    assert "read" in row.inner_text()
    page.goto(f"{base_url}/console/databases/{db}")
    assert page.locator("button[name=delete]").count() == 0
    assert page.locator("button[name=save]").count() == 0
    page.goto(f"{base_url}/console/databases/{db}/sql")
    assert page.locator("h1 .badge").inner_text() == "read-only"
    page.fill("textarea[name=sql]", "INSERT INTO t VALUES (2)")
    follow(page, "button[name=run]")
    assert page.locator(".sql-error").count() == 1
    count = _api(
        base_url,
        owner_key,
        "POST",
        "/query",
        json={"database": db, "sql": "SELECT count(*) FROM t"},
    )
    assert count.json()["data"] == [[1]]
    # the owner's page, forged by the reader: refused, nothing deleted
    with console_client(base_url, reader_key) as http:
        token = form_token(http.get("/console/databases").text)
        r = http.post(f"/console/databases/{db}/delete", data={"csrf": token, "confirm": db})
        assert r.status_code == 403, r.text
    assert _api(base_url, owner_key, "GET", f"/databases/{db}").status_code == 200


def test_keys_are_shown_once_and_revoked(page: Page, base_url: str, make_user: MakeUser) -> None:
    user, key = make_user(prefix="keyer")
    asked = _accept_dialogs(page)
    browser_login(page, base_url, key)
    follow(page, "header nav a:has-text('API keys')")
    assert page.locator("tr[data-key] .badge").inner_text() == "this session"
    page.fill("input[name=name]", "ci")
    page.select_option("select[name=scope]", "read")
    page.fill("input[name=expires_in_days]", "30")
    follow(page, "button[name=create]")
    secret = page.input_value("#new-key")
    me = _api(base_url, secret, "GET", "/me")
    assert me.status_code == 200 and me.json()["user"]["username"] == user
    listed = {k["name"]: k for k in _api(base_url, key, "GET", "/keys").json()}
    assert listed["ci"]["scope"] == "read" and listed["ci"]["expires_at"] is not None
    page.goto(f"{base_url}/console/keys")
    assert secret not in page.content()  # once only
    page.fill("input[name=expires_in_days]", "-1")
    follow(page, "button[name=create]")
    assert "more than 0 days" in page.locator(".flash.error").inner_text()
    assert len(_api(base_url, key, "GET", "/keys").json()) == 2

    follow(page, page.locator(f"tr[data-key='{listed['ci']['id']}'] button[name=revoke]"))
    assert asked == ["Revoke ci? Whatever uses it stops working."]
    assert "Revoked the key." in page.content()
    assert _api(base_url, secret, "GET", "/me").status_code == 401

    # revoking the session's own key ends the session
    follow(page, page.locator("tr[data-key]:has(.badge) button[name=revoke]"))
    assert "You will be logged out" in asked[-1]
    assert "/console/login" in page.url and "session ended" in page.content()
    assert _api(base_url, key, "GET", "/me").status_code == 401


def test_a_flags_key_sees_flags_only(page: Page, base_url: str, flags_env: FlagsEnv) -> None:
    browser_login(page, base_url, flags_env.bound_key(scope="write"))
    assert page.url.endswith("/console/flags")
    assert page.locator("header nav a:has-text('Databases')").count() == 0
    for path in ("/console/databases", "/console/keys", "/console/databases/a/b/sql"):
        answer = page.goto(f"{base_url}{path}")
        assert answer is not None and answer.status == 403
        assert "bound to one flags environment" in page.content()


def test_forms_without_a_session_or_token_change_nothing(
    base_url: str, make_user: MakeUser
) -> None:
    _, key = make_user(prefix="forger")
    db = _database(base_url, key, "kept")
    posts = [
        ("/console/databases/new", {"name": "made"}),
        (f"/console/databases/{db}/delete", {"confirm": db}),
        (f"/console/databases/{db}/settings", {"name": "renamed"}),
        (f"/console/databases/{db}/sql", {"sql": "CREATE TABLE x (id int)"}),
        ("/console/keys/new", {"name": "more"}),
    ]
    with httpx.Client(base_url=base_url) as anonymous:
        for path, data in posts:  # no session: to the login page
            r = anonymous.post(path, data=data)
            assert r.status_code == 303 and r.headers["location"] == "/console/login", path
    with console_client(base_url, key) as http:
        for path, data in posts:  # a session, but no token / another site's form
            r = http.post(path, data=data)
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", path
            token = form_token(http.get("/console/databases").text)
            r = http.post(
                path, data={**data, "csrf": token}, headers={"Origin": "https://evil.test"}
            )
            assert r.json()["error"]["code"] == "cross_site_request", path
        r = http.post(f"/console/databases/{db}/nonsense", data={})
        assert r.status_code == 404
    assert [d["name"] for d in _api(base_url, key, "GET", "/databases").json()] == ["kept"]
    assert len(_api(base_url, key, "GET", "/keys").json()) == 1
    tables = _api(
        base_url,
        key,
        "POST",
        "/query",
        json={"database": db, "sql": "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"},
    )
    assert tables.json()["data"] == [[0]]


def test_service_accounts_and_their_keys(page: Page, base_url: str, make_user: MakeUser) -> None:
    user, key = make_user(prefix="robots")
    asked = _accept_dialogs(page)
    browser_login(page, base_url, key)
    page.goto(f"{base_url}/console/keys")
    follow(page, "a:has-text('Service accounts')")
    assert "No service accounts yet" in page.content()
    page.fill("input[name=name]", "nightly")
    follow(page, "button[name=create-account]")
    assert "Created the service account nightly." in page.content()
    account = page.url
    page.fill("input[name=name]", "prod")
    page.select_option("select[name=scope]", "read")
    follow(page, "button[name=create]")
    secret = page.input_value("#new-key")
    me = _api(base_url, secret, "GET", "/me").json()
    assert me["service_account"]["name"] == "nightly" and me["key"]["scope"] == "read"
    assert me["user"]["username"] == user
    page.fill("input[name=name]", "staging")
    follow(page, "button[name=create]")
    assert page.input_value("#new-key") != secret
    page.goto(account)
    assert page.locator("tr[data-key]").count() == 2
    assert secret not in page.content()  # shown once

    # a service account's own key cannot manage accounts, here as in the API
    with console_client(base_url, secret) as robot:
        answer = robot.get("/console/service-accounts")
        assert answer.status_code == 403

    first = page.locator("tr[data-key]").first.get_attribute("data-key")
    follow(page, page.locator(f"tr[data-key='{first}'] button[name=revoke]"))
    assert "Revoked the key." in page.content() and page.locator("tr[data-key]").count() == 1
    follow(page, "button[name=delete]")
    assert asked[-1] == "Delete nightly? Its keys stop working."
    assert "Deleted the service account" in page.content()
    assert _api(base_url, secret, "GET", "/me").status_code == 401
    answer = page.goto(f"{base_url}/console/service-accounts/99999999")
    assert answer is not None and answer.status == 404


def test_admins_manage_users(page: Page, base_url: str, make_user: MakeUser) -> None:
    _, other_key = make_user(prefix="notadmin")
    asked = _accept_dialogs(page)
    with console_client(base_url, other_key) as http:
        assert http.get("/console/users").status_code == 403  # as the API says
        assert "/console/users" not in http.get("/console/databases").text
    _, admin = make_user(is_admin=True, prefix="boss")
    browser_login(page, base_url, admin)
    follow(page, "header nav a:has-text('Users')")
    new_name = f"newbie{abs(hash(admin)) % 10**6}"
    page.fill("form[action='/console/users/new'] input[name=username]", new_name)
    follow(page, "button[name=create]")
    secret = page.input_value("#new-key")
    assert _api(base_url, secret, "GET", "/me").json()["user"]["username"] == new_name
    page.fill("form[action='/console/users/new'] input[name=username]", new_name)
    follow(page, "button[name=create]")
    assert page.locator(".flash.error").count() == 1  # taken

    row = page.locator(f"tr[data-user='{new_name}']")
    row.locator("input[name=password]").fill("short")
    with page.expect_navigation():  # (past the browser's own minlength check)
        row.locator("form").first.evaluate("f => f.submit()")
    assert "invalid_password" in page.locator(".flash.error").inner_text()
    row = page.locator(f"tr[data-user='{new_name}']")
    row.locator("input[name=password]").fill("a good long one")
    follow(page, row.locator("button[name=reset]"))
    assert f"Set {new_name}'s password" in page.content()
    with httpx.Client(base_url=base_url) as http:
        assert password_login(http, new_name, "a good long one").status_code == 303

    follow(page, page.locator(f"tr[data-user='{new_name}'] button[name=delete]"))
    assert asked == [f"Delete {new_name}?"] and f"Deleted {new_name}." in page.content()
    assert _api(base_url, secret, "GET", "/me").status_code == 401
