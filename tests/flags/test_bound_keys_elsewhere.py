"""A key bound to a flags environment reaches the flags API and /v1/me, nothing else:
not databases, queries, accounts, realtime or the gateway."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from millpond.server.testing import ServerThread


def test_a_bound_key_is_confined_to_flags(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    user, key = make_user(prefix="bound", is_admin=True)  # even an admin's bound key
    with httpx.Client(base_url=server.url, timeout=30) as http:
        owner = {"Authorization": f"Bearer {key}"}
        http.post("/v1/databases", json={"name": "db"}, headers=owner).raise_for_status()
        env = http.post("/v1/flags/environments", json={"name": "prod"}, headers=owner)
        assert env.status_code == 201, env.text
        r = http.post(f"/v1/flags/environments/{env.json()['id']}/keys", json={}, headers=owner)
        assert r.status_code == 201, r.text
        bound = {"Authorization": f"Bearer {r.json()['secret']}"}

        assert http.get("/v1/me", headers=bound).status_code == 200
        assert (
            http.get(f"/v1/flags/environments/{env.json()['id']}", headers=bound).status_code == 200
        )
        for method, path, body in [
            ("GET", "/v1/databases", None),
            ("GET", f"/v1/databases/{user}/db", None),
            ("POST", "/v1/query", {"database": f"{user}/db", "sql": "SELECT 1"}),
            ("GET", "/v1/users", None),
            ("POST", "/v1/keys", {}),
            ("GET", "/v1/service-accounts", None),
        ]:
            r = http.request(method, path, json=body, headers=bound)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "environment_key"

    url = server.url.replace("http://", "ws://") + f"/v1/realtime/{user}/db"
    with connect(url, additional_headers=bound) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4003

    with pytest.raises(psycopg.OperationalError, match="bound to a flags environment"):
        psycopg.connect(
            host="127.0.0.1",
            port=server.settings.gateway_port,
            user="x",
            password=bound["Authorization"].split()[1],
            dbname=f"{user}/db",
            sslmode="disable",
        ).close()
