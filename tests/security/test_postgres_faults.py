"""When Postgres dies under a running server: requests answer 503 ``postgres_unavailable``
at once (with ``Retry-After``) instead of hanging on pool timeouts or answering 500,
``/v1/health`` says why, the gateway refuses logins with a FATAL, realtime sockets close
with a code the SDK reconnects on; the embedded Postgres is restarted and everything works
again with the data intact. A killed backend is repaired without the caller noticing;
a Postgres that cannot be restarted ends ``millpond up`` with a non-zero status.

These tests kill Postgres, so they run their own server (not the session's).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from _waiting import wait_until
from millpond.server.config import Settings
from millpond.server.gateway import protocol as pq
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread, free_port, start_server

FAST_S = 2.0  # "at once": well under any pool timeout


class Faulty:
    """A server of its own, a user with a database holding ``items``, and ways to hurt
    its Postgres."""

    def __init__(self, running: ServerThread, pg: EmbeddedPostgres) -> None:
        self.running = running
        self.pg = pg
        self.http = httpx.Client(base_url=running.url, timeout=60)
        name = f"victim{os.getpid()}"
        r = self.http.post("/v1/users", json={"username": name}, headers=self._auth())
        assert r.status_code == 201, r.text
        self.key = r.json()["api_key"]["secret"]
        r = self.http.post("/v1/databases", json={"name": "shop"}, headers=self._auth(self.key))
        assert r.status_code == 201, r.text
        self.database = f"{name}/shop"
        self.ok("CREATE TABLE items (id int PRIMARY KEY, name text)")
        self.ok("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g")

    def _auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.running.admin_key}"}

    def query(self, sql: str) -> httpx.Response:
        body = {"database": self.database, "sql": sql}
        return self.http.post("/v1/query", json=body, headers=self._auth(self.key))

    def ok(self, sql: str) -> list[Any]:
        r = self.query(sql)
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    def health(self) -> dict[str, Any]:
        started = time.monotonic()
        r = self.http.get("/v1/health")
        assert time.monotonic() - started < FAST_S + 1
        assert r.status_code == 200, r.text
        return dict(r.json())

    def postmaster_pid(self) -> int:
        return int((self.pg.pgdata / "postmaster.pid").read_text().splitlines()[0])

    def kill_postmaster(self) -> int:
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def superuser(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.url(self.running.settings.control_database), autocommit=True)

    def wait_recovered(self, timeout: float = 60) -> None:
        def recovered() -> bool:
            r = self.query("SELECT count(*) FROM items")
            assert r.status_code in (200, 503), r.text  # never a 500 meanwhile
            return r.status_code == 200 and self.health()["postgres"]["ok"]

        wait_until(recovered, timeout, "the server to recover")

    def wait_refusing(self) -> None:
        """After a kill: within FAST_S, queries answer 503 (a backend that has not yet
        noticed its postmaster died may still answer one or two) and health says so."""

        def refused() -> bool:
            started = time.monotonic()
            r = self.query("SELECT count(*) FROM items")
            assert time.monotonic() - started < FAST_S, "the query hung"
            assert r.status_code in (200, 503), r.text
            return r.status_code == 503 and not self.health()["postgres"]["ok"]

        wait_until(refused, FAST_S, "queries to answer 503 postgres_unavailable")

    def gateway_dsn(self) -> str:
        port = self.running.settings.gateway_port
        return (
            f"host=127.0.0.1 port={port} user=anyone password={self.key}"
            f" dbname={self.database} sslmode=disable connect_timeout=5"
        )

    @contextmanager
    def socket(self) -> Iterator[Socket]:
        url = self.running.url.replace("http://", "ws://") + f"/v1/realtime/{self.database}"
        with connect(url, additional_headers=self._auth(self.key), open_timeout=10) as ws:
            yield Socket(ws)

    def close(self) -> None:
        self.http.close()


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def next(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message["type"] == kind:
                return dict(message)
            assert message["type"] in ("ping", "pong", "hello"), message

    def subscribe(self, sql: str) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "subscribe", "request_id": "r", "queries": [sql]}))
        return self.next("subscription_applied")

    def close_code(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            pass
        raise AssertionError(f"the socket stayed open for {timeout} s")


def gateway_refusal(port: int, key: str, database: str) -> dict[str, str]:
    """Log in through the gateway on a raw socket; return the ErrorResponse's fields."""
    with socket.create_connection(("127.0.0.1", port), timeout=FAST_S + 1) as sock:
        sock.sendall(pq.startup_message({"user": "anyone", "database": database}))
        kind, payload = _read_message(sock)
        if kind == b"R":  # asked for the password: send the key, read the verdict
            sock.sendall(pq.password_message(key))
            kind, payload = _read_message(sock)
        assert kind == b"E", (kind, payload)
        return pq.parse_error_fields(payload)


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    head = _read_exactly(sock, 5)
    length = int.from_bytes(head[1:], "big")
    return head[:1], _read_exactly(sock, length - 4)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the gateway closed the connection without an ErrorResponse"
        data += chunk
    return data


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    data_dir = tmp_path_factory.mktemp("pg-faults")
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=data_dir,
        gateway_port=free_port(),
        postgres_restart_attempts=1000,  # the tests decide when a restart may succeed
        realtime_idle_seconds=0.5,
    )
    running = start_server(settings)
    hurt = Faulty(running, EmbeddedPostgres(data_dir))
    try:
        yield hurt
    finally:
        hurt.close()
        running.stop()


class BrokenConfig:
    """Make the embedded Postgres unable to start until ``repair()``: the outage lasts as
    long as the test needs it to."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.path = pg.pgdata / "postgresql.auto.conf"
        self.original = self.path.read_text()

    def __enter__(self) -> BrokenConfig:
        with self.path.open("a") as f:
            f.write("\nmax_connections = 'not a number'\n")
        return self

    def repair(self) -> None:
        self.path.write_text(self.original)

    def __exit__(self, *_: object) -> None:
        self.repair()


def test_a_dead_postmaster_means_fast_503s_a_clear_health_and_a_refusing_gateway(
    faulty: Faulty,
) -> None:
    before = faulty.ok("SELECT id, name FROM items ORDER BY id")
    with faulty.socket() as listener, BrokenConfig(faulty.pg) as broken:
        listener.subscribe("SELECT * FROM items WHERE id < 3")
        faulty.kill_postmaster()
        faulty.wait_refusing()

        def health_says_why() -> bool:
            health = faulty.health()
            assert health["status"] == "degraded" and health["postgres"]["ok"] is False
            return "postmaster exited" in health["postgres"]["error"]

        wait_until(health_says_why, FAST_S, "health to say the postmaster exited")
        # a load balancer takes the replica out (ready: 503), nobody restarts it (live: 200)
        ready = faulty.http.get("/v1/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"]["code"] == "not_ready"
        assert "postmaster exited" in ready.json()["error"]["message"]
        assert faulty.http.get("/v1/health/live").status_code == 200

        # every request answers 503 postgres_unavailable at once, never 500, never a hang
        for _ in range(10):
            started = time.monotonic()
            r = faulty.query("SELECT count(*) FROM items")
            assert time.monotonic() - started < FAST_S, "the query hung"
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "postgres_unavailable"
            assert r.headers["retry-after"] == "1"
        for method, path in (("GET", "/v1/me"), ("GET", "/v1/databases"), ("GET", "/v1/keys")):
            started = time.monotonic()
            r = faulty.http.request(method, path, headers=faulty._auth(faulty.key))
            assert time.monotonic() - started < FAST_S, f"{path} hung"
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "postgres_unavailable"

        # the gateway refuses new logins with a clear FATAL, before asking for the key
        started = time.monotonic()
        fields = gateway_refusal(faulty.running.settings.gateway_port, faulty.key, faulty.database)
        assert time.monotonic() - started < FAST_S
        assert fields["S"] == "FATAL" and fields["C"] == "57P03", fields
        assert "unavailable" in fields["M"]

        # the realtime socket was told its stream is gone (a code the SDK reconnects on)
        assert listener.close_code(timeout=10) == 4011

        # a new realtime connection meanwhile is closed at once with "try again later"
        with faulty.socket() as meanwhile:
            assert meanwhile.close_code(timeout=FAST_S) == 1013

        broken.repair()
        faulty.wait_recovered()

    # everything works again, with the data intact
    assert faulty.ok("SELECT id, name FROM items ORDER BY id") == before
    assert faulty.http.get("/v1/health/ready").json()["postgres"]["ok"] is True
    faulty.ok("INSERT INTO items VALUES (1000, 'after the restart')")
    assert faulty.ok("SELECT name FROM items WHERE id = 1000") == [["after the restart"]]
    with psycopg.connect(faulty.gateway_dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (101,)
    with faulty.socket() as sock:
        applied = sock.subscribe("SELECT * FROM items WHERE id >= 1000")
        assert applied["type"] == "subscription_applied"
        faulty.ok("INSERT INTO items VALUES (1001, 'streamed')")
        assert "streamed" in json.dumps(sock.next("transaction"))
    assert faulty.health()["postgres"]["ok"] is True


def test_a_killed_postmaster_is_restarted_by_itself(faulty: Faulty) -> None:
    faulty.wait_recovered()
    count = faulty.ok("SELECT count(*) FROM items")
    old_pid = faulty.kill_postmaster()
    for _ in range(3):
        started = time.monotonic()
        r = faulty.query("SELECT count(*) FROM items")
        assert time.monotonic() - started < FAST_S, "a query after the kill hung"
        assert r.status_code in (200, 503), r.text  # 200: still an orphan, or restarted
    # the orphaned backends may answer (and health say ok) before the supervisor has seen
    # the postmaster gone: recovered means a new postmaster, then answers
    wait_until(lambda: _restarted(faulty, old_pid), 30, "a new postmaster")
    faulty.wait_recovered(timeout=30)
    assert faulty.ok("SELECT count(*) FROM items") == count


def _restarted(faulty: Faulty, old_pid: int) -> bool:
    try:
        return faulty.postmaster_pid() != old_pid
    except (FileNotFoundError, IndexError, ValueError):  # between two postmasters
        return False


def test_a_crashed_backend_means_503s_until_postgres_recovered_by_itself(
    faulty: Faulty,
) -> None:
    faulty.wait_recovered()
    count = faulty.ok("SELECT count(*) FROM items")
    postmaster = faulty.postmaster_pid()
    with faulty.superuser() as su:
        row = su.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        os.kill(row[0], signal.SIGKILL)  # Postgres resets every session and recovers
    for _ in range(10):
        started = time.monotonic()
        r = faulty.query("SELECT count(*) FROM items")
        assert time.monotonic() - started < FAST_S, "a query hung"
        assert r.status_code in (200, 503), r.text
    faulty.wait_recovered(timeout=30)
    assert faulty.postmaster_pid() == postmaster  # its own crash recovery, no restart
    assert faulty.ok("SELECT count(*) FROM items") == count


def test_killed_backends_of_the_control_pool_are_replaced_unnoticed(faulty: Faulty) -> None:
    faulty.wait_recovered()
    with faulty.superuser() as su:
        killed = [
            pid
            for (pid,) in su.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        ]
        assert killed
        su.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (killed,))
        # pg_terminate_backend only signals: wait until they are gone (a backend still
        # ending under load would fail the query it is given: a 503, rightly, not this test)
        deadline = time.monotonic() + 30
        while su.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (killed,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the terminated backends did not end"
            time.sleep(0.01)
    for _ in range(5):  # the control pool drops its dead connections before using them
        r = faulty.http.get("/v1/me", headers=faulty._auth(faulty.key))
        assert r.status_code == 200, r.text
    assert faulty.ok("SELECT count(*) FROM items")[0][0] > 0
    assert faulty.health()["postgres"]["ok"] is True


def test_killed_query_backends_answer_503_not_500_and_heal(faulty: Faulty) -> None:
    faulty.wait_recovered()
    faulty.ok("SELECT 1")
    with faulty.superuser() as su:
        su.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'millpond-query'"
        )
    answers = []
    for _ in range(20):
        r = faulty.query("SELECT count(*) FROM items")
        answers.append(r.status_code)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "postgres_unavailable"
    assert answers[-1] == 200, answers


def test_a_postgres_that_cannot_be_restarted_ends_millpond_up(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MILLPOND_GATEWAY_PORT": str(free_port()),
        "MILLPOND_POSTGRES_RESTART_ATTEMPTS": "2",
    }
    data_dir_option = ["--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "millpond.cli", "up", "--port", str(port), *data_dir_option],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 90, "millpond up to start")
        pg = EmbeddedPostgres(tmp_path)
        with BrokenConfig(pg):
            os.kill(int((pg.pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
            out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 3, out
        assert "could not be restarted after 2 attempts" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_an_external_postgres_that_dies_means_503s_until_it_is_back(tmp_path: Path) -> None:
    external = EmbeddedPostgres(tmp_path / "external")  # stands for any external Postgres
    external.start()
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=tmp_path / "server",
        database_url=external.url(),
        gateway_port=free_port(),
    )
    running = start_server(settings)
    hurt = Faulty(running, external)
    try:
        before = hurt.ok("SELECT count(*) FROM items")
        hurt.kill_postmaster()
        hurt.wait_refusing()
        for _ in range(5):
            started = time.monotonic()
            r = hurt.query("SELECT count(*) FROM items")
            assert time.monotonic() - started < FAST_S, "the query hung"
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "postgres_unavailable"

        def says_refused() -> bool:
            postgres = hurt.health()["postgres"]
            return postgres["ok"] is False and postgres["error"] == "connection refused"

        wait_until(says_refused, 10, "health to say why")
        assert hurt.query("SELECT 1").status_code == 503
        assert not external.is_running()  # not ours to restart

        external.restart()  # its operator brings it back
        hurt.wait_recovered()
        assert hurt.ok("SELECT count(*) FROM items") == before
        with psycopg.connect(hurt.gateway_dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone() == tuple(before[0])
    finally:
        hurt.close()
        running.stop()
        external.stop()
