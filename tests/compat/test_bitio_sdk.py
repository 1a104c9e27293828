"""The original ``bitdotio`` 2.2.1 package (unmodified) against millpond, every example of
its documentation (the seed) and every method of its API reference.

Here the package reaches the server by the least invasive means: its HTTP session gets a
transport adapter that sends ``https://api.bit.io/…`` to the test server, and the SDK
object's database host and port are the gateway's. ``test_bitio_e2e.py`` runs it with
nothing changed at all (the hard-coded hosts resolve to millpond, over TLS).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.pool
import pytest
import requests
from bitdotio import bitdotio
from bitdotio._bitdotio import ApiError
from requests.adapters import HTTPAdapter

from millpond.server.accounts.service import bitio_spelling
from millpond.server.testing import ServerThread

MakeUser = Callable[..., tuple[str, str]]
API_HOST = "https://api.bit.io"


class _ToServer(HTTPAdapter):
    """Sends the package's requests for ``https://api.bit.io`` to ``base``."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        assert request.url is not None and request.url.startswith(API_HOST)
        request.url = self.base + request.url[len(API_HOST) :]
        return super().send(request, **kwargs)


def pointed(key: str, server: ServerThread, **kwargs: Any) -> Any:
    """The package's SDK object, pointed at the test server and its gateway."""
    b = bitdotio(key, **kwargs)
    b._api_client._session.mount(API_HOST + "/", _ToServer(server.url))
    b._host, b._port = "127.0.0.1", server.settings.gateway_port
    return b


@pytest.fixture
def account(make_user: MakeUser) -> tuple[str, str]:
    """(username, key in bit.io's spelling) of a fresh user."""
    name, key = make_user(prefix="bitsdk")
    return name, bitio_spelling(key)


@pytest.fixture
def b(account: tuple[str, str], server: ServerThread) -> Iterator[Any]:
    sdk = pointed(account[1], server)
    yield sdk
    for pool in sdk._pools.values():
        pool.closeall()


def wait_job(get: Callable[[str], dict[str, Any]], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = get(job_id)
        if job["state"] in ("DONE", "FAILED") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_the_example_usage(
    b: Any, account: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's "Example usage", as written (its ``my-username`` is the caller's name)."""
    username = account[0]
    db_metadata = b.create_database("my-db", is_private=False)
    db_name = db_metadata["name"]
    assert db_name == f"{username}/my-db"

    with b.pooled_cursor(db_name) as cur:
        cur.execute("CREATE TABLE person (name text, age integer);")
        people = [("Alice", 45), ("Bob", 84), ("Catherine", 19), ("Davis", 22), ("Emily", 34)]
        for name, age in people:
            cur.execute("INSERT INTO person (name, age) VALUES (%s, %s)", (name, age))

    result = b.query(db_name, "SELECT * FROM person", data_format="objects")
    assert result["data"] == [{"name": n, "age": a} for n, a in people]

    (tmp_path / "city.csv").write_text("name,country\nParis,FR\nOslo,NO\n")
    monkeypatch.chdir(tmp_path)
    with open("city.csv", "rb") as f:
        job_status = b.create_import_job(f"{username}/my-db", "city", file=f)
        while True:
            job_status = b.get_import_job(job_status["id"])
            if job_status["state"] == "DONE":
                break
            if job_status["state"] == "FAILED":
                raise AssertionError(
                    f"Import failed. error_id={job_status['error_id']}"
                    f" error_type={job_status['error_type']},"
                    f" error_details={job_status['error_details']}"
                )
            time.sleep(0.2)
    rows = b.query(db_name, "SELECT name, country FROM city ORDER BY name")["data"]
    assert rows == [["Oslo", "NO"], ["Paris", "FR"]]


def test_connections(b: Any, account: tuple[str, str]) -> None:
    """``pooled_connection``, ``pooled_cursor`` and ``get_connection`` through the gateway."""
    db = b.create_database("conns")["name"]
    with b.pooled_connection(db) as conn, conn.cursor() as cur:  # commits on leaving
        cur.execute("CREATE TABLE t (x int)")
        cur.execute("INSERT INTO t VALUES (1), (2)")
    with b.pooled_connection(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(x) FROM t")
        assert cur.fetchone() == (3,)
    assert len(b._pools) == 1  # one pool per database, reused
    conn = b.get_connection(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET application_name = 'mine'")
            cur.execute("SHOW application_name")
            assert cur.fetchone() == ("mine",)
            cur.execute("SELECT current_database() <> %s", (db,))
            assert cur.fetchone() == (True,)  # a millpond database under the hood
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="does not exist"):
        b.get_connection(f"{account[0]}/missing")


def test_pool_sizes(account: tuple[str, str], server: ServerThread) -> None:
    """``bitdotio(key, min_conn, max_conn)``: the pool opens ``min_conn`` connections
    through the gateway at once and never more than ``max_conn``."""
    b = pointed(account[1], server, min_conn=1, max_conn=2)
    db = b.create_database("sizes")["name"]
    try:
        with b.pooled_cursor(db) as cur:
            cur.execute("SELECT 1")
            pool = b._pools[db]
            with b.pooled_cursor(db) as other:
                other.execute("SELECT 2")
                assert other.fetchone() == (2,)
                with pytest.raises(psycopg2.pool.PoolError, match="exhausted"), pool.getconn():
                    pass
        assert len(pool._pool) == 1 and not pool._pool[0].closed  # min_conn stay open
    finally:
        for made in b._pools.values():
            made.closeall()
    with pytest.raises(ValueError, match="strictly less"):
        bitdotio(account[1], min_conn=2, max_conn=2)


def test_databases(b: Any, account: tuple[str, str]) -> None:
    username = account[0]
    made = b.create_database("meta", storage_limit_bytes=10**9)
    assert made["is_private"] is True and made["storage_limit_bytes"] == 10**9
    assert [d["name"] for d in b.list_databases()] == [f"{username}/meta"]
    assert b.get_database(f"{username}/meta")["storage_usage_bytes"] > 0
    updated = b.update_database(f"{username}/meta", name="meta2", is_private=False)
    assert updated["name"] == f"{username}/meta2" and updated["is_private"] is False
    assert b.delete_database(f"{username}/meta2") == {
        "name": f"{username}/meta2",
        "deleted": True,
    }
    assert b.list_databases() == []
    with pytest.raises(ApiError) as err:
        b.get_database(f"{username}/meta2")
    assert err.value.status_code == 404
    assert err.value.data["error"]["code"] == "database_not_found"
    with pytest.raises(ApiError) as err:
        b.create_database("bad name")
    assert err.value.status_code == 422


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """The outside world: a web server with a CSV file."""
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "prices.csv").write_text("item,price\napple,1.5\npear,2\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path / "web"), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_imports_and_exports(
    b: Any,
    server: ServerThread,
    file_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    db = b.create_database("xfer")["name"]
    monkeypatch.setattr(server.settings, "transfer_allow_private_urls", True)
    job = b.create_import_job(
        db, "prices", file_url=f"{file_server}/prices.csv", infer_header="first_row"
    )
    assert job["state"] in ("RECEIVED", "PROCESSING", "DONE")
    assert (
        requests.get(
            job["status_url"].replace(API_HOST, server.url),
            headers={"Authorization": f"Bearer {b._access_token}"},
            timeout=30,
        ).json()["id"]
        == job["id"]
    )
    assert wait_job(b.get_import_job, job["id"])["state"] == "DONE"
    raw = tmp_path / "raw.csv"
    raw.write_text("1,one\n2,two\n")
    with raw.open("rb") as f:
        job = b.create_import_job(db, "raw", schema_name="public", infer_header="no_header", file=f)
    assert wait_job(b.get_import_job, job["id"])["state"] == "DONE"
    assert b.query(db, "SELECT count(*) FROM raw")["data"] == [[2]]
    with raw.open("rb") as f:  # into a table that is there already: reported, not raised
        job = b.create_import_job(db, "raw", file=f)
    failed = wait_job(b.get_import_job, job["id"])
    assert failed["state"] == "FAILED" and failed["error_type"] and failed["error_id"]
    with pytest.raises(ValueError, match="XOR"):
        b.create_import_job(db, "x")

    export = b.create_export_job(db, table_name="prices")
    done = wait_job(b.get_export_job, export["id"])
    assert done["state"] == "DONE" and done["download_url"]
    text = requests.get(done["download_url"], timeout=30).text
    assert text.splitlines()[0] == "item,price" and "apple,1.5" in text
    export = b.create_export_job(
        db, query_string="SELECT item FROM prices", file_name="items", export_format="json"
    )
    done = wait_job(b.get_export_job, export["id"])
    assert done["file_name"] == "items.json"
    items = requests.get(done["download_url"], timeout=30).json()
    assert sorted(row["item"] for row in items) == ["apple", "pear"]
    with pytest.raises(ApiError) as err:
        b.get_export_job("exp_missing")
    assert err.value.status_code == 404


def test_keys_and_service_accounts(
    account: tuple[str, str], server: ServerThread, make_user: MakeUser
) -> None:
    name, key = make_user(prefix="bitkeys")
    made = requests.post(
        f"{server.url}/v1/service-accounts",
        json={"name": "loader"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    b = pointed(bitio_spelling(key), server)
    accounts = b.list_service_accounts()
    assert [a["name"] for a in accounts] == ["loader"]
    sa_id = accounts[0]["id"]
    assert b.get_service_account(sa_id)["name"] == "loader"
    creds = b.create_service_account_key(sa_id)
    robot = pointed(creds["api_key"], server)  # the package accepts the key's spelling
    assert robot.create_database("robot")["name"] == f"{name}/robot"
    assert b.revoke_service_account_keys(sa_id) == {"revoked": 1}
    with pytest.raises(ApiError) as err:
        robot.list_databases()
    assert err.value.status_code == 401

    extra = b.create_key()
    other = pointed(extra["api_key"], server)
    assert [d["name"] for d in other.list_databases()] == [f"{name}/robot"]
    with other.pooled_cursor(f"{name}/robot") as cur:  # the key is the database password
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert b.revoke_keys(api_key=extra["api_key"]) == {"revoked": 1}
    with pytest.raises(ApiError):
        other.list_databases()
    assert pointed(b.create_key()["api_key"], server).revoke_keys() == {"revoked": 2}
    with pytest.raises(ApiError) as err:
        b.list_databases()
    assert err.value.status_code == 401


def test_the_key_check_of_the_package(server: ServerThread, make_user: MakeUser) -> None:
    """The package refuses millpond's own spelling before sending anything; bit.io's
    spelling of the same key works."""
    _, key = make_user(prefix="bitcheck")
    with pytest.raises(ValueError, match="Invalid access token"):
        bitdotio(key)
    assert pointed(bitio_spelling(key), server).list_databases() == []


def test_a_revoked_key_ends_its_gateway_sessions(b: Any, server: ServerThread) -> None:
    """A session opened with a key in bit.io's spelling is that key's: revoking it (in
    either spelling) closes the session, as the gateway does for any key."""
    db = b.create_database("revoked")["name"]
    extra = b.create_key()
    other = pointed(extra["api_key"], server)
    conn = other.get_connection(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        b.revoke_keys(api_key="mp_" + extra["api_key"][3:])  # millpond's spelling of it
        deadline = time.monotonic() + 30
        # the gateway's FATAL "API key revoked", or the end of the connection right after it
        with pytest.raises(psycopg2.OperationalError, match=r"revoked|closed unexpectedly"):
            while time.monotonic() < deadline:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                time.sleep(0.05)
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="revoked"):
        other.get_connection(db)
