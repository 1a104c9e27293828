"""Reducer events in the realtime stream: a transaction that wrote a reducer event (a
``millpond.reducer`` logical message, as a module's worker writes it) reaches subscribers
with its rows and the event in one ``transaction`` message; a rolled-back one reaches no
one; a malformed event is dropped, not relayed; and no SQL but the reducer role's may
write such a message, so a tenant cannot forge one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from websockets.sync.client import ClientConnection, connect

from millpond import Millpond
from millpond.client.realtime import ReducerEvent
from millpond.server.modules import events
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.postgres.provision import DatabaseRoles, role_password
from millpond.server.testing import ServerThread

from ._tenant import Tenant, make_tenant

EVENT = {
    "reducer": "send_message",
    "args": ["hi"],
    "sender": "ab" * 32,
    "connection_id": None,
    "request_id": "req-1",
    "timestamp": "2026-12-02T00:00:00+00:00",
    "status": "committed",
}


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def next(self, kind: str) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(self.ws.recv(timeout=10))
            if message["type"] == kind:
                return message
            assert message["type"] == "ping", message

    def subscribe(self, sql_text: str) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "subscribe", "request_id": "r", "queries": [sql_text]}))
        return self.next("subscription_applied")


@pytest.fixture(scope="module")
def tenant(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Tenant:
    t = make_tenant(server, make_user, prefix="rev")
    t.ok("CREATE TABLE msgs (id int8 PRIMARY KEY, body text)")
    return t


def _reducer_conn(server: ServerThread, pg_name: str) -> psycopg.Connection[tuple[object, ...]]:
    """A session as the database's reducer role (a module's worker connects as it)."""
    pg = EmbeddedPostgres(server.settings.data_dir)
    with psycopg.connect(pg.url(server.settings.control_database)) as conn:
        row = conn.execute("SELECT value FROM server_state WHERE key = 'role_secret'").fetchone()
    assert row is not None
    role = DatabaseRoles(pg_name).role("reducer")
    params = conninfo_to_dict(pg.url(pg_name))
    params.update(user=role, password=role_password(str(row[0]).encode(), role))
    return psycopg.connect(make_conninfo(**params))


@pytest.fixture
def sock(server: ServerThread, tenant: Tenant) -> Iterator[Socket]:
    url = server.url.replace("http://", "ws://") + f"/v1/realtime/{tenant.database}"
    headers = {"Authorization": f"Bearer {tenant.key}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        s = Socket(ws)
        s.next("hello")
        s.subscribe("SELECT * FROM msgs")
        yield s


def _write(conn: psycopg.Connection[tuple[object, ...]], row_id: int, event: object) -> None:
    conn.execute("INSERT INTO msgs VALUES (%s, 'x')", (row_id,))
    content = event if isinstance(event, str) else events.encode(event)  # type: ignore[arg-type]
    conn.execute(
        "SELECT pg_catalog.pg_logical_emit_message(true, %s, %s)", (events.PREFIX, content)
    )


def test_rows_and_their_event_arrive_together(
    server: ServerThread, tenant: Tenant, sock: Socket
) -> None:
    with _reducer_conn(server, tenant.pg_name) as conn:
        _write(conn, 1, EVENT)
        conn.commit()
        with conn.transaction(force_rollback=True):  # rolled back: reaches no one
            _write(conn, 2, EVENT)
        _write(conn, 3, "not json")  # malformed: the rows go, the event does not
        conn.commit()
        _write(conn, 4, {**EVENT, "sender": 5})
        conn.commit()
    tenant.ok("INSERT INTO msgs VALUES (5, 'plain SQL')")
    first = sock.next("transaction")
    assert first["tables"]["msgs"]["inserts"] == [{"id": 1, "body": "x"}]
    assert first["reducer"] == EVENT
    for row_id in (3, 4, 5):
        message = sock.next("transaction")
        assert [r["id"] for r in message["tables"]["msgs"]["inserts"]] == [row_id]
        assert "reducer" not in message


@pytest.mark.parametrize("which", ["owner", "rw", "ro"])
def test_no_other_role_may_write_a_reducer_event(tenant: Tenant, which: str) -> None:
    """Over HTTP (the owner's key: its rw or owner role) and as each role directly."""
    sql_text = f"SELECT pg_catalog.pg_logical_emit_message(true, '{events.PREFIX}', '{{}}')"
    r = tenant.query(sql_text)
    assert r.status_code == 400 and "permission denied" in r.text
    with tenant.superuser() as conn:
        conn.execute(f'SET ROLE "{tenant.role(which)}"')
        for function in ("text", "bytea"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(
                    "SELECT pg_catalog.pg_logical_emit_message(true, 'millpond.reducer',"
                    f" '{{}}'::{function})"
                )


def test_the_event_shape_is_checked() -> None:
    assert events.decode(events.encode(EVENT).encode()) == EVENT
    assert events.decode(json.dumps({**EVENT, "args": {"text": "hi"}}).encode()) is not None
    for bad in (
        b"[]",
        b"{",
        json.dumps({**EVENT, "reducer": None}).encode(),
        json.dumps({**EVENT, "args": "x"}).encode(),
        b"x" * (events.MAX_EVENT_BYTES + 1),
    ):
        assert events.decode(bad) is None


def test_the_sdk_gives_row_callbacks_and_on_reducer_the_event(
    server: ServerThread, tenant: Tenant
) -> None:
    seen: list[tuple[str, object]] = []
    with (
        Millpond(tenant.key, server.url) as mp,
        mp.realtime(tenant.database, callbacks="update") as rt,
    ):
        rt.subscribe(["SELECT * FROM msgs WHERE id >= 100"])
        rt.table("msgs").on_row_update(
            lambda op, old, new, event: seen.append(("row", event.reducer))
        )
        rt.on_reducer("send_message", lambda event: seen.append(("reducer", event.reducer)))
        rt.on_reducer("other", lambda event: seen.append(("other", event.reducer)))
        with _reducer_conn(server, tenant.pg_name) as conn:
            _write(conn, 100, EVENT)
            conn.commit()
        tenant.ok("INSERT INTO msgs VALUES (101, 'plain SQL')")
        deadline = time.monotonic() + 15
        while len(seen) < 3 and time.monotonic() < deadline:
            rt.update(0.05)
    event = ReducerEvent(
        name="send_message",
        args=["hi"],
        sender="ab" * 32,
        connection_id=None,
        request_id="req-1",
        timestamp=datetime(2026, 12, 2, tzinfo=UTC),
        status="committed",
    )
    assert seen == [("row", event), ("reducer", event), ("row", None)]
