"""The flags live stream (``/v1/flags/stream``): the realtime protocol over the control
database's flag tables, confined to one environment, fed by the WAL so changes made any
way (API, SQL by hand) arrive in commit order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ._helpers import ok
from .conftest import Account, Env, MakeAccount, MakeEnv, Superuser


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def next(self, kind: str | None = None, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message["type"] == "ping":
                continue
            if kind is None or message["type"] == kind:
                return dict(message)
            raise AssertionError(f"expected {kind}, got {message}")

    def subscribe(self, *queries: str, request_id: str = "r1") -> dict[str, Any]:
        self.send(type="subscribe", request_id=request_id, queries=list(queries))
        return self.next()


def _url(base_url: str, environment: str | None = None) -> str:
    url = base_url.replace("http://", "ws://") + "/v1/flags/stream"
    return url + (f"?environment={environment}" if environment else "")


def _open(base_url: str, key: str | None, environment: str | None = None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(_url(base_url, environment), additional_headers=headers, open_timeout=10)


def _closed_with(base_url: str, key: str | None, environment: str | None = None) -> str:
    with _open(base_url, key, environment) as ws, pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    return f"{info.value.rcvd.code} {info.value.rcvd.reason}"


def _bound_key(env: Env, scope: str = "read") -> str:
    made = env.ok("POST", "/keys", 201, json={"scope": scope, "name": "stream"})
    return str(made["secret"])


@pytest.fixture
def sock(base_url: str, env: Env) -> Iterator[Socket]:
    with _open(base_url, _bound_key(env)) as ws:
        s = Socket(ws)
        hello = s.next("hello")
        assert hello["environment_id"] == env.id
        yield s


def _rulesets(env: Env) -> str:
    return f"SELECT * FROM flag_rulesets WHERE environment_id = '{env.id}'"


def test_rules_arrive_then_every_change_in_order(sock: Socket, env: Env) -> None:
    env.ok("POST", "/flags", 201, json={"key": "a", "default_value": True})
    applied = sock.subscribe(_rulesets(env))
    assert applied["type"] == "subscription_applied", applied
    rows = applied["tables"]["flag_rulesets"]["rows"]
    assert [(r["flag_key"], r["ruleset"]["flag"]["default_value"]) for r in rows] == [("a", True)]

    env.ok("POST", "/flags", 201, json={"key": "b"})
    env.ok("PATCH", "/flags/a", json={"default_value": False})
    env.ok("DELETE", "/flags/b", 204)
    seen = []
    for _ in range(3):
        tx = sock.next("transaction")
        assert set(tx["tables"]) == {"flag_rulesets"}
        for table in tx["tables"].values():
            seen += [("insert", r["flag_key"]) for r in table.get("inserts", [])]
            seen += [
                ("update", u["new"]["flag_key"], u["new"]["ruleset"]["flag"]["default_value"])
                for u in table.get("updates", [])
            ]
            seen += [("delete", r["flag_key"]) for r in table.get("deletes", [])]
    # a soft delete is an update that sets deleted_at
    assert seen[:2] == [("insert", "b"), ("update", "a", False)]
    assert seen[2][:2] == ("update", "b")


def test_changes_made_in_sql_reach_the_stream(
    sock: Socket, env: Env, control_db: Superuser
) -> None:
    env.ok("POST", "/flags", 201, json={"key": "a"})
    sock.subscribe(_rulesets(env))
    with control_db() as conn:
        conn.execute(
            "UPDATE flag_rulesets SET version = version + 1000 WHERE environment_id = %s",
            (env.id,),
        )
    tx = sock.next("transaction")
    (update,) = tx["tables"]["flag_rulesets"]["updates"]
    assert update["new"]["version"] == update["old"]["version"] + 1000


def test_companies_users_and_metrics_by_their_rows(sock: Socket, env: Env) -> None:
    company = env.ok("POST", "/companies", 201, json={"keys": {"id": "acme"}, "traits": {"n": 1}})
    applied = sock.subscribe(
        f"SELECT * FROM flag_company_keys WHERE environment_id = '{env.id}'"
        " AND name = 'id' AND value = 'acme'",
        f"SELECT * FROM flag_companies WHERE environment_id = '{env.id}'"
        f" AND id = '{company['id']}'",
        f"SELECT * FROM flag_metrics WHERE environment_id = '{env.id}'"
        f" AND entity_id = '{company['id']}'",
    )
    by_table = {name: t["rows"] for name, t in applied["tables"].items()}
    assert by_table["flag_company_keys"][0]["company_id"] == company["id"]
    assert by_table["flag_companies"][0]["traits"] == {"n": 1}
    env.ok(
        "POST",
        "/events",
        json={"events": [{"event_type": "track", "event": "ran", "company": {"id": "acme"}}]},
    )
    tx = sock.next("transaction")
    metrics = tx["tables"]["flag_metrics"]
    periods = {r["period"]: r["count"] for r in metrics["inserts"]}
    assert periods["all_time"] == 1 and set(periods) == {
        "all_time",
        "current_day",
        "current_week",
        "current_month",
    }


def test_queries_outside_the_environment_are_refused(
    sock: Socket, env: Env, make_env: MakeEnv, owner: Account
) -> None:
    other = make_env(owner)
    for query, why in [
        ("SELECT * FROM flag_rulesets", "environment_id"),
        (f"SELECT * FROM flag_rulesets WHERE environment_id = '{other.id}'", "environment_id"),
        (
            f"SELECT * FROM flag_rulesets WHERE environment_id = '{env.id}'"
            f" OR environment_id = '{other.id}'",
            "environment_id",
        ),
        (
            f"SELECT * FROM flag_rulesets WHERE environment_id IN ('{env.id}', '{other.id}')",
            "environment_id",
        ),
        (f"SELECT * FROM api_keys WHERE environment_id = '{env.id}'", "serves only"),
        (f"SELECT * FROM flag_events WHERE environment_id = '{env.id}'", "serves only"),
        ("SELECT * FROM users", "serves only"),
    ]:
        error = sock.subscribe(query)
        assert error["type"] == "error" and error["code"] == "permission_denied", (query, error)
        assert why in error["message"]
    # the connection is still usable
    assert sock.subscribe(_rulesets(env))["type"] == "subscription_applied"


def test_who_may_open_a_stream(
    base_url: str, env: Env, make_env: MakeEnv, make_account: MakeAccount
) -> None:
    assert _closed_with(base_url, None) == "4001 unauthorized"
    assert _closed_with(base_url, "mp_" + "x" * 40) == "4001 unauthorized"
    # an account key must name the environment; then read access is enough
    assert _closed_with(base_url, env.owner.read_key) == "4000 environment_required"
    with _open(base_url, env.owner.read_key, env.id) as ws:
        assert Socket(ws).next("hello")["environment_id"] == env.id
    with _open(base_url, env.owner.key, env.name) as ws:  # by name too
        assert Socket(ws).next("hello")["environment_id"] == env.id
    stranger = make_account()
    assert _closed_with(base_url, stranger.key, env.id) == "4004 environment_not_found"
    # a bound key cannot reach another environment of the same account
    sibling = make_env(env.owner)
    assert _closed_with(base_url, _bound_key(env), sibling.id) == "4003 environment_forbidden"


def test_a_bound_key_cannot_use_the_database_realtime_endpoint(
    base_url: str, env: Env, call: Any
) -> None:
    db = ok(call("POST", "/v1/databases", env.owner.key, json={"name": "rtx"}), 201)
    url = base_url.replace("http://", "ws://") + f"/v1/realtime/{db['full_name']}"
    headers = {"Authorization": f"Bearer {_bound_key(env)}"}
    with connect(url, additional_headers=headers) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4003
