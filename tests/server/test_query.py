"""POST /v1/query: request shapes, results, one transaction per call, rights enforced by
Postgres privileges, faithful JSON values and type names, SQL errors, the statement
timeout (also when the SQL turns it off), truncation, session isolation between calls,
and storage limits."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

from ._helpers import (
    assert_error,
    assert_permission_denied,
    assert_write_refused,
    pg_name,
)
from .conftest import Call, Superuser

MakeUser = Callable[..., tuple[str, str]]
MakeDb = Callable[..., dict[str, Any]]


@dataclass
class Setup:
    db: dict[str, Any]
    owner: str
    reader: str
    writer: str
    owner_ro: str
    stranger: str

    @property
    def name(self) -> str:
        return str(self.db["full_name"])

    @property
    def pg(self) -> str:
        return pg_name(self.db)


@pytest.fixture(scope="module")
def s(call: Call, make_user: MakeUser, make_db: MakeDb) -> Setup:
    _, owner = make_user(prefix="qown")
    reader_name, reader = make_user(prefix="qread")
    writer_name, writer = make_user(prefix="qwrite")
    _, stranger = make_user(prefix="qstr")
    db = make_db(owner)
    for who, role in ((reader_name, "read"), (writer_name, "write")):
        r = call(
            "PUT",
            f"/v1/databases/{db['full_name']}/collaborators/{who}",
            owner,
            json={"role": role},
        )
        assert r.status_code == 200
    owner_ro = call("POST", "/v1/keys", owner, json={"scope": "read"}).json()["secret"]
    setup = Setup(db, owner, reader, writer, owner_ro, stranger)
    r = call(
        "POST",
        "/v1/query",
        owner,
        json={
            "database": setup.name,
            "sql": "CREATE TABLE items (id int PRIMARY KEY, label text);"
            " INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')",
        },
    )
    assert r.status_code == 200, r.text
    return setup


def q(call: Call, key: str | None, database: str, sql: str, **extra: Any) -> httpx.Response:
    return call("POST", "/v1/query", key, json={"database": database, "sql": sql, **extra})


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- request and result shapes ---------------------------------------------------------


def test_result_shape(call: Call, s: Setup) -> None:
    body = ok(q(call, s.owner, s.name, "SELECT id, label FROM items ORDER BY id"))
    assert set(body) == {"columns", "data", "row_count", "truncated", "command", "elapsed_ms"}
    assert body["columns"] == [{"name": "id", "type": "int4"}, {"name": "label", "type": "text"}]
    assert body["data"] == [[1, "one"], [2, "two"], [3, "three"]]
    assert body["row_count"] == 3
    assert body["truncated"] is False
    assert body["command"] == "SELECT 3"
    assert isinstance(body["elapsed_ms"], int | float) and body["elapsed_ms"] >= 0


@pytest.mark.parametrize("field", ["sql", "query_string", "query"])
def test_sql_aliases(call: Call, s: Setup, field: str) -> None:
    body = {"database": s.name, field: "SELECT 41 + 1 AS answer"}
    assert ok(call("POST", "/v1/query", s.owner, json=body))["data"] == [[42]]


def test_db_name_alias(call: Call, s: Setup) -> None:
    body = {"db_name": s.name, "query_string": "SELECT 1"}
    assert ok(call("POST", "/v1/query", s.owner, json=body))["data"] == [[1]]


def test_data_formats(call: Call, s: Setup) -> None:
    sql = "SELECT id, label FROM items WHERE id <= 2 ORDER BY id"
    objects = ok(q(call, s.owner, s.name, sql, data_format="objects"))
    assert objects["data"] == [{"id": 1, "label": "one"}, {"id": 2, "label": "two"}]
    assert objects["columns"][0] == {"name": "id", "type": "int4"}
    lists = ok(q(call, s.owner, s.name, sql, data_format="list"))
    assert lists["data"] == [[1, "one"], [2, "two"]]
    assert ok(q(call, s.owner, s.name, sql))["data"] == lists["data"]


def test_several_statements_return_the_last(call: Call, s: Setup) -> None:
    body = ok(q(call, s.owner, s.name, "SELECT 1 AS a; SELECT 'x' AS b, 'y' AS c;"))
    assert body["columns"] == [{"name": "b", "type": "text"}, {"name": "c", "type": "text"}]
    assert body["data"] == [["x", "y"]]
    body = ok(q(call, s.owner, s.name, "SELECT 1; CREATE TEMP TABLE tt (a int)"))
    assert body["columns"] == [] and body["data"] == []
    assert body["command"] == "CREATE TABLE"


def test_dml_reports_rows_affected(call: Call, s: Setup) -> None:
    ok(q(call, s.owner, s.name, "CREATE TABLE dml (a int)"))
    body = ok(q(call, s.owner, s.name, "INSERT INTO dml SELECT generate_series(1, 5)"))
    assert (body["command"], body["row_count"], body["data"]) == ("INSERT 0 5", 5, [])
    body = ok(q(call, s.owner, s.name, "UPDATE dml SET a = a * 10 WHERE a > 2"))
    assert (body["command"], body["row_count"]) == ("UPDATE 3", 3)
    body = ok(q(call, s.owner, s.name, "DELETE FROM dml WHERE a = 1"))
    assert (body["command"], body["row_count"]) == ("DELETE 1", 1)
    body = ok(q(call, s.owner, s.name, "DELETE FROM dml WHERE a = 1"))
    assert (body["command"], body["row_count"]) == ("DELETE 0", 0)
    body = ok(q(call, s.owner, s.name, "INSERT INTO dml VALUES (7), (8) RETURNING a"))
    assert body["data"] == [[7], [8]] and body["row_count"] == 2


def test_the_whole_call_is_one_transaction(call: Call, s: Setup) -> None:
    ok(q(call, s.owner, s.name, "CREATE TABLE tx (a int)"))
    r = q(call, s.owner, s.name, "INSERT INTO tx VALUES (1); INSERT INTO tx VALUES (2); SELECT 1/0")
    assert assert_error(r, 400, "sql_error")["details"]["sqlstate"] == "22012"
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM tx"))["data"] == [[0]]
    r = q(call, s.owner, s.name, "CREATE TABLE tx2 (a int); INSERT INTO tx2 VALUES ('nope')")
    assert assert_error(r, 400, "sql_error")["details"]["sqlstate"] == "22P02"
    r = q(call, s.owner, s.name, "SELECT * FROM tx2")
    assert assert_error(r, 400, "sql_error")["details"]["sqlstate"] == "42P01"


def test_an_error_at_commit_rolls_back_and_answers_its_sqlstate(call: Call, s: Setup) -> None:
    """A deferred constraint is checked when the server commits, after the caller's SQL
    ran without error: the call still fails as a whole, with Postgres' error, and the
    connection serves the next call."""
    ok(
        q(
            call,
            s.owner,
            s.name,
            "CREATE TABLE parent (id int PRIMARY KEY);"
            " CREATE TABLE child (p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)",
        )
    )
    for _ in range(3):  # the pool's few connections each take one such commit
        r = q(call, s.owner, s.name, "INSERT INTO child VALUES (1); SELECT 'ran'")
        error = assert_error(r, 400, "sql_error")
        assert error["details"]["sqlstate"] == "23503" and "child" in error["message"]
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM child"))["data"] == [[0]]
    ok(q(call, s.owner, s.name, "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1)"))
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM child"))["data"] == [[1]]


# -- rights, enforced by Postgres ---------------------------------------------------------


@pytest.mark.parametrize("who", ["reader", "owner_ro"])
def test_readers_read_but_cannot_write(call: Call, s: Setup, who: str) -> None:
    key = getattr(s, who)
    assert ok(q(call, key, s.name, "SELECT count(*) FROM items"))["data"] == [[3]]
    for sql in (
        "INSERT INTO items VALUES (99, 'x')",
        "UPDATE items SET label = 'y'",
        "DELETE FROM items",
        "CREATE TABLE mine (a int)",
        "DROP TABLE items",
    ):
        assert_write_refused(q(call, key, s.name, sql))
    # the read-only transaction is a convenience; the privileges are the wall
    for sql in (
        "SET TRANSACTION READ WRITE; INSERT INTO items VALUES (99, 'x')",
        "SET TRANSACTION READ WRITE; CREATE TABLE mine (a int)",
        "SET default_transaction_read_only = off; SELECT lo_create(0)",
        f"SET ROLE {s.pg}_rw",
        f"SET ROLE {s.pg}_owner",
    ):
        assert_permission_denied(q(call, key, s.name, sql))
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM items"))["data"] == [[3]]


def test_writers_write_and_create_tables(call: Call, s: Setup) -> None:
    w = s.writer
    ok(q(call, w, s.name, "INSERT INTO items VALUES (10, 'ten')"))
    ok(
        q(
            call,
            w,
            s.name,
            "CREATE TABLE by_writer (a serial, b text); INSERT INTO by_writer (b) VALUES ('w')",
        )
    )
    # tables anyone with write access creates are readable by readers, writable by writers
    assert ok(q(call, s.reader, s.name, "SELECT a, b FROM by_writer"))["data"] == [[1, "w"]]
    ok(q(call, s.owner, s.name, "INSERT INTO by_writer (b) VALUES ('o')"))
    ok(q(call, s.owner, s.name, "CREATE TABLE by_owner (a int)"))
    ok(q(call, w, s.name, "INSERT INTO by_owner VALUES (1)"))
    assert ok(q(call, s.reader, s.name, "SELECT * FROM by_owner"))["data"] == [[1]]
    # but a writer cannot take the owner's role or drop the owner's tables
    assert_permission_denied(q(call, w, s.name, f"SET ROLE {s.pg}_owner"))
    assert_permission_denied(q(call, w, s.name, "DROP TABLE by_owner"))
    ok(q(call, w, s.name, "DELETE FROM items WHERE id = 10"))


def test_strangers_and_anonymous(call: Call, s: Setup) -> None:
    assert_error(q(call, s.stranger, s.name, "SELECT 1"), 404, "database_not_found")
    assert_error(q(call, None, s.name, "SELECT 1"), 401, "unauthorized")


# -- values -----------------------------------------------------------------------------

_VALUES_SQL = """
SELECT 9007199254740993::int8 AS big,
       12345678901234567890.000000001::numeric AS num,
       'NaN'::float8 AS nan, 'Infinity'::float8 AS inf, '-Infinity'::float8 AS ninf,
       1.5::float8 AS f8, 0.25::float4 AS f4,
       '2024-01-02 03:04:05.123456+02'::timestamptz AS tstz,
       '2024-01-02 03:04:05'::timestamp AS ts,
       '2024-02-29'::date AS d,
       '1 day 2 hours 3 minutes'::interval AS iv,
       '\\xdeadbeef'::bytea AS b,
       '{"a": [1, 2.5, null], "b": {"c": "d"}}'::json AS j,
       '{"z": 1, "a": true}'::jsonb AS jb,
       '{1,2,NULL}'::int[] AS ints,
       ARRAY['a', 'b c', NULL, '"q"'] AS texts,
       NULL::int AS nothing,
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,
       true AS yes,
       32767::int2 AS small,
       'é ü 😀'::text AS unicode
"""


def test_faithful_values_and_type_names(call: Call, s: Setup) -> None:
    r = q(call, s.owner, s.name, _VALUES_SQL, data_format="objects")
    body = ok(r)
    row = body["data"][0]
    assert row["big"] == 9007199254740993 and "9007199254740993" in r.text
    assert row["num"] == "12345678901234567890.000000001"
    assert (row["nan"], row["inf"], row["ninf"]) == ("NaN", "Infinity", "-Infinity")
    assert row["f8"] == 1.5 and row["f4"] == 0.25
    assert row["tstz"] == "2024-01-02T01:04:05.123456+00:00"
    assert row["ts"] == "2024-01-02T03:04:05"
    assert row["d"] == "2024-02-29"
    assert row["iv"] == "P1DT2H3M"
    assert base64.b64decode(row["b"]) == bytes.fromhex("deadbeef")
    assert row["j"] == {"a": [1, 2.5, None], "b": {"c": "d"}}
    assert row["jb"] == {"a": True, "z": 1}
    assert row["ints"] == [1, 2, None]
    assert row["texts"] == ["a", "b c", None, '"q"']
    assert row["nothing"] is None
    assert row["id"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert row["yes"] is True and row["small"] == 32767
    assert row["unicode"] == "é ü 😀"
    types = {c["name"]: c["type"] for c in body["columns"]}
    assert types == {
        "big": "int8",
        "num": "numeric",
        "nan": "float8",
        "inf": "float8",
        "ninf": "float8",
        "f8": "float8",
        "f4": "float4",
        "tstz": "timestamptz",
        "ts": "timestamp",
        "d": "date",
        "iv": "interval",
        "b": "bytea",
        "j": "json",
        "jb": "jsonb",
        "ints": "int4[]",
        "texts": "text[]",
        "nothing": "int4",
        "id": "uuid",
        "yes": "bool",
        "small": "int2",
        "unicode": "text",
    }


def test_values_round_trip_through_a_table(call: Call, s: Setup) -> None:
    ok(
        q(
            call,
            s.owner,
            s.name,
            "CREATE TABLE vals (n numeric, t timestamptz, a int8[]);"
            " INSERT INTO vals VALUES (0.1, '1999-12-31 23:59:59.999999+00',"
            " ARRAY[9223372036854775807, -9223372036854775808])",
        )
    )
    row = ok(q(call, s.owner, s.name, "SELECT n, t, a FROM vals"))["data"][0]
    assert row == [
        "0.1",
        "1999-12-31T23:59:59.999999+00:00",
        [9223372036854775807, -9223372036854775808],
    ]


def test_user_types_show_their_names(call: Call, s: Setup) -> None:
    ok(q(call, s.owner, s.name, "CREATE TYPE mood AS ENUM ('happy', 'sad')"))
    body = ok(
        q(
            call,
            s.owner,
            s.name,
            "SELECT 'happy'::mood AS m, ARRAY['sad', 'happy']::mood[] AS ms,"
            " ROW(1, 'a')::record IS NOT NULL AS r",
        )
    )
    assert [c["type"] for c in body["columns"]] == ["mood", "mood[]", "bool"]
    assert body["data"] == [["happy", ["sad", "happy"], True]]


def test_empty_and_comment_only_sql(call: Call, s: Setup) -> None:
    for sql in ("   ", "-- nothing", ";"):
        body = ok(q(call, s.owner, s.name, sql))
        assert body["columns"] == [] and body["data"] == [] and body["row_count"] == 0


# -- SQL errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "sqlstate", "position"),
    [
        ("SELEC 1", "42601", 1),
        ("SELECT * FROM no_such_table", "42P01", 15),
        ("SELECT 1; SELECT nope FROM items", "42703", 18),
        ("SELECT 1/0", "22012", None),
        ("INSERT INTO items VALUES (1, 'dup')", "23505", None),
    ],
)
def test_sql_errors(call: Call, s: Setup, sql: str, sqlstate: str, position: int | None) -> None:
    err = assert_error(q(call, s.owner, s.name, sql), 400, "sql_error")
    assert err["details"]["sqlstate"] == sqlstate
    assert err["details"]["position"] == position
    assert {"sqlstate", "position"} <= set(err["details"])


def test_sql_error_details(call: Call, s: Setup) -> None:
    err = assert_error(
        q(call, s.owner, s.name, "INSERT INTO items VALUES (1, 'dup')"), 400, "sql_error"
    )
    assert "duplicate key" in err["message"]
    assert "(id)=(1)" in err["details"]["detail"]


def test_sql_errors_do_not_name_the_servers_installation(call: Call, s: Setup) -> None:
    """Postgres names an extension's control file by its full path: where the server's
    Postgres is installed stays the server's."""
    from millpond.server.postgres.embedded import bin_dir

    err = assert_error(
        q(call, s.owner, s.name, "CREATE EXTENSION no_such_extension"), 400, "sql_error"
    )
    text = json.dumps(err)
    assert "no_such_extension.control" in text  # the message is still Postgres'
    assert str(bin_dir().parent) not in text and "pginstall" not in text


# -- limits: time, rows -------------------------------------------------------------------


def test_statement_timeout(call: Call, s: Setup) -> None:
    started = time.monotonic()
    err = assert_error(q(call, s.owner, s.name, "SELECT pg_sleep(5)"), 400, "statement_timeout")
    assert time.monotonic() - started < 4.5
    assert "timeout" in err["message"]
    assert ok(q(call, s.owner, s.name, "SELECT 1"))["data"] == [[1]]


def test_turning_the_timeout_off_does_not_escape_it(call: Call, s: Setup) -> None:
    started = time.monotonic()
    r = q(call, s.writer, s.name, "SET statement_timeout = 0; SELECT pg_sleep(10)")
    took = time.monotonic() - started
    assert_error(r, 400, "statement_timeout")
    assert took < 9.5, took
    # the killed session is gone: the next calls work and have the timeout again
    assert ok(q(call, s.writer, s.name, "SHOW statement_timeout"))["data"] == [["2s"]]


def test_truncation(call: Call, s: Setup) -> None:
    body = ok(q(call, s.owner, s.name, "SELECT g FROM generate_series(1, 1500) g"))
    assert len(body["data"]) == 1000
    assert body["data"][0] == [1] and body["data"][-1] == [1000]
    assert body["truncated"] is True
    assert body["row_count"] == 1500
    body = ok(q(call, s.owner, s.name, "SELECT g FROM generate_series(1, 1000) g"))
    assert len(body["data"]) == 1000 and body["truncated"] is False and body["row_count"] == 1000
    objects = ok(
        q(call, s.owner, s.name, "SELECT g FROM generate_series(1, 1001) g", data_format="objects")
    )
    assert len(objects["data"]) == 1000 and objects["truncated"] is True


# -- session isolation --------------------------------------------------------------------


def test_session_state_does_not_leak(call: Call, s: Setup) -> None:
    default = ok(q(call, s.owner, s.name, "SHOW search_path"))["data"]
    assert default == [['"$user", public']]
    for _ in range(3):
        ok(q(call, s.owner, s.name, "SET search_path TO pg_catalog"))
        ok(q(call, s.owner, s.name, f"SET ROLE {s.pg}_ro"))
        ok(q(call, s.owner, s.name, "SET application_name = 'leaky'; SET TimeZone = 'Asia/Tokyo'"))
        ok(q(call, s.owner, s.name, "CREATE TEMP TABLE leak (a int); PREPARE leak_p AS SELECT 1"))
        assert ok(q(call, s.owner, s.name, "SHOW search_path"))["data"] == default
        assert ok(q(call, s.owner, s.name, "SELECT current_user"))["data"] == [[f"{s.pg}_owner"]]
        assert ok(q(call, s.owner, s.name, "SHOW TimeZone"))["data"] == [["UTC"]]
        assert_error(q(call, s.owner, s.name, "SELECT * FROM leak"), 400, "sql_error")
        assert_error(q(call, s.owner, s.name, "EXECUTE leak_p"), 400, "sql_error")


def test_an_open_transaction_is_not_left_behind(call: Call, s: Setup) -> None:
    ok(q(call, s.owner, s.name, "CREATE TABLE open_tx (a int)"))
    r = q(call, s.owner, s.name, "BEGIN; INSERT INTO open_tx VALUES (1)")
    assert assert_error(r, 400, "transaction_control")["details"]["statement"] == "BEGIN"
    ok(q(call, s.owner, s.name, "SAVEPOINT a; INSERT INTO open_tx VALUES (1); ROLLBACK TO a"))
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM open_tx"))["data"] == [[0]]
    # and the row lock it took is gone with it
    assert ok(q(call, s.writer, s.name, "INSERT INTO open_tx VALUES (2)"))["row_count"] == 1


def test_advisory_locks_are_released(call: Call, s: Setup) -> None:
    ok(q(call, s.owner, s.name, "SELECT pg_advisory_lock(424242)"))
    deadline = time.monotonic() + 5
    sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242"
    while ok(q(call, s.writer, s.name, sql))["data"] != [[0]]:
        assert time.monotonic() < deadline, "a session advisory lock outlived its call"
        time.sleep(0.05)


def _state_sql(with_sequence: bool) -> str:
    """What a session could carry from one caller to the next, with its backend's pid."""
    sequence = ", has_currval('leak_seq')" if with_sequence else ""
    return (
        "SELECT pg_backend_pid(), current_user, current_setting('search_path'),"
        " current_setting('TimeZone'), current_setting('statement_timeout'),"
        " current_setting('default_transaction_read_only'),"
        " coalesce(current_setting('myapp.tenant', true), ''),"
        " coalesce(current_setting('myapp.other', true), ''),"
        " (SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_cursors),"
        " (SELECT count(*) FROM pg_listening_channels()),"
        " (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()),"
        " (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
        "   AND locktype = 'advisory')" + sequence
    )


def _state_on(call: Call, key: str, database: str, pid: int, with_sequence: bool) -> list[Any]:
    """The state of the session of backend ``pid``, read by the next call it serves."""
    for _ in range(50):  # the pool hands its idle sessions out in turn
        row = ok(q(call, key, database, _state_sql(with_sequence)))["data"][0]
        if row[0] == pid:
            return list(row[1:])
    raise AssertionError(f"no call was served by backend {pid} again")


_LEAKS = [
    "SET search_path TO pg_catalog",
    "SET ROLE {pg}_ro",
    "SET TimeZone = 'Asia/Tokyo'; SET statement_timeout = 1234; SET myapp.tenant = 'leaky'",
    "SELECT set_config('myapp.other', 'x', false)",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "PREPARE leak_p AS SELECT 1",
    "DECLARE leak_c CURSOR WITH HOLD FOR SELECT 1",
    "LISTEN leak_channel",
    "CREATE TEMP TABLE leak_t (a int)",
    "SELECT pg_advisory_lock(4242)",
    "SELECT nextval('leak_seq')",
]


@pytest.fixture(scope="module")
def leak_db(call: Call, s: Setup) -> Setup:
    ok(
        q(
            call,
            s.owner,
            s.name,
            "CREATE SEQUENCE leak_seq; CREATE FUNCTION has_currval(regclass) RETURNS bool"
            " LANGUAGE plpgsql AS $$ BEGIN PERFORM currval($1); RETURN true; EXCEPTION"
            " WHEN object_not_in_prerequisite_state THEN RETURN false; END $$",
        )
    )
    return s


@pytest.mark.parametrize("leak", _LEAKS)
def test_no_session_state_reaches_the_next_caller(call: Call, leak_db: Setup, leak: str) -> None:
    """Whatever a call leaves in its session (settings, its role, prepared statements,
    held cursors, listens, temporary tables, session advisory locks, sequence state) is
    gone for the next call that session serves."""
    s = leak_db
    clean = ok(q(call, s.owner, s.name, _state_sql(True)))["data"][0][1:]
    assert clean[7:] == [0, 0, 0, 0, 0, False]
    sql = leak.format(pg=s.pg) + "; SELECT pg_backend_pid()"
    pid = ok(q(call, s.owner, s.name, sql))["data"][0][0]
    assert _state_on(call, s.owner, s.name, pid, True) == clean


@pytest.mark.parametrize("who", ["reader", "writer"])
def test_a_failed_call_leaves_nothing_either(call: Call, leak_db: Setup, who: str) -> None:
    """State that outlives a rollback (prepared statements, session advisory locks) is
    reset after a call that failed, and after a reader's call (which always rolls back)."""
    s = leak_db
    key = getattr(s, who)
    clean = ok(q(call, key, s.name, _state_sql(False)))["data"][0][1:]
    sql = (
        "PREPARE leak_e AS SELECT 1; SELECT pg_advisory_lock(4243);"
        " DO $$ BEGIN RAISE EXCEPTION 'pid=%', pg_backend_pid(); END $$"
    )
    message = assert_error(q(call, key, s.name, sql), 400, "sql_error")["message"]
    pid = int(message.removeprefix("pid="))
    assert _state_on(call, key, s.name, pid, False) == clean
    if who == "reader":
        sql = "PREPARE leak_r AS SELECT 1; SELECT pg_advisory_lock(4244), pg_backend_pid()"
        pid = ok(q(call, key, s.name, sql))["data"][0][1]
        assert _state_on(call, key, s.name, pid, False) == clean


def test_a_session_whose_reset_fails_is_closed_and_the_call_kept(
    call: Call, s: Setup, superuser: Superuser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reset runs in the round trip of the COMMIT: when it fails, the call has
    committed (and answers so), and its session serves nobody else."""
    from millpond.server.query import stream

    ok(q(call, s.owner, s.name, "CREATE TABLE kept (a int)"))
    monkeypatch.setattr(stream, "RESET_SESSION", b"SELECT 1/0")
    r = q(call, s.writer, s.name, "INSERT INTO kept VALUES (1); SELECT pg_backend_pid()")
    pid = ok(r)["data"][0][0]
    monkeypatch.undo()
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM kept"))["data"] == [[1]]
    deadline = time.monotonic() + 10
    with superuser() as conn:
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the session that was not reset lives on"
            time.sleep(0.02)
    for _ in range(5):  # and the pool serves on with new sessions
        assert ok(q(call, s.writer, s.name, "SELECT pg_backend_pid()"))["data"][0][0] != pid


# -- storage limit ------------------------------------------------------------------------


def test_storage_limit(call: Call, s: Setup, make_db: MakeDb) -> None:
    db = make_db(s.owner)
    name = db["full_name"]
    ok(q(call, s.owner, name, "CREATE TABLE big (t text); INSERT INTO big VALUES ('seed')"))
    size = call("GET", f"/v1/databases/{name}", s.owner).json()["size_bytes"]
    limit = size + 256 * 1024
    r = call("PATCH", f"/v1/databases/{name}", s.owner, json={"storage_limit_bytes": limit})
    assert r.status_code == 200
    # small writes within the limit go through
    ok(q(call, s.owner, name, "INSERT INTO big VALUES ('small')"))
    r = q(
        call,
        s.owner,
        name,
        "INSERT INTO big SELECT repeat(md5(g::text), 30) FROM generate_series(1, 8000) g",
    )
    err = assert_error(r, 403, "storage_limit_exceeded")
    assert err["details"]["storage_limit_bytes"] == limit
    assert err["details"]["size_bytes"] > limit
    assert ok(q(call, s.owner, name, "SELECT count(*) FROM big"))["data"] == [[2]]
    # the same in a multi-statement call: all of it rolls back
    assert_error(
        q(
            call,
            s.owner,
            name,
            "INSERT INTO big VALUES ('a'); INSERT INTO big SELECT repeat(md5(g::text), 30)"
            " FROM generate_series(1, 8000) g",
        ),
        403,
        "storage_limit_exceeded",
    )
    assert ok(q(call, s.owner, name, "SELECT count(*) FROM big"))["data"] == [[2]]
    # a rolled-back insert still grew the files: the database is over its limit now,
    # and deleting (which frees space) is still allowed, as is reading
    assert call("GET", f"/v1/databases/{name}", s.owner).json()["size_bytes"] > limit
    body = ok(q(call, s.owner, name, "DELETE FROM big WHERE t = 'small'"))
    assert body["row_count"] == 1
    assert ok(q(call, s.owner, name, "SELECT t FROM big"))["data"] == [["seed"]]
    # clearing the limit lets the big insert through
    call("PATCH", f"/v1/databases/{name}", s.owner, json={"clear_storage_limit": True})
    body = ok(
        q(
            call,
            s.owner,
            name,
            "INSERT INTO big SELECT repeat(md5(g::text), 30) FROM generate_series(1, 8000) g",
        )
    )
    assert body["row_count"] == 8000


# -- bad requests -------------------------------------------------------------------------


def test_unknown_or_malformed_database(call: Call, s: Setup) -> None:
    owner = s.name.split("/")[0]
    for database in (f"{owner}/no-such-db", "nobody-at-all/db", f"{owner}/-bad"):
        assert_error(q(call, s.owner, database, "SELECT 1"), 404, "database_not_found")
    for database in ("no-slash", "a/b/c", "/x", "x/", ""):
        assert_error(q(call, s.owner, database, "SELECT 1"), 422, "invalid_name")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sql": "SELECT 1"},
        {"database": "{db}"},
        {"database": "{db}", "sql": ""},
        {"database": "{db}", "sql": None},
        {"database": "{db}", "sql": 1},
        {"database": "{db}", "sql": "SELECT 1", "data_format": "rows"},
        {"database": "{db}", "sql": "SELECT 1", "params": [1]},
    ],
)
def test_bad_bodies_are_422(call: Call, s: Setup, body: dict[str, Any]) -> None:
    body = {k: (s.name if v == "{db}" else v) for k, v in body.items()}
    assert_error(call("POST", "/v1/query", s.owner, json=body), 422, "validation_error")


def test_copy(call: Call, s: Setup) -> None:
    body = ok(q(call, s.owner, s.name, "COPY (SELECT 1) TO STDOUT"))
    assert body["command"] == "COPY 1" and body["data"] == []
    ok(q(call, s.owner, s.name, "CREATE TABLE copied (a int)"))
    r = q(call, s.owner, s.name, "INSERT INTO copied VALUES (1); COPY copied FROM STDIN")
    assert_error(r, 400, "copy_not_supported")
    assert ok(q(call, s.owner, s.name, "SELECT count(*) FROM copied"))["data"] == [[0]]


# -- once-known bugs, pinned ---------------------------------------------------------------


def test_returning_reports_its_command(call: Call, s: Setup) -> None:
    ok(q(call, s.owner, s.name, "CREATE TABLE ret (a int)"))
    body = ok(q(call, s.owner, s.name, "INSERT INTO ret VALUES (7), (8) RETURNING a"))
    assert body["data"] == [[7], [8]] and body["row_count"] == 2
    assert body["command"] == "INSERT 0 2"


def test_nul_in_sql_is_refused(call: Call, s: Setup) -> None:
    r = q(call, s.owner, s.name, "SELECT 1\x00; SELECT 2")
    assert r.status_code in (400, 422), r.text


def test_a_changed_role_password_heals(
    call: Call, make_user: MakeUser, make_db: MakeDb, superuser: Superuser, server: ServerThread
) -> None:
    """Any role may ``ALTER ROLE current_user PASSWORD``, and SQL runs as the database's
    roles. When that happens the server restores the derived password on its next
    login, so nobody is locked out and the chosen password stops working."""
    _, owner = make_user()
    reader_name, reader = make_user()
    db = make_db(owner)
    call(
        "PUT",
        f"/v1/databases/{db['full_name']}/collaborators/{reader_name}",
        owner,
        json={"role": "write"},
    )
    sql = "ALTER ROLE current_user PASSWORD 'chosen-by-a-reader'"
    assert q(call, reader, db["full_name"], sql).status_code == 200
    ro_role = pg_name(db) + "_rw"
    with superuser() as conn:  # force the pool to log in again
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (ro_role,),
        )
    statuses = []
    for _ in range(3):  # the first call may meet the killed connection: 503, retryable
        r = q(call, reader, db["full_name"], "SELECT 1 AS one")
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
    chosen = EmbeddedPostgres(server.settings.data_dir).url(pg_name(db))
    chosen = chosen.replace(
        chosen.split("//", 1)[1].split("@", 1)[0], f"{ro_role}:chosen-by-a-reader"
    )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(chosen).close()
