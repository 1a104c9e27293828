"""``millpond query``: SQL from -q, a file or stdin; JSON or a table; SQL errors on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Cli, MakeUser, unique


@pytest.fixture
def db(user_cli: tuple[str, Cli]) -> tuple[str, Cli]:
    """A database with a table ``t`` of three rows, and the CLI of its owner."""
    _, cli = user_cli
    name = cli.json("db", "create", unique("q"))["full_name"]
    cli.ok(
        "query",
        "-d",
        name,
        "-q",
        "CREATE TABLE t (id int8, name text, price numeric);"
        "INSERT INTO t VALUES (1, 'apple', 1.50), (2, NULL, 10), (3, 'pear', 0.25)",
    )
    return name, cli


def test_query_json(db: tuple[str, Cli]) -> None:
    name, cli = db
    result = cli.json("query", "-d", name, "-q", "SELECT id, name FROM t ORDER BY id")
    assert result["columns"] == [{"name": "id", "type": "int8"}, {"name": "name", "type": "text"}]
    assert result["data"] == [[1, "apple"], [2, None], [3, "pear"]]
    assert result["row_count"] == 3
    assert result["truncated"] is False
    assert result["command"] == "SELECT 3"
    assert isinstance(result["elapsed_ms"], float)


def test_query_objects(db: tuple[str, Cli]) -> None:
    name, cli = db
    result = cli.json(
        "query", "-d", name, "--objects", "-q", "SELECT id, price FROM t WHERE id = 1"
    )
    assert result["data"] == [{"id": 1, "price": "1.50"}]


def test_query_from_file_and_stdin(db: tuple[str, Cli], tmp_path: Path) -> None:
    name, cli = db
    sql_file = tmp_path / "count.sql"
    sql_file.write_text("-- how many\nSELECT count(*) AS n\nFROM t;\n")
    assert cli.json("query", "-d", name, "-f", str(sql_file))["data"] == [[3]]
    piped = cli.json("query", "-d", name, "-f", "-", input="SELECT max(id) AS m FROM t")
    assert piped["data"] == [[3]]


def test_query_table(db: tuple[str, Cli]) -> None:
    name, cli = db
    out = cli.ok("query", "-d", name, "-q", "SELECT * FROM t ORDER BY id", table=True).stdout
    assert out.splitlines() == [
        "id  name   price",
        "--  -----  -----",
        " 1  apple   1.50",
        " 2  NULL      10",
        " 3  pear    0.25",
        "3 rows",
    ]
    objects = cli.ok(
        "query", "-d", name, "--objects", "-q", "SELECT * FROM t ORDER BY id", table=True
    ).stdout
    assert objects == out
    insert = cli.ok("query", "-d", name, "-q", "INSERT INTO t VALUES (4)", table=True).stdout
    assert insert == "INSERT 0 1\n"


def test_query_table_truncated(db: tuple[str, Cli]) -> None:
    name, cli = db  # the test server returns at most 1000 rows
    sql = "SELECT g FROM generate_series(1, 1200) g"
    lines = cli.ok("query", "-d", name, "-q", sql, table=True).stdout.splitlines()
    assert lines[-1] == "(truncated: 1000 of 1200 rows)"
    assert len(lines) == 2 + 1000 + 1
    assert json.loads(cli.ok("query", "-d", name, "-q", sql).stdout)["truncated"] is True


def test_sql_error(db: tuple[str, Cli]) -> None:
    name, cli = db
    result = cli("query", "-d", name, "-q", "SELECT 1;\nSELECT nope\n  FROM t")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == 'error: column "nope" does not exist (sql_error)'
    assert lines[1] == "LINE 2: SELECT nope"
    assert lines[2] == "               ^"
    assert "SQLSTATE: 42703" in lines
    assert "Traceback" not in result.stderr


def test_usage_errors(db: tuple[str, Cli], tmp_path: Path) -> None:
    name, cli = db
    for args in (
        ["-d", name],  # no SQL
        ["-d", name, "-q", "SELECT 1", "-f", "-"],  # both
        ["-d", name, "-q", "  "],  # empty
        ["-d", name, "-f", str(tmp_path / "missing.sql")],
        ["-d", "not-a-db", "-q", "SELECT 1"],
        ["-q", "SELECT 1"],  # no database
    ):
        result = cli("query", *args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""


def test_read_only_collaborator_cannot_write(db: tuple[str, Cli], make_user: MakeUser) -> None:
    name, owner = db
    reader, reader_key = make_user(prefix="reader")
    owner.ok("db", "share", name, reader, "--role", "read")
    as_reader = owner.as_(reader_key)
    assert as_reader.json("query", "-d", name, "-q", "SELECT count(*) FROM t")["data"] == [[3]]
    denied = as_reader("query", "-d", name, "-q", "DELETE FROM t")
    assert denied.exit_code == 1
    assert "(sql_error)" in denied.stderr
    assert f"hint: your access to {name} may be read-only" in denied.stderr


def test_storage_limit_hint_names_the_database(db: tuple[str, Cli]) -> None:
    name, cli = db
    cli.ok("db", "update", name, "--storage-limit", "1000")
    result = cli(
        "query", "-d", name, "-q", "INSERT INTO t SELECT g FROM generate_series(1, 5000) g"
    )
    assert result.exit_code == 1
    assert "(storage_limit_exceeded)" in result.stderr
    assert f"millpond db update {name} --storage-limit BYTES" in result.stderr
    assert cli.json("query", "-d", name, "-q", "SELECT count(*) FROM t")["data"] == [[3]]
