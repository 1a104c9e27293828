"""What each resource method sends (method, path, query, body) and what it returns,
against the fake server — sync and async through the same table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import pytest

import millpond.cli
from millpond import Millpond
from millpond.models import (
    ApiKey,
    ApiKeyCreated,
    ClusterInfo,
    Collaborator,
    Database,
    DatabaseMoved,
    Health,
    Me,
    QueryResult,
    ServiceAccount,
    User,
    UserCreated,
)

from .conftest import FakeServer, Reply, Run

T0 = "2024-05-01T12:00:00Z"
DATABASE = {
    "id": 1,
    "owner": "alice",
    "name": "db",
    "full_name": "alice/db",
    "is_private": True,
    "created_at": T0,
    "updated_at": T0,
    "role": "owner",
}
COLLABORATOR = {"username": "bob", "role": "write", "created_at": T0}
USER = {"id": 3, "username": "alice", "is_admin": False, "created_at": T0}
KEY = {"id": "k1", "name": "ci", "prefix": "mp_ab", "scope": "write", "created_at": T0}
KEY_CREATED = {**KEY, "secret": "mp_secret"}
CLUSTER = {
    "name": "pg2",
    "home": False,
    "address": "10.0.0.2:5432",
    "state": "active",
    "databases": 3,
    "up": True,
    "postgres": "16.4",
    "created_at": T0,
}
MOVED = {
    "database": "alice/db",
    "source": "default",
    "target": "pg2",
    "bytes": 4096,
    "downtime_ms": 81.5,
}
SA = {"id": 7, "name": "bot", "owner": "alice", "created_at": T0, "key_count": 1}
HEALTH = {"status": "ok", "version": "0.1.0", "postgres": {"ok": True, "mode": "embedded"}}
ME = {"user": USER, "service_account": None, "key": KEY}
QUERY = {
    "columns": [{"name": "one", "type": "int4"}],
    "data": [{"one": 1}],
    "row_count": 1,
    "elapsed_ms": 0.5,
}


@dataclass
class Case:
    id: str
    call: Callable[[Any], Any]
    method: str
    path: str
    json: Any = None
    query: dict[str, list[str]] | None = None
    status: int = 200
    reply: Any = None
    returns: Any = None
    """A type the result is a list of (when in a list) or an instance of; or a value."""


CASES = [
    Case("health", lambda mp: mp.health(), "GET", "/v1/health", reply=HEALTH, returns=Health),
    Case("me", lambda mp: mp.me(), "GET", "/v1/me", reply=ME, returns=Me),
    Case(
        "query",
        lambda mp: mp.query("alice/db", "SELECT 1 AS one", data_format="objects"),
        "POST",
        "/v1/query",
        json={"database": "alice/db", "sql": "SELECT 1 AS one", "data_format": "objects"},
        reply=QUERY,
        returns=QueryResult,
    ),
    Case(
        "query-default-format",
        lambda mp: mp.query("alice/db", "SELECT 1"),
        "POST",
        "/v1/query",
        json={"database": "alice/db", "sql": "SELECT 1"},
        reply={**QUERY, "data": [[1]]},
        returns=QueryResult,
    ),
    # databases
    Case(
        "databases.create",
        lambda mp: mp.databases.create("db"),
        "POST",
        "/v1/databases",
        json={"name": "db", "is_private": True},
        status=201,
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "databases.create-public-limited",
        lambda mp: mp.databases.create("db", is_private=False, storage_limit_bytes=10**9),
        "POST",
        "/v1/databases",
        json={"name": "db", "is_private": False, "storage_limit_bytes": 10**9},
        status=201,
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "databases.list",
        lambda mp: mp.databases.list(),
        "GET",
        "/v1/databases",
        reply=[DATABASE, DATABASE],
        returns=[Database],
    ),
    Case(
        "databases.get",
        lambda mp: mp.databases.get("alice/db"),
        "GET",
        "/v1/databases/alice/db",
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "databases.get-quoted",
        lambda mp: mp.databases.get("al ice/d%b?x"),
        "GET",
        "/v1/databases/al%20ice/d%25b%3Fx",
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "databases.update",
        lambda mp: mp.databases.update("alice/db", name="db2", is_private=False),
        "PATCH",
        "/v1/databases/alice/db",
        json={"name": "db2", "is_private": False, "clear_storage_limit": False},
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "databases.update-clear-limit",
        lambda mp: mp.databases.update("alice/db", clear_storage_limit=True),
        "PATCH",
        "/v1/databases/alice/db",
        json={"clear_storage_limit": True},
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "databases.delete",
        lambda mp: mp.databases.delete("alice/db"),
        "DELETE",
        "/v1/databases/alice/db",
        status=204,
        returns=None,
    ),
    Case(
        "databases.create-on-a-cluster",
        lambda mp: mp.databases.create("db", cluster="pg2"),
        "POST",
        "/v1/databases",
        json={"name": "db", "is_private": True, "cluster": "pg2"},
        status=201,
        reply={**DATABASE, "cluster": "pg2"},
        returns=Database,
    ),
    Case(
        "databases.move",
        lambda mp: mp.databases.move("alice/db", "pg2"),
        "POST",
        "/v1/databases/alice/db/move",
        json={"cluster": "pg2"},
        reply=MOVED,
        returns=DatabaseMoved,
    ),
    Case(
        "databases.collaborators",
        lambda mp: mp.databases.collaborators("alice/db"),
        "GET",
        "/v1/databases/alice/db/collaborators",
        reply=[COLLABORATOR],
        returns=[Collaborator],
    ),
    Case(
        "databases.add_collaborator",
        lambda mp: mp.databases.add_collaborator("alice/db", "bob", "write"),
        "PUT",
        "/v1/databases/alice/db/collaborators/bob",
        json={"role": "write"},
        reply=COLLABORATOR,
        returns=Collaborator,
    ),
    Case(
        "databases.remove_collaborator",
        lambda mp: mp.databases.remove_collaborator("alice/db", "bob"),
        "DELETE",
        "/v1/databases/alice/db/collaborators/bob",
        status=204,
        returns=None,
    ),
    # clusters
    Case(
        "clusters.list",
        lambda mp: mp.clusters.list(),
        "GET",
        "/v1/clusters",
        reply=[CLUSTER, {**CLUSTER, "name": "default", "home": True}],
        returns=[ClusterInfo],
    ),
    Case(
        "clusters.get",
        lambda mp: mp.clusters.get("pg2"),
        "GET",
        "/v1/clusters/pg2",
        reply=CLUSTER,
        returns=ClusterInfo,
    ),
    Case(
        "clusters.add",
        lambda mp: mp.clusters.add("postgresql://admin:pw@10.0.0.2/postgres"),
        "POST",
        "/v1/clusters",
        json={"url": "postgresql://admin:pw@10.0.0.2/postgres"},
        status=201,
        reply=CLUSTER,
        returns=ClusterInfo,
    ),
    Case(
        "clusters.add-named",
        lambda mp: mp.clusters.add("host=10.0.0.2 user=admin", name="pg2"),
        "POST",
        "/v1/clusters",
        json={"url": "host=10.0.0.2 user=admin", "name": "pg2"},
        status=201,
        reply=CLUSTER,
        returns=ClusterInfo,
    ),
    Case(
        "clusters.update",
        lambda mp: mp.clusters.update("pg2", state="draining"),
        "PATCH",
        "/v1/clusters/pg2",
        json={"state": "draining"},
        reply={**CLUSTER, "state": "draining"},
        returns=ClusterInfo,
    ),
    Case(
        "clusters.drain",
        lambda mp: mp.clusters.drain("pg2"),
        "PATCH",
        "/v1/clusters/pg2",
        json={"state": "draining"},
        reply={**CLUSTER, "state": "draining"},
        returns=ClusterInfo,
    ),
    Case(
        "clusters.activate",
        lambda mp: mp.clusters.activate("pg2"),
        "PATCH",
        "/v1/clusters/pg2",
        json={"state": "active"},
        reply=CLUSTER,
        returns=ClusterInfo,
    ),
    Case(
        "clusters.remove",
        lambda mp: mp.clusters.remove("pg2"),
        "DELETE",
        "/v1/clusters/pg2",
        status=204,
        returns=None,
    ),
    # keys
    Case(
        "keys.create",
        lambda mp: mp.keys.create(),
        "POST",
        "/v1/keys",
        json={"scope": "write"},
        status=201,
        reply=KEY_CREATED,
        returns=ApiKeyCreated,
    ),
    Case(
        "keys.create-read-expiring",
        lambda mp: mp.keys.create("ci", scope="read", expires_in_seconds=60),
        "POST",
        "/v1/keys",
        json={"name": "ci", "scope": "read", "expires_in_seconds": 60},
        status=201,
        reply=KEY_CREATED,
        returns=ApiKeyCreated,
    ),
    Case("keys.list", lambda mp: mp.keys.list(), "GET", "/v1/keys", reply=[KEY], returns=[ApiKey]),
    Case(
        "keys.revoke",
        lambda mp: mp.keys.revoke("k1"),
        "DELETE",
        "/v1/keys/k1",
        status=204,
        returns=None,
    ),
    Case(
        "keys.revoke-api_key",
        lambda mp: mp.keys.revoke(api_key="mp_secret"),
        "POST",
        "/v1/keys/revoke",
        json={"api_key": "mp_secret"},
        reply={"count": 1},
        returns=None,
    ),
    Case(
        "keys.revoke_all",
        lambda mp: mp.keys.revoke_all(),
        "POST",
        "/v1/keys/revoke",
        json={},
        reply={"count": 4},
        returns=4,
    ),
    # service accounts
    Case(
        "service_accounts.create",
        lambda mp: mp.service_accounts.create("bot"),
        "POST",
        "/v1/service-accounts",
        json={"name": "bot"},
        status=201,
        reply=SA,
        returns=ServiceAccount,
    ),
    Case(
        "service_accounts.list",
        lambda mp: mp.service_accounts.list(),
        "GET",
        "/v1/service-accounts",
        reply=[SA],
        returns=[ServiceAccount],
    ),
    Case(
        "service_accounts.get",
        lambda mp: mp.service_accounts.get(7),
        "GET",
        "/v1/service-accounts/7",
        reply=SA,
        returns=ServiceAccount,
    ),
    Case(
        "service_accounts.delete",
        lambda mp: mp.service_accounts.delete("7"),
        "DELETE",
        "/v1/service-accounts/7",
        status=204,
        returns=None,
    ),
    Case(
        "service_accounts.create_key",
        lambda mp: mp.service_accounts.create_key(7, "deploy", scope="read"),
        "POST",
        "/v1/service-accounts/7/keys",
        json={"name": "deploy", "scope": "read"},
        status=201,
        reply=KEY_CREATED,
        returns=ApiKeyCreated,
    ),
    Case(
        "service_accounts.list_keys",
        lambda mp: mp.service_accounts.list_keys(7),
        "GET",
        "/v1/service-accounts/7/keys",
        reply=[KEY],
        returns=[ApiKey],
    ),
    Case(
        "service_accounts.revoke_keys",
        lambda mp: mp.service_accounts.revoke_keys(7),
        "POST",
        "/v1/service-accounts/7/keys/revoke",
        json={},
        reply={"count": 2},
        returns=2,
    ),
    Case(
        "service_accounts.revoke_keys-one",
        lambda mp: mp.service_accounts.revoke_keys(7, key_id="k1"),
        "POST",
        "/v1/service-accounts/7/keys/revoke",
        json={"key_id": "k1"},
        reply={"count": 1},
        returns=1,
    ),
    # users
    Case(
        "users.create",
        lambda mp: mp.users.create("carol", is_admin=True),
        "POST",
        "/v1/users",
        json={"username": "carol", "is_admin": True},
        status=201,
        reply={"user": USER, "api_key": KEY_CREATED},
        returns=UserCreated,
    ),
    Case(
        "users.list", lambda mp: mp.users.list(), "GET", "/v1/users", reply=[USER], returns=[User]
    ),
    Case(
        "users.get",
        lambda mp: mp.users.get("alice"),
        "GET",
        "/v1/users/alice",
        reply=USER,
        returns=User,
    ),
    Case(
        "users.delete",
        lambda mp: mp.users.delete("alice"),
        "DELETE",
        "/v1/users/alice",
        query={},
        status=204,
        returns=None,
    ),
    Case(
        "users.delete-with-databases",
        lambda mp: mp.users.delete("alice", delete_databases=True),
        "DELETE",
        "/v1/users/alice",
        query={"delete_databases": ["true"]},
        status=204,
        returns=None,
    ),
    Case(
        "users.set_password",
        lambda mp: mp.users.set_password("a/lice", "a new password"),
        "PUT",
        "/v1/users/a%2Flice/password",
        json={"password": "a new password"},
        status=204,
        returns=None,
    ),
    Case(
        "users.set_my_password",
        lambda mp: mp.users.set_my_password("a new password"),
        "PUT",
        "/v1/me/password",
        json={"password": "a new password"},
        status=204,
        returns=None,
    ),
    Case(
        "users.set_my_password-changing",
        lambda mp: mp.users.set_my_password("a new password", current_password="the old one"),
        "PUT",
        "/v1/me/password",
        json={"password": "a new password", "current_password": "the old one"},
        status=204,
        returns=None,
    ),
    # the bit.io SDK's names
    Case(
        "create_database",
        lambda mp: mp.create_database("db", False),
        "POST",
        "/v1/databases",
        json={"name": "db", "is_private": False},
        status=201,
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "create_database-on-a-cluster",
        lambda mp: mp.create_database("db", cluster="pg2"),
        "POST",
        "/v1/databases",
        json={"name": "db", "is_private": True, "cluster": "pg2"},
        status=201,
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "list_databases",
        lambda mp: mp.list_databases(),
        "GET",
        "/v1/databases",
        reply=[DATABASE],
        returns=[Database],
    ),
    Case(
        "get_database",
        lambda mp: mp.get_database("alice/db"),
        "GET",
        "/v1/databases/alice/db",
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "update_database",
        lambda mp: mp.update_database("alice/db", storage_limit_bytes=5),
        "PATCH",
        "/v1/databases/alice/db",
        json={"storage_limit_bytes": 5, "clear_storage_limit": False},
        reply=DATABASE,
        returns=Database,
    ),
    Case(
        "delete_database",
        lambda mp: mp.delete_database("alice/db"),
        "DELETE",
        "/v1/databases/alice/db",
        status=204,
        returns=None,
    ),
    Case(
        "create_key",
        lambda mp: mp.create_key(),
        "POST",
        "/v1/keys",
        json={"scope": "write"},
        status=201,
        reply=KEY_CREATED,
        returns=ApiKeyCreated,
    ),
    Case(
        "revoke_keys",
        lambda mp: mp.revoke_keys(),
        "POST",
        "/v1/keys/revoke",
        json={},
        reply={"count": 3},
        returns=3,
    ),
    Case(
        "revoke_keys-one",
        lambda mp: mp.revoke_keys("mp_secret"),
        "POST",
        "/v1/keys/revoke",
        json={"api_key": "mp_secret"},
        reply={"count": 1},
        returns=1,
    ),
    Case(
        "list_service_accounts",
        lambda mp: mp.list_service_accounts(),
        "GET",
        "/v1/service-accounts",
        reply=[SA],
        returns=[ServiceAccount],
    ),
    Case(
        "get_service_account",
        lambda mp: mp.get_service_account("7"),
        "GET",
        "/v1/service-accounts/7",
        reply=SA,
        returns=ServiceAccount,
    ),
    Case(
        "create_service_account_key",
        lambda mp: mp.create_service_account_key(7),
        "POST",
        "/v1/service-accounts/7/keys",
        json={"scope": "write"},
        status=201,
        reply=KEY_CREATED,
        returns=ApiKeyCreated,
    ),
    Case(
        "revoke_service_account_keys",
        lambda mp: mp.revoke_service_account_keys(7),
        "POST",
        "/v1/service-accounts/7/keys/revoke",
        json={},
        reply={"count": 0},
        returns=0,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resource_call(run: Run, fake: FakeServer, case: Case) -> None:
    fake.reply(Reply(case.status, case.reply))
    result = run(case.call)
    assert len(fake.requests) == 1
    seen = fake.last
    assert (seen.method, seen.path) == (case.method, case.path)
    assert seen.json == case.json
    if case.query is not None:
        assert seen.query == case.query
    if isinstance(case.returns, list):
        assert isinstance(result, list) and result
        assert all(type(item) is case.returns[0] for item in result)
    elif isinstance(case.returns, type):
        assert type(result) is case.returns
    else:
        assert result == case.returns


def test_every_method_is_in_the_table() -> None:
    covered = {c.id.split("-")[0] for c in CASES}
    public = {n for n, v in vars(Millpond).items() if not n.startswith("_") and callable(v)}
    for resource, cls in get_type_hints(Millpond).items():
        public |= {f"{resource}.{n}" for n in vars(cls) if not n.startswith("_")}
    # realtime() opens a WebSocket, not an HTTP call: tested in tests/client_realtime;
    # imports and exports upload, poll and download: tested on the real server in
    # tests/transfer
    transfer = {n for n in public if n.startswith(("imports.", "exports."))}
    # a database's backup and restore stream files: on the real server in
    # tests/server/test_database_backups.py (both SDKs) and tests/cli/test_backups.py
    transfer |= {"databases.backup", "databases.restore"}
    # identify/track buffer events, flush waits, send_events sends a batch: tested with
    # the fake and the real server in tests/client/test_events.py
    events = {"identify", "track", "flush", "send_events"}
    # flag checks, mp.flags and mp.companies: every method on the real server in
    # tests/client/test_flags_sdk.py (which checks it covers them all)
    flags = {n for n in public if n.startswith(("flags.", "companies.", "check_flag", "flag_"))}
    # direct connections go through the Postgres gateway: tests/client/test_connections.py
    direct = {"get_connection", "pooled_connection", "pooled_cursor", "connection_string"}
    # modules (publish, versions, calls, logs, identities, settings), mp.call and
    # Millpond.anonymous: on the real server in tests/modules; the CLI calls every
    # mp.modules method, and tests/cli/test_modules.py runs each of those commands
    modules = {n for n in public if n.startswith("modules.")}
    cli = "".join(p.read_text() for p in Path(millpond.cli.__file__).parent.glob("*.py"))
    # (but for the iterators, walked on the real server in tests/client/test_paging.py)
    assert {n for n in modules if f"mp.{n}(" not in cli} - {"modules.iter_logs"} == set()
    modules |= {"call", "anonymous"}
    assert public - {"close", "realtime"} - transfer - events - flags - direct - modules == covered


def test_query_results_keep_their_shape(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(200, QUERY))
    result = run(lambda mp: mp.query("alice/db", "SELECT 1 AS one", data_format="objects"))
    assert result.data == [{"one": 1}]
    assert result.columns[0].name == "one"


@pytest.mark.parametrize("db", ["db", "a/b/c", "/db", "alice/", "", "alice//db"])
def test_database_names_must_be_owner_slash_name(run: Run, fake: FakeServer, db: str) -> None:
    for call in (
        lambda mp: mp.databases.get(db),
        lambda mp: mp.databases.delete(db),
        lambda mp: mp.databases.collaborators(db),
        lambda mp: mp.query(db, "SELECT 1"),
        lambda mp: mp.get_database(db),
    ):
        with pytest.raises(ValueError, match="owner/name"):
            run(call)
    assert fake.requests == []


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_path_segments_that_would_change_the_route_are_refused(
    run: Run, fake: FakeServer, name: str
) -> None:
    with pytest.raises(ValueError, match="path segment"):
        run(lambda mp: mp.users.get(name))
    with pytest.raises(ValueError, match="path segment"):
        run(lambda mp: mp.clusters.remove(name))
    if name:
        with pytest.raises(ValueError, match="path segment"):
            run(lambda mp: mp.databases.get(f"{name}/{name}"))
    assert fake.requests == []


def test_revoke_needs_exactly_one_key(run: Run, fake: FakeServer) -> None:
    with pytest.raises(ValueError, match="revoke_all"):
        run(lambda mp: mp.keys.revoke())
    with pytest.raises(ValueError):
        run(lambda mp: mp.keys.revoke("k1", api_key="mp_x"))
    with pytest.raises(ValueError):
        run(lambda mp: mp.service_accounts.revoke_keys(7, key_id="k1", api_key="mp_x"))
    assert fake.requests == []


def test_slashes_in_usernames_are_quoted(run: Run, fake: FakeServer) -> None:
    fake.reply(Reply(204))
    run(lambda mp: mp.databases.remove_collaborator("alice/db", "../../users/bob"))
    assert fake.last.path == "/v1/databases/alice/db/collaborators/..%2F..%2Fusers%2Fbob"
