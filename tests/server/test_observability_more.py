"""Observability, second part: the request id in Postgres (``application_name`` of the
transaction that serves it), the metrics read when scraped (transfer jobs, realtime lag
behind the WAL, pool use, flag checks), and the log output of ``millpond up`` (JSON lines,
with the request id, and no secret in any line)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from millpond import faults
from millpond.server.config import Settings
from millpond.server.observability import metrics as metrics_module
from millpond.server.observability.context import request_id as current_request
from millpond.server.observability.logs import JsonFormatter, TextFormatter, redact
from millpond.server.observability.metrics import ControlReads, ControlSample
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.query import service as query_service
from millpond.server.testing import ServerThread, free_port, start_server

from ._helpers import assert_error, unique

TOKEN = "scrape-" + "t" * 20
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own: its counts and gauges are this module's only."""
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("observed") / "data",
        gateway_port=free_port(),
        metrics_token=TOKEN,
        transfer_workers=1,  # one job at a time: the next one stays queued
        transfer_allow_private_urls=True,  # imports from this test's HTTP server
        realtime_idle_seconds=0.2,
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(watched: ServerThread) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {watched.admin_key}"}
    with httpx.Client(base_url=watched.url, timeout=60, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def db(http: httpx.Client) -> dict[str, Any]:
    r = http.post("/v1/databases", json={"name": unique("obs")})
    assert r.status_code == 201, r.text
    made = dict(r.json())
    query(http, made["full_name"], "CREATE TABLE t (id int PRIMARY KEY, note text)")
    return made


def query(http: httpx.Client, database: str, sql: str, **kwargs: Any) -> httpx.Response:
    r = http.post("/v1/query", json={"database": database, "sql": sql}, **kwargs)
    assert r.status_code == 200, r.text
    return r


def scrape(http: httpx.Client) -> Samples:
    r = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def until(
    http: httpx.Client, found: Callable[[Samples], bool], what: str, timeout: float = 60
) -> Samples:
    """Scrape until ``found`` holds (the control reading is at most a second old)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = scrape(http)
        if found(seen):
            return seen
        assert time.monotonic() < deadline, f"never: {what}; last scrape: {seen}"
        time.sleep(0.05)


# -- the request id in Postgres ------------------------------------------------------------


APP_NAME = "SELECT current_setting('application_name')"


def _app_name(r: httpx.Response) -> str:
    (row,) = r.json()["data"]
    return str(row[0])


def test_postgres_sees_each_requests_id(http: httpx.Client, db: dict[str, Any]) -> None:
    name = db["full_name"]
    first = query(http, name, APP_NAME)
    second = query(http, name, APP_NAME)
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert ids[0] != ids[1]
    assert [_app_name(first), _app_name(second)] == [f"millpond {i}" for i in ids]
    # in the transaction, from the first statement on: an error's position is the caller's
    r = http.post("/v1/query", json={"database": name, "sql": "SELECT nope"})
    assert assert_error(r, 400, "sql_error")["details"]["position"] == 8


def test_a_callers_id_when_it_is_plain_and_short(http: httpx.Client, db: dict[str, Any]) -> None:
    name = db["full_name"]
    longest = "t." + "a" * 50 + ":9"  # 54 characters: 'millpond <id>' fills 63 bytes
    for given in ("trace-42.b:c", longest):
        r = query(http, name, APP_NAME, headers={"X-Request-Id": given})
        assert r.headers["x-request-id"] == given
        assert _app_name(r) == f"millpond {given}"
    for refused in (longest + "x", "it's; DROP", "\xfcn\xefcode".encode("latin-1"), ""):
        r = query(http, name, APP_NAME, headers={"X-Request-Id": refused})
        made = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), made  # replaced by a new one
        assert _app_name(r) == f"millpond {made}"


def test_an_id_not_plain_is_quoted_by_psycopg() -> None:
    # every id the server accepts or makes is plain: this is the line behind that
    for given, expected in (
        ("trace-42.b:c", " SET LOCAL application_name = 'millpond trace-42.b:c';"),
        ("it's; DROP", " SET LOCAL application_name = 'millpond it''s; DROP';"),
    ):
        token = current_request.set(given)
        try:
            assert query_service._request_tag(None) == expected  # type: ignore[arg-type]
        finally:
            current_request.reset(token)


def test_made_ids_are_unique_and_of_one_shape() -> None:
    made = [metrics_module._new_request_id() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)


def test_every_transaction_path_and_the_name_is_reverted(
    http: httpx.Client, watched: ServerThread
) -> None:
    r = http.post("/v1/databases", json={"name": unique("paths")})
    assert r.status_code == 201, r.text
    name, pg = r.json()["full_name"], f"mp_db_{r.json()['id']}"
    read_key = http.post("/v1/keys", json={"scope": "read"}).json()["secret"]
    reader = {"Authorization": f"Bearer {read_key}"}
    r = query(http, name, APP_NAME, headers=reader)  # BEGIN READ ONLY
    assert _app_name(r) == f"millpond {r.headers['x-request-id']}"
    r = http.patch(f"/v1/databases/{name}", json={"storage_limit_bytes": 1 << 40})
    assert r.status_code == 200, r.text
    r = query(http, name, APP_NAME)  # BEGIN in a round trip of its own, then the SQL
    assert _app_name(r) == f"millpond {r.headers['x-request-id']}"
    # back in the pool, the sessions have their own name again (SET LOCAL ended with
    # the transaction, and the reset's DISCARD ALL is done in the background)
    pg_url = EmbeddedPostgres(watched.settings.data_dir).url(pg)
    deadline = time.monotonic() + 30
    with psycopg.connect(pg_url, autocommit=True) as su:
        while True:
            rows = su.execute(
                "SELECT application_name, state FROM pg_stat_activity"
                " WHERE datname = current_database() AND usename LIKE 'mp_db_%'"
            ).fetchall()
            if rows and all(row == ("millpond-query", "idle") for row in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)


# -- metrics read at scrape time -----------------------------------------------------------


def test_flag_checks_are_counted(http: httpx.Client) -> None:
    def checks(seen: Samples) -> dict[tuple[str, str], float]:
        got = seen.get("millpond_flag_checks_total", {})
        return {(dict(k)["reason"], dict(k)["value"]): v for k, v in got.items()}

    before = checks(scrape(http))
    r = http.post("/v1/flags/environments", json={"name": unique("env")})
    assert r.status_code == 201, r.text
    env = f"/v1/flags/environments/{r.json()['id']}"
    for flag in ({"key": "off"}, {"key": "on", "rules": [{"value": True, "conditions": []}]}):
        assert http.post(f"{env}/flags", json=flag).status_code == 201
    body = {"company": {"id": "acme"}}
    results = [http.post(f"{env}/flags/{key}/check", json=body) for key in ("off", "on", "gone")]
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    everything = http.post(f"{env}/check", json=body)  # one check per flag
    assert everything.status_code == 200, everything.text
    made = [(x["reason"], str(x["value"]).lower()) for r in results for x in [r.json()]]
    made += [(x["reason"], str(x["value"]).lower()) for x in everything.json()["flags"]]
    assert ("FLAG_NOT_FOUND", "false") in made and ("DEFAULT", "false") in made
    after = checks(scrape(http))
    for labels in set(made):
        assert after[labels] - before.get(labels, 0) == made.count(labels), (labels, after)


class _HeldFiles:
    """A local HTTP server whose answer waits until :meth:`release` (the import that
    downloads from it stays running meanwhile)."""

    def __init__(self) -> None:
        held = self.held = threading.Event()
        released = self.released = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                held.set()
                released.wait(60)
                body = b"id,label\n1,one\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.csv"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def _jobs(seen: Samples) -> dict[tuple[str, str], float]:
    got = seen.get("millpond_transfer_jobs", {})
    return {(dict(k)["kind"], dict(k)["state"]): v for k, v in got.items()}


def test_the_job_queue(http: httpx.Client, db: dict[str, Any]) -> None:
    idle = {(k, s): 0.0 for k in ("import", "export") for s in ("queued", "running")}
    until(http, lambda seen: _jobs(seen) == idle, "no job")
    files = _HeldFiles()
    try:
        body = {"db_name": db["full_name"], "table_name": "from_url", "file_url": files.url}
        first = http.post("/v1/imports", json=body)
        assert first.status_code == 202, first.text
        assert files.held.wait(30)
        until(http, lambda seen: _jobs(seen)[("import", "running")] == 1, "one running")
        data = {"db_name": db["full_name"], "table_name": "uploaded"}
        files_part = {"file": ("data.csv", b"id\n1\n", "text/csv")}
        second = http.post("/v1/imports", data=data, files=files_part)
        assert second.status_code == 202, second.text
        seen = until(http, lambda seen: _jobs(seen)[("import", "queued")] == 1, "one queued")
        assert _jobs(seen)[("import", "running")] == 1
        files.release()
        for job in (first, second):
            deadline = time.monotonic() + 60
            while (state := http.get(f"/v1/imports/{job.json()['id']}").json()["state"]) not in (
                "DONE",
                "FAILED",
            ):
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
            assert state == "DONE"
        until(http, lambda seen: _jobs(seen) == idle, "the queue empty again")
    finally:
        files.close()


def _lag(seen: Samples, pg: str) -> float | None:
    return seen.get("millpond_realtime_lag_bytes", {}).get((("database", pg),))


def test_realtime_lag_behind_the_wal(
    http: httpx.Client, watched: ServerThread, db: dict[str, Any]
) -> None:
    pg = f"mp_db_{db['id']}"
    assert _lag(scrape(http), pg) is None  # no stream yet
    url = watched.url.replace("http://", "ws://") + f"/v1/realtime/{db['full_name']}"
    holding, released = threading.Event(), threading.Event()

    async def hold(hub: Any, tx: Any) -> None:  # the stream's next transaction waits
        if hub.pg_name == pg and not released.is_set():
            holding.set()
            await asyncio.to_thread(released.wait, 30)

    headers = {"Authorization": f"Bearer {watched.admin_key}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        ws.send(
            json.dumps({"type": "subscribe", "request_id": "r", "queries": ["SELECT * FROM t"]})
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "subscription_applied"
        until(http, lambda seen: _lag(seen, pg) is not None, "a lag sample")
        with faults.installed("hub.before_dispatch", hold):
            # some 9600 bytes that do not compress: as much WAL at least
            noise = "SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300)"
            query(http, db["full_name"], f"INSERT INTO t VALUES (1, ({noise}))")
            assert holding.wait(30)
            # the stream holds a transaction Postgres wrote: it lags by that much at least
            until(http, lambda seen: (_lag(seen, pg) or 0) > 9000, "a lag while held")
            released.set()
            while (message := json.loads(ws.recv(timeout=10)))["type"] != "transaction":
                assert message["type"] == "ping", message
    # the stream stops once idle: its series goes with it (the label set stays bounded)
    until(http, lambda seen: _lag(seen, pg) is None, "the stopped stream's series gone")


def _pool(seen: Samples, pool: str) -> dict[str, float]:
    got = seen.get("millpond_pool_connections", {})
    return {dict(k)["state"]: v for k, v in got.items() if dict(k)["pool"] == pool}


def test_pool_use(http: httpx.Client, watched: ServerThread, db: dict[str, Any]) -> None:
    pool = f"mp_db_{db['id']}_owner"
    seen = scrape(http)
    assert _pool(seen, "control")["in_use"] >= 0 and _pool(seen, "control")["idle"] >= 0
    assert seen["millpond_pool_waiting"][(("pool", "control"),)] >= 0
    pg_url = EmbeddedPostgres(watched.settings.data_dir).url(f"mp_db_{db['id']}")
    with psycopg.connect(pg_url, autocommit=True) as su, ThreadPoolExecutor(1) as pool_thread:
        su.execute("SELECT pg_advisory_lock(4242)")
        waiting = pool_thread.submit(
            query, http, db["full_name"], "SELECT pg_advisory_xact_lock(4242)"
        )
        until(http, lambda seen: _pool(seen, pool).get("in_use", 0) >= 1, "a connection in use")
        su.execute("SELECT pg_advisory_unlock(4242)")
        waiting.result(timeout=30)
    until(
        http,
        lambda seen: _pool(seen, pool).get("in_use") == 0 and _pool(seen, pool)["idle"] >= 1,
        "the connection back in the pool, idle",
    )


def test_control_reads_are_shared_and_cached() -> None:
    now = [0.0]
    calls: list[int] = []
    failing = [False]

    async def read() -> ControlSample:
        calls.append(1)
        await asyncio.sleep(0)  # let the concurrent scrapes pile up behind it
        if failing[0]:
            raise psycopg.OperationalError("down")
        return ControlSample(len(calls), {})

    async def scenario() -> None:
        reads = ControlReads(read, ttl=1.0, clock=lambda: now[0])

        async def scrapes(n: int) -> list[ControlSample | None]:
            return await asyncio.gather(*(reads.refresh() for _ in range(n)))

        first = await scrapes(10)
        assert len(calls) == 1 and first == [ControlSample(1, {})] * 10
        now[0] = 0.9
        assert await scrapes(3) == [ControlSample(1, {})] * 3
        now[0], failing[0] = 1.0, True
        assert await scrapes(3) == [None, None, None]  # Postgres down: left out
        assert len(calls) == 2
        now[0], failing[0] = 2.5, False
        assert (await scrapes(2))[0] == ControlSample(3, {})
        assert reads.reads == len(calls) == 3

    asyncio.run(scenario())


# -- logs --------------------------------------------------------------------------------


SECRET = "mp_" + "Z9" * 20


def _record(message: str, *args: Any, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("millpond.test", logging.ERROR, __file__, 1, message, args, info)


def test_json_lines_carry_the_request_id_and_no_secret() -> None:
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError as exc:
        record = _record(
            "failed for %s at %s", "postgresql://u:hunter2@h/db", "/x?token=abc", exc=exc
        )
    token = current_request.set("req-7")
    try:
        line = JsonFormatter().format(record)
    finally:
        current_request.reset(token)
    entry = json.loads(line)
    assert "\n" not in line
    assert set(entry) == {"time", "level", "logger", "message", "request_id", "exception"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert (entry["level"], entry["logger"], entry["request_id"]) == (
        "ERROR",
        "millpond.test",
        "req-7",
    )
    assert entry["message"] == "failed for postgresql://u:[redacted]@h/db at /x?token=[redacted]"
    assert "ValueError: bad key mp_[redacted]" in entry["exception"]
    assert SECRET not in line and "hunter2" not in line
    plain = json.loads(JsonFormatter().format(_record("outside a request")))
    assert set(plain) == {"time", "level", "logger", "message"}
    text = TextFormatter().format(_record("key %s", SECRET))
    assert text == "ERROR millpond.test: key mp_[redacted]"


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            '"WebSocket /v1/realtime/a/b?access_token=mp_x&y=1" [accepted]',
            "access_token=[redacted]&y=1",
        ),
        ("GET /v1/exports/e/download?expires=1&signature=abc", "signature=[redacted]"),
        ("dsn host=h password='p w' user=u", "password=[redacted] user=u"),
        ("Authorization: Bearer abcdefghijkl", "Bearer [redacted]"),
        ("jwt eyJhbGciOiJ.eyJzdWIiOiIxIn0.sig1 here", "jwt [redacted] here"),
        ("tokens mpt_1." + "a" * 64 + ".x mps_" + "b" * 40, "tokens mpt_[redacted] mps_[redacted]"),
        (
            "stream for mp_db_1234567890123 on slot millpond_mp_db_1234567890123_ab",
            "mp_db_1234567890123",
        ),
        ("GET /v1/health 200 1.2ms id=abc", "GET /v1/health 200 1.2ms id=abc"),
    ],
)
def test_redaction(line: str, shown: str) -> None:
    assert shown in redact(line)


def test_millpond_up_writes_json_lines(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MILLPOND_GATEWAY_PORT": str(free_port()),
        "MILLPOND_LOG_FORMAT": "json",
        "MILLPOND_LOG_LEVEL": "info",
        "MILLPOND_STATEMENT_TIMEOUT_MS": "300",
    }
    command = [sys.executable, "-m", "millpond.cli", "up", "--port", str(port)]
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)], stdout=out, stderr=err, env=env
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            try:
                if httpx.get(f"{url}/v1/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        key = (data_dir / "admin-key").read_text().strip()
        with httpx.Client(base_url=url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {key}"}
            mine = client.get("/v1/health", headers={"X-Request-Id": "json-trace-1"})
            assert mine.status_code == 200
            assert client.get(f"/v1/health?access_token={key}").status_code == 200
            r = client.post("/v1/databases", json={"name": "logs"}, headers=auth)
            assert r.status_code == 201, r.text
            # it turns its timeout off: the server ends it, and logs why (within the request)
            slow = client.post(
                "/v1/query",
                json={
                    "database": "admin/logs",
                    "sql": "SET statement_timeout = 0; SELECT pg_sleep(60)",
                },
                headers=auth,
            )
            assert_error(slow, 400, "statement_timeout")
        ws_url = url.replace("http://", "ws://") + f"/v1/realtime/admin/logs?access_token={key}"
        with connect(ws_url, open_timeout=10) as ws:  # uvicorn logs its path and query
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    text = (tmp_path / "stderr").read_text()
    assert key not in text and key[3:] not in text
    entries = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert entries and all(isinstance(e, dict) for e in entries)
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.error", "millpond.server", "millpond.access"} <= loggers, loggers
    (access,) = [e for e in entries if e.get("request_id") == "json-trace-1"]
    assert access["logger"] == "millpond.access" and access["message"].startswith(
        "GET /v1/health 200"
    )
    ended = [e for e in entries if "terminating backend" in e["message"]]
    assert [(e["level"], e.get("request_id")) for e in ended] == [
        ("WARNING", slow.headers["x-request-id"])
    ]
    sockets = [e["message"] for e in entries if "WebSocket /v1/realtime/admin/logs" in e["message"]]
    assert sockets and all("access_token=[redacted]" in m for m in sockets), sockets
