"""Read-only is privileges, not a session default; one transaction cannot be escaped;
shared roles cannot be damaged by one of their users; timeouts end the work.

The callers: a read collaborator and a read-scoped key of the owner (both on the ``ro``
role), a write collaborator (``rw``, shared with the owner's write keys), over HTTP and
through the gateway. After each attack, the others — another reader, the owner — still
work as before and nothing was written.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from millpond.server.testing import ServerThread

from ._tenant import Tenant, make_tenant


@pytest.fixture
def tenant(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Iterator[Tenant]:
    t = make_tenant(server, make_user, prefix="ro")
    t.ok(
        "CREATE TABLE items (id int PRIMARY KEY, label text);"
        " CREATE SEQUENCE counter; INSERT INTO items VALUES (1, 'one')"
    )
    yield t


@pytest.fixture
def reader(tenant: Tenant, make_user: Callable[..., tuple[str, str]]) -> str:
    name, key = make_user(prefix="reader")
    tenant.share(name, "read")
    return key


@pytest.fixture
def writer(tenant: Tenant, make_user: Callable[..., tuple[str, str]]) -> str:
    name, key = make_user(prefix="writer")
    tenant.share(name, "write")
    return key


def _unchanged(tenant: Tenant, other_reader: str) -> None:
    """Nothing a reader did is visible: rows, large objects, sequence, role settings."""
    assert tenant.ok("SELECT id, label FROM items ORDER BY id") == [[1, "one"]]
    assert tenant.ok("SELECT id, label FROM items ORDER BY id", other_reader) == [[1, "one"]]
    with tenant.superuser() as conn:
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone() == (0,)
        assert conn.execute("SELECT last_value, is_called FROM counter").fetchone() == (1, False)
        settings = conn.execute(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE r.rolname LIKE %s",
            (tenant.pg_name + "\\_%",),
        ).fetchone()
    assert settings == (0,)
    with tenant.gateway(other_reader) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)


# what a hostile reader sends, each a way out of "read-only" in some earlier design
_READER_ATTACKS = (
    "INSERT INTO items VALUES (2, 'x')",
    "SET TRANSACTION READ WRITE; INSERT INTO items VALUES (2, 'x')",
    "SET default_transaction_read_only = off; SELECT lo_create(0)",
    "SELECT lo_from_bytea(0, 'secret')",
    "SELECT lo_creat(-1)",
    "SELECT nextval('counter')",
    "SELECT setval('counter', 42)",
    "CREATE TEMP TABLE t (a int)",
    "CREATE TABLE mine (a int)",
    "ALTER ROLE CURRENT_USER SET search_path = nowhere",
    "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
    "ALTER ROLE CURRENT_USER SET statement_timeout = 1",
    "SET ROLE NONE; ALTER ROLE SESSION_USER SET search_path = nowhere",
    "DO $$ BEGIN EXECUTE 'ALTER ROLE ' || current_user || ' SET search_path = nowhere'; END $$",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "ALTER ROLE CURRENT_USER PASSWORD 'mine'",
    "RESET ALL; SET search_path = nowhere",
)


@pytest.mark.parametrize("attack", _READER_ATTACKS)
def test_a_reader_over_http_changes_nothing(
    tenant: Tenant, reader: str, make_user: Callable[..., tuple[str, str]], attack: str
) -> None:
    other_name, other = make_user(prefix="reader2")
    tenant.share(other_name, "read")
    read_key = tenant.new_key(scope="read")
    for key in (reader, read_key):
        r = tenant.query(attack, key)
        assert r.status_code in (200, 400), r.text
    _unchanged(tenant, other)


@pytest.mark.parametrize(
    "attack",
    [a for a in _READER_ATTACKS if "TRANSACTION READ WRITE" not in a]
    + ["SET default_transaction_read_only = off", "BEGIN READ WRITE; COMMIT"],
)
def test_a_reader_through_the_gateway_changes_nothing(
    tenant: Tenant, reader: str, make_user: Callable[..., tuple[str, str]], attack: str
) -> None:
    other_name, other = make_user(prefix="reader2")
    tenant.share(other_name, "read")
    with tenant.gateway(reader) as conn:
        for statement in attack.split("; "):
            with contextlib.suppress(psycopg.Error):
                conn.execute(statement)
        # and after leaving read-only mode for its own session, still no write
        conn.execute("RESET search_path")
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO items VALUES (3, 'x')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT lo_create(0)")
    _unchanged(tenant, other)


def test_a_writer_cannot_damage_the_shared_write_role(
    tenant: Tenant, writer: str, reader: str
) -> None:
    """Writers share the ``rw`` role with each other and the owner's write keys: one
    writer's ``ALTER ROLE CURRENT_USER SET …`` must not change the others' sessions."""
    for attack in (
        "ALTER ROLE CURRENT_USER SET search_path = nowhere",
        f"ALTER ROLE CURRENT_USER IN DATABASE {tenant.pg_name} SET statement_timeout = 1",
        f"ALTER ROLE CURRENT_USER SET role = '{tenant.role('ro')}'",
    ):
        r = tenant.query(attack, writer)
        assert r.status_code == 200, r.text
        # force new sessions: what a pooled or new connection then gets
        with tenant.superuser() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (tenant.role("rw"),),
            )
        write_key = tenant.new_key(scope="write")
        for key in (writer, write_key):
            deadline = time.monotonic() + 10
            while (
                r := tenant.query("INSERT INTO items VALUES (2, 'w') ON CONFLICT DO NOTHING", key)
            ).status_code == 503:
                assert time.monotonic() < deadline, r.text
            assert r.status_code == 200, r.text
        with tenant.gateway(writer) as conn:
            assert conn.execute("SHOW search_path").fetchone() != ("nowhere",)
            assert conn.execute("SELECT current_user").fetchone() == (tenant.role("rw"),)
            conn.execute("SELECT pg_sleep(0.01)")  # statement_timeout is not 1 ms
    with tenant.superuser() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE r.rolname = %s",
            (tenant.role("rw"),),
        ).fetchone()
    assert rows == (0,)


# -- one transaction, all or nothing, storage limit applied -------------------------------------

_ESCAPES = (
    "COMMIT; INSERT INTO items SELECT g, 'x' FROM generate_series(10, 20) g",
    "commit; insert into items values (10, 'x')",
    "END; INSERT INTO items VALUES (10, 'x')",
    "ROLLBACK; INSERT INTO items VALUES (10, 'x')",
    "ABORT; INSERT INTO items VALUES (10, 'x')",
    "COMMIT AND CHAIN; INSERT INTO items VALUES (10, 'x')",
    "PREPARE TRANSACTION 'p1'; INSERT INTO items VALUES (10, 'x')",
    "SELECT 1; /* a comment */ COMMIT; INSERT INTO items VALUES (10, 'x')",
    "INSERT INTO items VALUES (10, 'x'); -- then\nCOMMIT",
    "BEGIN; INSERT INTO items VALUES (10, 'x'); COMMIT",
    "START TRANSACTION; INSERT INTO items VALUES (10, 'x')",
)


@pytest.mark.parametrize("sql", _ESCAPES)
def test_transaction_control_is_refused_before_anything_runs(tenant: Tenant, sql: str) -> None:
    r = tenant.query(sql)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "transaction_control", r.text
    assert tenant.ok("SELECT count(*) FROM items") == [[1]]


@pytest.mark.parametrize(
    "sql",
    [
        # a COMMIT the lexer cannot see at top level: Postgres refuses it, since the
        # transaction is the server's explicit one
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO items VALUES (10, 'x'); COMMIT; END $$; CALL p()",
        "DO $$ BEGIN INSERT INTO items VALUES (10, 'x'); COMMIT; END $$",
        "DO $$ BEGIN INSERT INTO items VALUES (10, 'x'); ROLLBACK; END $$",
    ],
)
def test_commit_inside_procedures_cannot_end_the_transaction(tenant: Tenant, sql: str) -> None:
    r = tenant.query(sql)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["sqlstate"] == "2D000", r.text  # invalid termination
    assert tenant.ok("SELECT count(*) FROM items") == [[1]]


def test_savepoints_and_quoted_words_still_work(tenant: Tenant) -> None:
    body = tenant.ok(
        "SAVEPOINT a; INSERT INTO items VALUES (5, 'commit'); ROLLBACK TO SAVEPOINT a;"
        " RELEASE a; SELECT 'COMMIT; END' AS \"rollback\", $$begin$$ AS b"
    )
    assert body == [["COMMIT; END", "begin"]]
    assert tenant.ok("SELECT count(*) FROM items") == [[1]]


def test_the_storage_limit_cannot_be_escaped(tenant: Tenant) -> None:
    size = tenant.ok("SELECT pg_database_size(current_database())")[0][0]
    r = tenant.http(
        "PATCH", f"/v1/databases/{tenant.database}", json={"storage_limit_bytes": size + 100_000}
    )
    assert r.status_code == 200, r.text
    big = "INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series(100, 3100) g"
    for sql in (big, f"COMMIT; {big}", f"SELECT 1; COMMIT; {big}"):
        r = tenant.query(sql)
        assert r.status_code in (400, 403), r.text
        assert r.json()["error"]["code"] in ("storage_limit_exceeded", "transaction_control")
    # the limit's own SQL cannot be faked by shadowing the size functions
    tenant.ok(
        "CREATE FUNCTION public.pg_database_size(name) RETURNS bigint LANGUAGE sql"
        " AS 'SELECT 0::bigint';"
        " CREATE FUNCTION public.current_database() RETURNS name LANGUAGE sql"
        " AS $$SELECT 'x'::name$$"
    )
    tenant.ok(f"ALTER DATABASE {tenant.pg_name} SET search_path = public, pg_catalog")
    r = tenant.query(big)
    assert r.status_code == 403 and r.json()["error"]["code"] == "storage_limit_exceeded", r.text
    assert tenant.ok("SELECT count(*) FROM items") == [[1]]


# -- timeouts end work -------------------------------------------------------------------------

_STUBBORN = (
    "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN"
    " NULL; END; END LOOP; END $$"
)


def _backends(tenant: Tenant) -> int:
    with tenant.superuser() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (tenant.pg_name,),
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_no_backend(tenant: Tenant, within: float) -> None:
    deadline = time.monotonic() + within
    while _backends(tenant):
        assert time.monotonic() < deadline, "a query outlived its call"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "sql",
    [
        _STUBBORN,
        "SET statement_timeout = 0; SELECT pg_sleep(60)",
        "SET LOCAL statement_timeout = 0; " + _STUBBORN,
    ],
)
def test_a_query_that_ignores_its_timeout_is_ended(
    tenant: Tenant, server: ServerThread, sql: str
) -> None:
    started = time.monotonic()
    r = tenant.query(sql)
    assert r.status_code == 400 and r.json()["error"]["code"] == "statement_timeout", r.text
    timeout_s = server.settings.statement_timeout_ms / 1000
    assert time.monotonic() - started < timeout_s + 10
    _wait_no_backend(tenant, within=2.0)
    assert tenant.ok("SELECT 1") == [[1]]


def test_a_gateway_client_that_goes_away_leaves_no_query_behind(tenant: Tenant) -> None:
    conn = tenant.gateway()
    conn.pgconn.send_query(_STUBBORN.encode())
    deadline = time.monotonic() + 5
    while not _backends(tenant):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    conn.pgconn.finish()  # the client vanishes mid-query
    _wait_no_backend(tenant, within=3.0)
