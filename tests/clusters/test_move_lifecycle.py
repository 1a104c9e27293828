"""A move cuts every realtime connection of the database: each still gets its one
``client_disconnected`` (run once the database is served from its new cluster), and the
reconnected client its ``client_connected`` there — the chat example's ``online`` ends
right."""

from __future__ import annotations

from typing import Any

from tests.modules.test_lifecycle import MODULE

from _waiting import wait_until
from millpond import Millpond
from millpond.backoff import Backoff

from .conftest import Env

FAST = Backoff(base=0.05, cap=0.3)


def _users(env: Env, full: str) -> list[Any]:
    return list(env.sql(full, 'SELECT online, connects, disconnects FROM "user"')["data"])


def _connections(env: Env, full: str) -> int:
    return int(env.sql(full, "SELECT count(*) FROM millpond_connections")["data"][0][0])


def test_connections_cut_by_a_move_get_their_disconnect_and_connect_again(env: Env) -> None:
    db = env.database("lobby")
    full = db["full_name"]
    r = env("POST", f"/v1/databases/{full}/module", json={"files": {"m.py": MODULE}})
    assert r.status_code == 201, r.text
    with Millpond(env.key, env.server.url) as mp, mp.realtime(full, reconnect_backoff=FAST) as rt:
        rt.subscribe(['SELECT * FROM "user"'])
        assert _users(env, full) == [[True, 1, 0]]
        r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
        assert r.status_code == 200, r.text
        # the client came back (a connect on the new cluster) and its first connection
        # got its disconnect: one connection recorded, the user online
        wait_until(lambda: _users(env, full) == [[True, 2, 1]], timeout=60)
        assert _connections(env, full) == 1
    wait_until(lambda: _users(env, full) == [[False, 2, 2]], timeout=60)
    assert _connections(env, full) == 0
