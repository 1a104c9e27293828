"""Realtime resources: slots never leak, slow consumers are cut off, a Postgres without
logical WAL is reported clearly."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from _waiting import wait_until
from millpond.server.config import Settings
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.realtime.replication import StreamStopped
from millpond.server.testing import ServerThread, free_port, start_server

MakeUser = Callable[..., tuple[str, str]]


def _setup(base_url: str, make_user: MakeUser, sql: str) -> tuple[str, str, str]:
    """A new user's database with ``sql`` run in it: (full name, key, Postgres name)."""
    user, key = make_user(prefix="life")
    headers = {"Authorization": f"Bearer {key}"}
    httpx.post(f"{base_url}/v1/databases", json={"name": "db"}, headers=headers).raise_for_status()
    r = httpx.post(
        f"{base_url}/v1/query",
        json={"database": f"{user}/db", "sql": sql + "; SELECT current_database()"},
        headers=headers,
    )
    r.raise_for_status()
    return f"{user}/db", key, r.json()["data"][0][0]


def _slots(server: ServerThread, pg_name: str) -> list[str]:
    with psycopg.connect(EmbeddedPostgres(server.settings.data_dir).url()) as conn:
        rows = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (pg_name,)
        ).fetchall()
    return [r[0] for r in rows]


def _ws(base_url: str, db: str, key: str) -> object:
    url = base_url.replace("http://", "ws://") + f"/v1/realtime/{db}"
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"})


def test_the_slot_goes_when_the_last_subscriber_does(
    server: ServerThread, base_url: str, make_user: MakeUser
) -> None:
    db, key, pg_name = _setup(base_url, make_user, "CREATE TABLE t (id int PRIMARY KEY)")
    assert _slots(server, pg_name) == []
    with _ws(base_url, db, key) as ws:  # type: ignore[attr-defined]
        ws.recv(timeout=10)
        ws.send(
            json.dumps({"type": "subscribe", "request_id": "1", "queries": ["SELECT * FROM t"]})
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "subscription_applied"
        (slot,) = _slots(server, pg_name)
        assert slot.startswith("millpond_")
    deadline = time.monotonic() + 15  # idle period (0.5 s in tests) and the stream's end
    while _slots(server, pg_name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _slots(server, pg_name) == []


class RawClient:
    """A WebSocket client on a bare socket with a 64 KiB receive buffer that reads only
    when told to: a consumer as slow as can be (client libraries buffer in memory, and
    loopback TCP would absorb tens of MB)."""

    def __init__(self, base_url: str, path: str, key: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.connect((host, int(port)))
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        assert self.buffer.startswith(b"HTTP/1.1 101")

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def read_until(self, marker: bytes, timeout: float) -> None:
        """Read (into the buffer) until ``marker`` has arrived."""
        self.sock.settimeout(timeout)
        while marker not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, f"the connection ended before {marker!r}: {self.buffer[-300:]!r}"
            self.buffer += chunk

    def read_all(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        data = self.buffer
        try:
            while chunk := self.sock.recv(1 << 20):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return data


def test_a_slow_consumer_is_disconnected(
    server: ServerThread, base_url: str, make_user: MakeUser
) -> None:
    db, key, pg_name = _setup(
        base_url, make_user, "CREATE TABLE big (id serial PRIMARY KEY, body text)"
    )
    client = RawClient(base_url, f"/v1/realtime/{db}", key)
    client.send_text(
        json.dumps({"type": "subscribe", "request_id": "1", "queries": ["SELECT * FROM big"]})
    )
    client.read_until(b'"subscription_applied"', timeout=30)  # then read nothing more
    # the test server buffers 1 MiB per connection, the kernel a few more: write ~12 MB
    url = EmbeddedPostgres(server.settings.data_dir).url(pg_name)
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(12):
            conn.execute(
                "INSERT INTO big (body) SELECT repeat('x', 100000) FROM generate_series(1, 10)"
            )
    data = client.read_all(timeout=20)
    client.sock.close()
    # the close frame: opcode 8, then the code 4008 (0x0FA8) and the reason
    assert b"\x0f\xa8slow_consumer" in data
    assert len(data) < 9_000_000, "the server dropped what it had not sent"


def test_postgres_without_logical_wal_is_reported(tmp_path: Path) -> None:
    external = EmbeddedPostgres(tmp_path / "pg")
    external.start()
    try:
        with psycopg.connect(external.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET wal_level = replica")
        conf = external.pgdata / "millpond.conf"  # our file would set it back to logical
        conf.write_text(conf.read_text().replace("wal_level = logical", "wal_level = replica"))
        external.stop()
        external._write_conf = lambda: None  # type: ignore[method-assign]
        external.start()
        settings = Settings(
            port=free_port(),
            data_dir=tmp_path / "data",
            database_url=external.url(),
            gateway_port=free_port(),
        )
        running = start_server(settings)
        try:
            headers = {"Authorization": f"Bearer {running.admin_key}"}
            httpx.post(f"{running.url}/v1/databases", json={"name": "w"}, headers=headers)
            httpx.post(
                f"{running.url}/v1/query",
                json={"database": "admin/w", "sql": "CREATE TABLE t (id int PRIMARY KEY)"},
                headers=headers,
            ).raise_for_status()
            with _ws(running.url, "admin/w", running.admin_key) as ws:  # type: ignore[attr-defined]
                ws.recv(timeout=10)
                ws.send(
                    json.dumps(
                        {"type": "subscribe", "request_id": "1", "queries": ["SELECT * FROM t"]}
                    )
                )
                error = json.loads(ws.recv(timeout=10))
                assert error["type"] == "error" and error["code"] == "realtime_unavailable"
                assert "wal_level=logical" in error["message"]
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=10)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4012
        finally:
            running.stop()
    finally:
        external.stop()


def _sessions(server: ServerThread, pg_name: str, where: str) -> list[int]:
    with psycopg.connect(EmbeddedPostgres(server.settings.data_dir).url()) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND " + where, (pg_name,)
        ).fetchall()
    return [r[0] for r in rows]


_BARRIER = "query LIKE '%%pg_logical_emit_message%%' AND pid <> pg_backend_pid()"
_WALSENDER = "backend_type = 'walsender'"


def test_a_stream_that_ends_closes_its_sessions_and_is_not_started_again(
    server: ServerThread, base_url: str, make_user: MakeUser
) -> None:
    """The stream ends under its subscribers (its walsender terminated): they are told
    4011, the hub's barrier session is closed with it (it used to linger until garbage
    collected), and a subscribe still holding the old hub gets an error instead of
    starting a stream nobody would stop."""
    db, key, pg_name = _setup(base_url, make_user, "CREATE TABLE t (id int PRIMARY KEY)")
    with _ws(base_url, db, key) as ws:  # type: ignore[attr-defined]
        ws.recv(timeout=10)
        ws.send(
            json.dumps({"type": "subscribe", "request_id": "1", "queries": ["SELECT * FROM t"]})
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "subscription_applied"
        hub = server.server.config.app.state.services.realtime.hubs[pg_name]
        assert hub._task is not None
        loop = hub._task.get_loop()
        asyncio.run_coroutine_threadsafe(hub._barrier.emit(), loop).result(10)
        assert len(_sessions(server, pg_name, _BARRIER)) == 1
        with psycopg.connect(EmbeddedPostgres(server.settings.data_dir).url()) as conn:
            for pid in _sessions(server, pg_name, _WALSENDER):
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4011
    wait_until(lambda: not _sessions(server, pg_name, _BARRIER), what="the barrier to close")
    for again in (hub.ensure_started(), hub._barrier.emit()):
        with pytest.raises(StreamStopped):
            asyncio.run_coroutine_threadsafe(again, loop).result(10)
    # the terminated walsender leaves pg_stat_activity when its process has exited, which
    # can be after the hub saw its connection end; no other starts (nor its slot)
    wait_until(lambda: not _sessions(server, pg_name, _WALSENDER), what="the walsender to exit")
    wait_until(lambda: not _slots(server, pg_name), what="its slot to go")
    assert _sessions(server, pg_name, _WALSENDER) == []
