"""Clusters across two ``millpond up`` replicas on one control database: a cluster added
on one replica is used by the other, and a database moved by one is served from its new
cluster by the other — its HTTP queries, its reducer calls, its realtime subscribers and
its gateway connections — with nothing left pointing at the old cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from tests.client_realtime.test_failover import Replica
from tests.modules.test_lifecycle import MODULE as LOBBY
from tests.modules.test_service import two_replicas

from _waiting import wait_until
from millpond import Millpond
from millpond.backoff import Backoff
from millpond.server.postgres.embedded import EmbeddedPostgres

from .test_clusters import MODULE

FAST = Backoff(base=0.05, cap=0.3)
USERS = (
    'SELECT online, connects, disconnects, (SELECT count(*) FROM millpond_connections) FROM "user"'
)


def _call(url: str, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=120, **kw
    )


@contextlib.contextmanager
def _two_clusters(tmp_path: Path) -> Iterator[tuple[Replica, Replica, str, EmbeddedPostgres]]:
    """Two replicas on one control database (A's admin key), and a second Postgres
    registered through A as the cluster ``two``."""
    second = EmbeddedPostgres(tmp_path / "second")
    second.start()
    try:
        with two_replicas(tmp_path, MILLPOND_PLACEMENT="home") as (a, b):
            key = (a.data_dir / "admin-key").read_text().strip()
            r = _call(a.url, key, "POST", "/v1/clusters", json={"url": second.url(), "name": "two"})
            assert r.status_code == 201, r.text
            yield a, b, key, second
    finally:
        second.stop()


def _gateway(port: int, key: str, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="admin",
        password=key,
        dbname=database,
        sslmode="disable",
        autocommit=True,
    )


def test_a_database_moved_through_one_replica_is_served_from_its_new_cluster_by_the_other(
    tmp_path: Path,
) -> None:
    with _two_clusters(tmp_path) as (a, b, key, second):
        # B never heard of the cluster: it learns it from the first database placed there
        r = _call(b.url, key, "POST", "/v1/databases", json={"name": "far", "cluster": "two"})
        assert r.status_code == 201, r.text
        r = _call(a.url, key, "POST", "/v1/databases", json={"name": "moves"})
        assert r.status_code == 201, r.text
        full, pg_name = r.json()["full_name"], f"mp_db_{r.json()['id']}"
        r = _call(
            b.url, key, "POST", f"/v1/databases/{full}/module", json={"files": {"m.py": MODULE}}
        )
        assert r.status_code == 201, r.text
        for i in (1, 2):
            r = _call(
                b.url,
                key,
                "POST",
                f"/v1/databases/{full}/call/add",
                json={"id": i, "label": f"l{i}"},
            )
            assert r.status_code == 200, r.text

        with Millpond(key, b.url) as mp, mp.realtime(full, reconnect_backoff=FAST) as rt:
            rt.subscribe(["SELECT * FROM item"])
            assert rt.db.item.count() == 2
            gateway = _gateway(b.gateway_port, key, full)
            r = _call(a.url, key, "POST", f"/v1/databases/{full}/move", json={"cluster": "two"})
            assert r.status_code == 200, r.text
            # B's gateway session went with the fence; a new one reaches the new cluster
            with gateway, pytest.raises(psycopg.OperationalError):
                gateway.execute("SELECT 1")
            with _gateway(b.gateway_port, key, full) as conn:
                assert conn.execute("SELECT count(*) FROM item").fetchone() == (2,)
            # B's reducer workers and pools follow the database
            r = _call(
                b.url,
                key,
                "POST",
                f"/v1/databases/{full}/call/add",
                json={"id": 3, "label": "l3"},
            )
            assert r.status_code == 200, r.text
            r = _call(
                b.url,
                key,
                "POST",
                "/v1/query",
                json={"database": full, "sql": "SELECT count(*) FROM item"},
            )
            assert r.status_code == 200 and r.json()["data"] == [[3]], r.text
            # B's subscriber came back and streams from the new cluster
            wait_until(lambda: rt.db.item.count() == 3, step=lambda: rt.update(0.1), timeout=60)
        with psycopg.connect(second.url(pg_name), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM item").fetchone() == (3,)
        with psycopg.connect(EmbeddedPostgres(tmp_path / "pg").url(), autocommit=True) as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (pg_name + "%",)
            ).fetchall()
        assert left == [], "the source is dropped, fenced copy included"


def test_a_connection_the_fence_cuts_on_the_other_replica_gets_its_disconnect(
    tmp_path: Path,
) -> None:
    """B's realtime connection ends when the fence ends its change stream, while the
    database can run no reducer: the move runs its ``client_disconnected`` on the copy,
    before the switch, so it comes before the reconnection's ``client_connected``."""
    with _two_clusters(tmp_path) as (a, b, key, _):
        r = _call(a.url, key, "POST", "/v1/databases", json={"name": "lobby"})
        full = r.json()["full_name"]
        r = _call(
            a.url, key, "POST", f"/v1/databases/{full}/module", json={"files": {"m.py": LOBBY}}
        )
        assert r.status_code == 201, r.text

        def users() -> Any:
            r = _call(a.url, key, "POST", "/v1/query", json={"database": full, "sql": USERS})
            return r.json().get("data")

        with Millpond(key, b.url) as mp, mp.realtime(full, reconnect_backoff=FAST) as rt:
            rt.subscribe(['SELECT * FROM "user"'])
            assert users() == [[True, 1, 0, 1]]
            r = _call(a.url, key, "POST", f"/v1/databases/{full}/move", json={"cluster": "two"})
            assert r.status_code == 200, r.text
            # the disconnect ran in the move, before the client's reconnection
            wait_until(lambda: users() == [[True, 2, 1, 1]], timeout=60)
        wait_until(lambda: users() == [[False, 2, 2, 0]], timeout=60)
