"""Connections that fail: heartbeats and silence, close codes that reconnect and those
that are fatal, refused handshakes, unreachable servers (a scripted fake server); and a
real server stopped and started again while rows change (the cache is reconciled)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from _waiting import wait_until
from millpond import ConnectError, Millpond, RealtimeError
from millpond.backoff import Backoff
from millpond.client.realtime import ConnectInfo, DisconnectInfo, Row
from millpond.server.config import Settings
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import free_port, start_server

from .conftest import FAST, SCHEMA, make_database
from .fake import FakeServer, Peer

QUERY = "SELECT * FROM msgs"
COLUMNS = [{"name": "id", "type": "int8"}, {"name": "body", "type": "text"}]


async def applied(peer: Peer, rows: list[dict[str, Any]], query_id: str) -> dict[str, Any]:
    """Answer the client's subscribe with ``rows``."""
    request = await peer.next("subscribe")
    await peer.send(
        type="subscription_applied",
        request_id=request["request_id"],
        queries=[{"query_id": query_id, "sql": q, "table": "msgs"} for q in request["queries"]],
        tables={"msgs": {"columns": COLUMNS, "key": ["id"], "rows": rows}},
    )
    return request


def test_silence_drops_the_connection_and_pings_keep_it(tmp_path: Path) -> None:
    async def handler(peer: Peer) -> None:
        await peer.hello()
        if peer.number == 0:
            await peer.ws.wait_closed()  # says nothing, answers nothing
        else:
            await peer.serve_pings()

    with FakeServer(handler) as fake, Millpond("mp_key", fake.url) as mp:
        rt = mp.realtime("me/db", heartbeat_interval=0.25, reconnect_backoff=FAST)
        with rt:
            infos: list[Any] = []
            rt.on_disconnect(infos.append)
            rt.on_connect(infos.append)
            wait_until(lambda: len(infos) >= 3, step=lambda: rt.update(0.05))
            first, drop, again = infos[:3]
            assert isinstance(first, ConnectInfo) and not first.reconnect  # queued: not missed
            assert isinstance(drop, DisconnectInfo) and drop.reconnecting
            assert "heartbeat" in drop.reason
            assert isinstance(again, ConnectInfo) and again.reconnect
            time.sleep(1.0)  # four intervals: pings answered, the connection stays
            rt.update()
            assert rt.connected and len(infos) == 3
            assert sum(1 for m in fake.log if m["type"] == "ping") >= 3
        headers = {k.lower(): v for k, v in fake.headers[0].items()}
        assert headers["authorization"] == "Bearer mp_key"
        assert headers["sec-websocket-protocol"] == "millpond.v1.json"
        assert headers["user-agent"].startswith("millpond-python/")
        assert fake.paths[0] == "/v1/realtime/me/db"
        assert fake.failures == []


@pytest.mark.parametrize("code", [4008, 4009, 4010, 4011, 1011, 1000])
def test_close_codes_that_reconnect(code: int) -> None:
    async def handler(peer: Peer) -> None:
        await peer.hello()
        if peer.number == 0:
            await applied(peer, [{"id": 1, "body": "a"}, {"id": 2, "body": "b"}], "qa")
            await peer.ws.close(code, "bye")
        else:
            request = await applied(peer, [{"id": 2, "body": "B"}, {"id": 3, "body": "c"}], "qb")
            assert request["queries"] == [QUERY]
            await peer.serve_pings()

    with FakeServer(handler) as fake, Millpond("mp_key", fake.url) as mp:
        with mp.realtime("me/db", reconnect_backoff=FAST, callbacks="thread") as rt:
            seen: list[tuple[str, Any, Any]] = []
            rt.db.msgs.on_row_update(lambda op, old, new, event: seen.append((op, old, new)))
            closes: list[DisconnectInfo] = []
            rt.on_disconnect(closes.append)
            (qid,) = rt.subscribe(QUERY)
            assert qid == "qa"
            wait_until(lambda: fake.connections == 2 and {r.id for r in rt.db.msgs} == {2, 3})
            assert closes[0].code == code and closes[0].reconnecting
            assert rt.queries == {"qa": QUERY}  # the id stays
            assert rt.db.msgs.find(2) == Row({"id": 2, "body": "B"})
            after = sorted((op, old and dict(old), new and dict(new)) for op, old, new in seen[2:])
            assert after == [
                ("delete", {"id": 1, "body": "a"}, None),
                ("insert", None, {"id": 3, "body": "c"}),
                ("update", {"id": 2, "body": "b"}, {"id": 2, "body": "B"}),
            ]
        assert fake.failures == []


def test_a_fatal_close_code_stops_the_client() -> None:
    async def handler(peer: Peer) -> None:
        await peer.hello()
        if peer.number == 0:
            await peer.ws.close(4011, "stream_failed")
        else:
            await peer.next("subscribe")
            await peer.ws.close(4004, "database_not_found")

    with FakeServer(handler) as fake, Millpond("mp_key", fake.url) as mp:
        with mp.realtime("me/db", reconnect_backoff=FAST, callbacks="thread") as rt:
            errors: list[BaseException] = []
            rt.on_error(errors.append)
            with pytest.raises(RealtimeError) as info:
                rt.subscribe(QUERY)  # waits through the first drop, then fails for good
            assert info.value.close_code == 4004 and info.value.code == "database_not_found"
            wait_until(lambda: len(errors) == 1)
            assert errors[0] is info.value and rt.closed and not rt.connected
            time.sleep(0.3)
            assert fake.connections == 2  # no more attempts
            with pytest.raises(RealtimeError):
                rt.subscribe(QUERY)
        assert fake.failures == []


def test_refused_handshakes_and_unreachable_servers() -> None:
    async def never(peer: Peer) -> None:
        raise AssertionError("refused handshakes have no connection")

    with FakeServer(never, refuse=404) as fake, Millpond("mp_key", fake.url) as mp:
        with pytest.raises(RealtimeError) as info:
            mp.realtime("me/db")
        assert info.value.code == "http_404"
    with FakeServer(never, refuse=503) as fake, Millpond("mp_key", fake.url) as mp:
        start = time.monotonic()
        with pytest.raises(RealtimeError, match="after 3 attempts") as info:
            mp.realtime("me/db", max_retries=2, reconnect_backoff=FAST)  # 503: try again
        assert info.value.code == "unreachable" and fake.connections == 0
        assert len(fake.paths) == 3 and time.monotonic() - start < 5
    unreachable = f"http://127.0.0.1:{free_port()}"
    with Millpond("mp_key", unreachable) as mp, pytest.raises(ConnectError, match=r"within 0\.5 s"):
        mp.realtime("me/db", timeout=0.5, reconnect_backoff=FAST)


def test_async_connect_and_close_twice() -> None:
    async def handler(peer: Peer) -> None:
        await peer.hello()
        await peer.serve_pings()

    async def main(url: str) -> None:
        from millpond import AsyncMillpond

        async with AsyncMillpond("mp_key", url) as amp:
            rt = await amp.realtime("me/db")
            assert rt.connected and rt.connection_id == "c0"
            await rt.aclose()
            await rt.aclose()  # twice is fine

    with FakeServer(handler) as fake:
        asyncio.run(main(fake.url))
        assert fake.failures == []


def test_reconnect_after_a_server_restart(tmp_path: Path) -> None:
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=tmp_path / "data",
        statement_timeout_ms=5000,
        realtime_idle_seconds=0.5,
        gateway_port=free_port(),
    )
    running = start_server(settings)
    try:
        r = httpx.post(
            f"{running.url}/v1/users",
            json={"username": "restart"},
            headers={"Authorization": f"Bearer {running.admin_key}"},
        )
        r.raise_for_status()
        key = r.json()["api_key"]["secret"]
        db = make_database(
            running.url, running.admin_key, "restart", key, settings.data_dir, SCHEMA
        )
        db.sql("INSERT INTO msgs SELECT i, 7, 'v1', i FROM generate_series(1, 6) i")
        with (
            Millpond(key, running.url) as mp,
            mp.realtime(db.name, reconnect_backoff=Backoff(base=0.1, cap=0.5)) as rt,
        ):
            ids = rt.subscribe(["SELECT * FROM msgs WHERE room = 7"])
            assert rt.db.msgs.count() == 6
            log: list[Any] = []
            rt.on_connect(lambda info: log.append(("connect", info.reconnect)))
            rt.on_disconnect(lambda info: log.append(("disconnect", info.code)))
            rt.on_subscription_applied(lambda event: log.append((event.kind, event.query_ids)))
            changes: list[tuple[str, int, str]] = []
            rt.db.msgs.on_row_update(
                lambda op, old, new, event: changes.append(
                    (op, (new or old).id, event.kind)  # type: ignore[union-attr]
                )
            )

            running.stop()
            wait_until(lambda: not rt.connected, timeout=60, step=lambda: rt.update(0.1))
            # while the server is down, its Postgres alone: rows change behind its back
            pg = EmbeddedPostgres(settings.data_dir)
            pg.start()
            try:
                with psycopg.connect(pg.url(db.pg_name)) as conn:
                    conn.execute("UPDATE msgs SET body = 'v2' WHERE id = 2")
                    conn.execute("DELETE FROM msgs WHERE id = 3")
                    conn.execute("UPDATE msgs SET room = 8 WHERE id = 4")  # leaves the query
                    conn.execute("INSERT INTO msgs VALUES (7, 7, 'new', 7), (8, 8, 'no', 8)")
            finally:
                pg.stop()
            running = start_server(settings)

            def reconciled() -> bool:
                return {r.id for r in rt.db.msgs} == {1, 2, 5, 6, 7}

            wait_until(reconciled, timeout=60, step=lambda: rt.update(0.1))
            assert sorted(changes) == [
                ("delete", 3, "resubscribe"),
                ("delete", 4, "resubscribe"),
                ("insert", 7, "resubscribe"),
                ("update", 2, "resubscribe"),
            ]
            assert rt.db.msgs.find(2) == {"id": 2, "room": 7, "body": "v2", "score": "2"}
            assert log[0][0] == "disconnect" and log[-2:] == [
                ("connect", True),
                ("resubscribe", tuple(ids)),
            ]
            assert list(rt.queries) == ids
            db.base_url = running.url
            db.sql("UPDATE msgs SET body = 'live' WHERE id = 1")  # and it is live again
            wait_until(
                lambda: (rt.db.msgs.find(1) or {}).get("body") == "live",
                step=lambda: rt.update(0.1),
            )
    finally:
        running.stop()
