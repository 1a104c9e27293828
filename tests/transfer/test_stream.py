"""Streamed CSV exports (``POST /v1/exports/stream``): the same file as a CSV job's, the
same rights, every error before the first byte as an error answer with the jobs' codes,
an answer cut short (never a complete-looking file) when the export fails midway, and a
client that leaves stops its query in Postgres. The SDK (sync and async) and the CLI."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from _waiting import wait_until
from millpond import AsyncMillpond, Millpond, NotFoundError, TransportError
from millpond.cli import app
from millpond.server.testing import ServerThread

from ._helpers import Api

MakeUser = Callable[..., tuple[str, str]]
Superuser = Callable[[str], Any]

AWKWARD = """
CREATE TABLE awkward (
    id int, label text, big numeric, n bigint, ratio double precision, doc jsonb,
    tags text[], at timestamptz
);
INSERT INTO awkward VALUES
 (1, 'comma, "quote", newline
and back\\slash', 123456789012345678901234567890.123456789, 9223372036854775807, 1e308,
  '{"k": "v, \\"x\\""}', '{a,"b c"}', '2024-02-29 12:34:56+02'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '', -1e-20, -9223372036854775808, 'NaN', 'null', '{}', 'infinity'),
 (4, 'ünïcödé ✓ 日本語 🐘', 'NaN', 0, '-Infinity', '[]', '{"\\"q\\"", NULL}', NULL),
 (5, E'cr\\rlf\\r\\ntab\\t', 0.1, 1, -0.0, '{"a": [1, 2]}', '{""}', '2024-01-01');
INSERT INTO awkward
SELECT i, repeat('x,"y"' || E'\\n', i % 40), i * 1000000000000.5, i, i / 7.0,
       jsonb_build_object('i', i), ARRAY[i::text, NULL],
       '2024-01-01'::timestamptz + i * interval '1 s'
FROM generate_series(6, 40000) i;
"""
MIDWAY = (
    "SELECT i, repeat('x', 100) AS pad, 1 / (i - 50000) AS boom FROM generate_series(1, 100000) i"
)
"""Fails at row 50,000, some 5.5 MB into its CSV: well after the answer began."""
ENDLESS = "SELECT i, repeat('x', 100) AS pad FROM (SELECT generate_series(1, 10000000000) AS i) s"
"""Rows at once, and more than anyone reads (a set-returning function in the select list
streams; in FROM, it would be materialised first)."""


@pytest.fixture(scope="module")
def awkward_db(xfer: Api, owner: tuple[str, str]) -> str:
    db = xfer.make_db(owner[1])
    xfer.query(owner[1], db, AWKWARD)
    return db


def _job_csv(xfer: Api, key: str, db: str, **fields: Any) -> bytes:
    job = xfer.run_export(key, db, export_format="csv", **fields)
    assert job["state"] == "DONE", (job["error_type"], job["error_details"])
    return xfer.download(job)


def _stream(xfer: Api, key: str | None, db: str, **fields: Any) -> httpx.Response:
    return xfer.post("/v1/exports/stream", key, json={"db_name": db, **fields})


def test_the_streamed_csv_is_the_jobs_csv(
    xfer: Api, owner: tuple[str, str], awkward_db: str, base_url: str, tmp_path: Path
) -> None:
    key = owner[1]
    done_job = xfer.run_export(key, awkward_db, export_format="csv", table_name="awkward")
    job = xfer.download(done_job)
    assert len(job) > 3 * (1 << 20)  # several blocks of the COPY reader
    resumed = xfer.client.get(done_job["download_url"], headers={"Range": "bytes=1000-"})
    assert resumed.status_code == 206 and resumed.content == job[1000:]  # (docs/transfer.md)
    r = _stream(xfer, key, awkward_db, table_name="awkward")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    assert r.headers["content-disposition"] == 'attachment; filename="awkward.csv"'
    assert r.content == job
    assert "ünïcödé ✓ 日本語 🐘".encode() in job and b'"comma, ""quote"", newline\n' in job

    query = "SELECT label, big, n FROM awkward WHERE id < 6 ORDER BY id"
    small = _job_csv(xfer, key, awkward_db, query_string=query)
    r = _stream(xfer, key, awkward_db, query_string=query, file_name="five rows")
    assert r.content == small and small.count(b"\n") > 6  # header, rows, newlines in values
    assert r.headers["content-disposition"] == 'attachment; filename="five_rows.csv"'

    with Millpond(api_key=key, base_url=base_url) as mp:
        done = mp.exports.stream(awkward_db, tmp_path, table_name="awkward")
    written = tmp_path / "awkward.csv"
    assert done.path == str(written) and done.file_name == "awkward.csv"
    assert done.size_bytes == len(job) and written.read_bytes() == job
    assert done.table_name == "awkward" and done.export_format == "csv"
    assert not list(tmp_path.glob("*.part"))

    async def main() -> bytes:
        async with AsyncMillpond(api_key=key, base_url=base_url) as amp:
            out = await amp.exports.stream(awkward_db, tmp_path / "q.csv", query_string=query)
        return Path(out.path).read_bytes()

    assert asyncio.run(main()) == small


def test_who_may_stream_is_who_may_export(
    xfer: Api, owner: tuple[str, str], make_user: MakeUser
) -> None:
    key = owner[1]
    private = xfer.make_db(key, is_private=True)
    xfer.query(key, private, "CREATE TABLE t AS SELECT 1 AS x")
    public = xfer.make_db(key, is_private=False)
    xfer.query(key, public, "CREATE TABLE t AS SELECT 2 AS x")
    reader_name, reader = make_user(prefix="reader")
    _, stranger = make_user(prefix="stranger")
    r = xfer.request(
        "PUT", f"/v1/databases/{private}/collaborators/{reader_name}", key, json={"role": "read"}
    )
    assert r.status_code == 200, r.text
    read_key = xfer.post("/v1/keys", key, json={"scope": "read"}).json()["secret"]
    bot = xfer.post("/v1/service-accounts", key, json={"name": "exporter"}).json()
    bot_key = xfer.post(f"/v1/service-accounts/{bot['id']}/keys", key, json={"scope": "read"})
    callers = {
        "owner": key,
        "reader": reader,
        "read key": read_key,
        "service account": bot_key.json()["secret"],
        "stranger": stranger,
        "no key": None,
    }
    for db, rows in ((private, b"x\n1\n"), (public, b"x\n2\n")):
        for who, caller in callers.items():
            job = xfer.post("/v1/exports", caller, json={"db_name": db, "table_name": "t"})
            streamed = _stream(xfer, caller, db, table_name="t")
            assert (job.status_code == 202) == (streamed.status_code == 200), (who, db)
            if job.status_code == 202:
                assert streamed.content == rows, (who, db)
            else:  # refused alike
                assert streamed.status_code == job.status_code, (who, db, streamed.text)
                assert streamed.json()["error"]["code"] == job.json()["error"]["code"]
    r = _stream(xfer, stranger, private, table_name="t")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "database_not_found")
    assert _stream(xfer, None, private, table_name="t").status_code == 401


def test_every_error_before_the_first_byte_is_an_error_answer(
    xfer: Api, owner: tuple[str, str], make_user: MakeUser, superuser: Superuser
) -> None:
    key = owner[1]
    db = xfer.make_db(key)
    xfer.query(key, db, "CREATE TABLE t AS SELECT 1 AS x; CREATE TABLE secret AS SELECT 1 AS y")

    def refused(caller: str = key, **fields: Any) -> tuple[int, str]:
        r = _stream(xfer, caller, db, **fields)
        assert r.headers["content-type"] == "application/json", r.text
        return r.status_code, r.json()["error"]["code"]

    # the body, checked as POST /v1/exports checks it
    assert refused() == (422, "validation_error")
    assert refused(table_name="t", query_string="SELECT 1") == (422, "validation_error")
    assert refused(query_string="SELECT 1", schema_name="public") == (422, "validation_error")
    assert refused(table_name="t", export_format="parquet") == (422, "validation_error")
    assert refused(table_name="é" * 40) == (422, "invalid_name")
    r = xfer.post("/v1/exports/stream", key, json={"db_name": "nobody/nothing", "table_name": "t"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "database_not_found")

    # what Postgres refuses: the export jobs' error types, as 400
    sql_errors = {
        "SELEC 1": "sql_error",
        "DELETE FROM t RETURNING *": "sql_error",
        "SELECT 1) q; DROP TABLE t; SELECT * FROM (SELECT 1": "sql_error",
        "SELECT * FROM nope": "table_not_found",
        "SELECT 1 / (i - 5000) FROM generate_series(1, 10000) i": "sql_error",  # one block
    }
    for query, code in sql_errors.items():
        job = xfer.run_export(key, db, query_string=query)
        assert job["state"] == "FAILED" and job["error_type"] == code, (query, job)
        assert refused(query_string=query) == (400, code), query
    assert refused(table_name="nope") == (400, "table_not_found")
    r = _stream(
        xfer, key, db, query_string="SELECT 1 / (i - 5000) FROM generate_series(1, 10000) i"
    )
    assert r.json()["error"]["details"]["sqlstate"] == "22012"
    assert xfer.query(key, db, "SELECT count(*) FROM t") == [[1]]

    # a privilege the caller's role lacks
    reader_name, reader = make_user(prefix="reader")
    xfer.request(
        "PUT", f"/v1/databases/{db}/collaborators/{reader_name}", key, json={"role": "read"}
    )
    pg_name = xfer.query(key, db, "SELECT current_database()")[0][0]
    xfer.query(key, db, f'REVOKE ALL ON secret FROM PUBLIC, "{pg_name}_ro"')
    job = xfer.run_export(reader, db, table_name="secret")
    assert job["error_type"] == "permission_denied", job
    assert refused(reader, table_name="secret") == (400, "permission_denied")
    assert _stream(xfer, reader, db, table_name="t").content == b"x\n1\n"  # the rest streams


def _read_midway(response: httpx.Response) -> int:
    received = 0
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        for chunk in response.iter_raw():
            received += len(chunk)
    return received


def test_an_error_midway_cuts_the_answer_short(
    xfer: Api, owner: tuple[str, str], db: str, base_url: str, tmp_path: Path
) -> None:
    key = owner[1]
    body = {"db_name": db, "query_string": MIDWAY}
    headers = {"Authorization": f"Bearer {key}"}
    with xfer.client.stream("POST", "/v1/exports/stream", json=body, headers=headers) as r:
        assert r.status_code == 200
        assert _read_midway(r) > 4 * (1 << 20)  # rows came, then no proper end

    target = tmp_path / "midway.csv"
    with Millpond(api_key=key, base_url=base_url) as mp:
        with pytest.raises(TransportError, match=r"stopped after \d+ bytes, before its end"):
            mp.exports.stream(db, target, query_string=MIDWAY)
        assert list(tmp_path.iterdir()) == []  # neither the file nor its .part
        with pytest.raises(NotFoundError):
            mp.exports.stream("nobody/nothing", target, table_name="t")
        assert list(tmp_path.iterdir()) == []
        # and the server's connection was not left broken
        assert mp.exports.stream(db, target, query_string="SELECT 1 AS one").size_bytes == 6
    assert target.read_bytes() == b"one\n1\n"


def test_a_statement_timeout_before_and_after_the_first_byte(
    xfer: Api,
    owner: tuple[str, str],
    db: str,
    server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server.settings, "transfer_job_timeout_s", 1.0)
    key = owner[1]
    r = _stream(xfer, key, db, query_string="SELECT pg_sleep(30)")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "timeout")
    # rows, then a pause: the pause sends what was read, the timeout then cuts it short
    pausing = (
        "SELECT i, repeat('x', 100) AS pad,"
        " CASE WHEN i = 20000 THEN (SELECT 1 FROM pg_sleep(30)) END AS nap"
        " FROM generate_series(1, 30000) i"
    )
    body = {"db_name": db, "query_string": pausing}
    headers = {"Authorization": f"Bearer {key}"}
    with xfer.client.stream("POST", "/v1/exports/stream", json=body, headers=headers) as r:
        assert r.status_code == 200
        assert _read_midway(r) > 1 << 20


def _open_stream(base_url: str, key: str, body: dict[str, Any]) -> socket.socket:
    """A raw HTTP request for a streamed export, its answer left unread."""
    url = urlsplit(base_url)
    payload = json.dumps(body).encode()
    sock = socket.create_connection((url.hostname, url.port or 80), timeout=30)
    sock.sendall(
        b"POST /v1/exports/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


@pytest.fixture
def sessions(superuser: Superuser) -> Iterator[Callable[[str], list[tuple[str, str]]]]:
    """``sessions(pg_name)``: (state, query) of the export sessions on that database."""
    with superuser("millpond") as conn:

        def found(pg_name: str) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT state, query FROM pg_stat_activity WHERE datname = %s"
                " AND application_name = 'millpond-transfer'",
                (pg_name,),
            ).fetchall()
            return [(str(state), str(query)) for state, query in rows]

        yield found


@pytest.mark.parametrize("when", ["midway", "before the first byte"])
def test_a_client_that_leaves_stops_the_query(
    xfer: Api,
    owner: tuple[str, str],
    db: str,
    base_url: str,
    server: ServerThread,
    sessions: Callable[[str], list[tuple[str, str]]],
    when: str,
) -> None:
    key = owner[1]
    pg_name = xfer.query(key, db, "SELECT current_database()")[0][0]
    user_id = xfer.get("/v1/me", key).json()["user"]["id"]
    budget = server.server.config.app.state.services.budget
    query = ENDLESS if when == "midway" else "SELECT 1 FROM pg_sleep(600)"
    sock = _open_stream(base_url, key, {"db_name": db, "query_string": query})
    try:
        if when == "midway":
            received = b""
            while len(received) < 1 << 20:  # the answer is under way
                received += sock.recv(1 << 16)
            assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        wait_until(
            lambda: any(s == "active" and q.startswith("COPY") for s, q in sessions(pg_name)),
            what="the export's COPY running",
        )
        wait_until(lambda: budget.held.get(user_id) == 1, what="the stream's connection held")
    finally:
        sock.close()
    wait_until(lambda: sessions(pg_name) == [], what="the export's session to end")
    wait_until(lambda: user_id not in budget.held, what="the connection budget given back")
    # the server goes on serving its streams
    assert _stream(xfer, key, db, query_string="SELECT 2 AS two").content == b"two\n2\n"


def _cli(base_url: str, key: str, *args: str) -> tuple[int, str, str]:
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None, "COLUMNS": "100"}
    result = CliRunner().invoke(app, ["--url", base_url, "--key", key, *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_the_cli(
    xfer: Api, owner: tuple[str, str], awkward_db: str, base_url: str, tmp_path: Path
) -> None:
    key = owner[1]
    target = tmp_path / "out.csv"
    code, out, err = _cli(
        base_url, key, "export", awkward_db, "-t", "awkward", "-o", str(target), "--stream"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["path"] == str(target) and shown["table_name"] == "awkward"
    assert shown["size_bytes"] == target.stat().st_size
    assert target.read_bytes() == _job_csv(xfer, key, awkward_db, table_name="awkward")

    code, out, err = _cli(
        base_url, key, "--format", "json", "export", awkward_db, "-q", "SELECT 1 AS a",
        "--stream", "-o", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["path"] == str(tmp_path / "export.csv")
    assert (tmp_path / "export.csv").read_bytes() == b"a\n1\n"

    midway = tmp_path / "midway.csv"
    code, out, err = _cli(
        base_url, key, "export", awkward_db, "-q", MIDWAY, "-o", str(midway), "--stream"
    )
    assert code == 1 and out == "" and "before its end" in err
    assert not midway.exists() and not list(tmp_path.glob("*.part"))
    code, _, err = _cli(
        base_url, key, "export", awkward_db, "-q", "SELECT * FROM nope", "-o", str(midway),
        "--stream",
    )  # fmt: skip
    assert code == 1 and "table_not_found" in err and not midway.exists()

    bad = ("-o", str(tmp_path / "x.parquet"), "--stream")
    assert _cli(base_url, key, "export", awkward_db, "-t", "awkward", *bad)[0] == 2
    no_wait = ("-o", str(midway), "--stream", "--no-wait")
    assert _cli(base_url, key, "export", awkward_db, "-t", "awkward", *no_wait)[0] == 2


def test_the_sdk_shows_its_progress(
    owner: tuple[str, str],
    db: str,
    base_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Millpond(api_key=owner[1], base_url=base_url) as mp:
        mp.exports.stream(db, tmp_path / "p.csv", query_string="SELECT 1 AS a", progress=True)
    assert "export of" in capsys.readouterr().err
