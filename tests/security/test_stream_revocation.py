"""Realtime and flags-stream sockets honour authorization for their whole life: revoking or
expiring a key, removing a collaborator, lowering their role, turning a public database
private, deleting the user, the database or the environment closes the sockets it
concerns at once — on the replica that made the change and on any other one on the same
Postgres — with a close code and reason the SDK surfaces; everyone else's sockets keep
streaming.

"At once" is checked as "within ``WITHIN_S``": far below the 30 s of the periodic
recheck, which would otherwise close them too, and with room for a loaded machine (about
a second on a quiet one; how fast is a benchmark's business, not a test's)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from millpond import Millpond, RealtimeError
from millpond.server.config import Settings
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread, free_port, start_server

MakeUser = Callable[..., tuple[str, str]]
WITHIN_S = 10.0


# -- helpers -------------------------------------------------------------------------------


class Http:
    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def __call__(self, method: str, path: str, key: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


class Socket:
    """An open realtime or flags-stream socket, past its ``hello``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        assert self.next()["type"] == "hello"

    def next(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message["type"] != "ping":
                return dict(message)

    def subscribe(self, query: str) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "subscribe", "request_id": "r1", "queries": [query]}))
        applied = self.next()
        assert applied["type"] == "subscription_applied", applied
        return applied

    def closed_within(self, seconds: float = WITHIN_S) -> tuple[int, str, float]:
        """Wait for the server's close; (code, reason, seconds it took)."""
        start = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                message = json.loads(self.ws.recv(timeout=seconds + 3))
                assert message["type"] in ("ping", "transaction"), message
        took = time.monotonic() - start
        assert info.value.rcvd is not None, "closed without a close frame"
        return info.value.rcvd.code, info.value.rcvd.reason, took

    def close(self) -> None:
        self.ws.close()


_opened = contextlib.ExitStack()


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    _opened.close()


def _ws(base_url: str, path: str, key: str) -> Socket:
    url = base_url.replace("http://", "ws://") + path
    headers = {"Authorization": f"Bearer {key}"}
    return Socket(_opened.enter_context(connect(url, additional_headers=headers)))


def realtime(base_url: str, database: str, key: str) -> Socket:
    sock = _ws(base_url, f"/v1/realtime/{database}", key)
    sock.subscribe("SELECT * FROM notes")
    return sock


def flags_stream(base_url: str, key: str, env_id: str) -> Socket:
    sock = _ws(base_url, f"/v1/flags/stream?environment={env_id}", key)
    sock.subscribe(f"SELECT * FROM flag_rulesets WHERE environment_id = '{env_id}'")
    return sock


def assert_closed(sock: Socket, code: int, reason: str) -> None:
    got_code, got_reason, took = sock.closed_within()
    assert (got_code, got_reason) == (code, reason)
    assert took < WITHIN_S, f"closed after {took:.2f} s"


class Tenant:
    """A user with a database ``notes`` (one table, streaming) and a bystander watching it."""

    def __init__(self, http: Http, make_user: MakeUser, base_url: str, public: bool) -> None:
        self.http = http
        self.base_url = base_url
        self.user, self.key = make_user(prefix="rv")
        http("POST", "/v1/databases", self.key, 201, json={"name": "d", "is_private": not public})
        self.db = f"{self.user}/d"
        self.sql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        self.writes = 0

    def sql(self, sql: str) -> None:
        self.http("POST", "/v1/query", self.key, json={"database": self.db, "sql": sql})

    def write(self) -> None:
        self.writes += 1
        self.sql(f"INSERT INTO notes (body) VALUES ('n{self.writes}')")

    def key_for(self, scope: str = "write", **body: Any) -> tuple[str, str]:
        made = self.http("POST", "/v1/keys", self.key, 201, json={"scope": scope, **body})
        return made["id"], made["secret"]

    def share(self, username: str, role: str) -> None:
        path = f"/v1/databases/{self.db}/collaborators/{username}"
        self.http("PUT", path, self.key, json={"role": role})


def assert_streams(sock: Socket, tenant: Tenant) -> None:
    """``sock`` still gets the tenant's changes."""
    tenant.write()
    while (message := sock.next())["type"] != "transaction":
        pass
    assert message["tables"], message


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[Http]:
    h = Http(base_url)
    yield h
    h.client.close()


@pytest.fixture
def tenant(http: Http, make_user: MakeUser, base_url: str) -> Tenant:
    return Tenant(http, make_user, base_url, public=False)


@pytest.fixture
def public_tenant(http: Http, make_user: MakeUser, base_url: str) -> Tenant:
    return Tenant(http, make_user, base_url, public=True)


# -- realtime ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["delete", "revoke_by_id", "revoke_by_secret", "revoke_all"])
def test_revoking_a_key_closes_its_realtime_sockets(
    tenant: Tenant, http: Http, base_url: str, admin_key: str, how: str
) -> None:
    key_id, secret = tenant.key_for()
    own = realtime(base_url, tenant.db, secret)
    twin = realtime(base_url, tenant.db, secret)  # a second socket with the same key
    admin = realtime(base_url, tenant.db, admin_key)  # someone else's, same database
    assert_streams(own, tenant)
    if how == "delete":
        http("DELETE", f"/v1/keys/{key_id}", tenant.key, 204)
    elif how == "revoke_by_id":
        http("POST", "/v1/keys/revoke", tenant.key, json={"key_id": key_id})
    elif how == "revoke_by_secret":
        http("POST", "/v1/keys/revoke", secret, json={"api_key": secret})
    else:  # the key revokes every key of its user, itself included
        http("POST", "/v1/keys/revoke", secret, json={})
    assert_closed(own, 4001, "key_revoked")
    assert_closed(twin, 4001, "key_revoked")
    if how != "revoke_all":
        assert_streams(admin, tenant)
    admin.close()


def test_an_expiring_key_closes_its_socket_at_expiry(tenant: Tenant, base_url: str) -> None:
    _, secret = tenant.key_for(expires_in_seconds=3)
    made = time.monotonic()
    own = realtime(base_url, tenant.db, secret)
    owner = realtime(base_url, tenant.db, tenant.key)
    code, reason, _ = own.closed_within(3 + WITHIN_S)
    assert (code, reason) == (4001, "key_expired")
    assert time.monotonic() - made < 3 + WITHIN_S
    assert_streams(owner, tenant)
    owner.close()


@pytest.mark.parametrize("role", ["read", "write", "admin"])
def test_removing_a_collaborator_closes_their_sockets(
    tenant: Tenant, http: Http, make_user: MakeUser, base_url: str, role: str
) -> None:
    friend, friend_key = make_user(prefix="rvfriend")
    tenant.share(friend, role)
    sock = realtime(base_url, tenant.db, friend_key)
    owner = realtime(base_url, tenant.db, tenant.key)
    assert_streams(sock, tenant)
    http("DELETE", f"/v1/databases/{tenant.db}/collaborators/{friend}", tenant.key, 204)
    assert_closed(sock, 4003, "access_revoked")
    assert_streams(owner, tenant)
    owner.close()
    # and it cannot come back
    with pytest.raises(ConnectionClosed) as info:
        _ws(base_url, f"/v1/realtime/{tenant.db}", friend_key)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4004


def test_lowering_a_collaborators_role_makes_them_reconnect(
    tenant: Tenant, make_user: MakeUser, base_url: str
) -> None:
    friend, friend_key = make_user(prefix="rvfriend")
    tenant.share(friend, "write")
    sock = realtime(base_url, tenant.db, friend_key)
    tenant.share(friend, "read")
    assert_closed(sock, 4013, "access_changed")
    again = realtime(base_url, tenant.db, friend_key)  # with its new (read) rights
    assert_streams(again, tenant)
    tenant.share(friend, "admin")  # more rights: nothing to close
    assert_streams(again, tenant)
    again.close()


def test_turning_a_database_private_closes_strangers_sockets(
    public_tenant: Tenant, http: Http, make_user: MakeUser, base_url: str
) -> None:
    _, stranger_key = make_user(prefix="rvstranger")
    friend, friend_key = make_user(prefix="rvfriend")
    public_tenant.share(friend, "read")
    stranger = realtime(base_url, public_tenant.db, stranger_key)
    kept = realtime(base_url, public_tenant.db, friend_key)
    assert_streams(stranger, public_tenant)
    http("PATCH", f"/v1/databases/{public_tenant.db}", public_tenant.key, json={"is_private": True})
    assert_closed(stranger, 4003, "access_revoked")
    assert_streams(kept, public_tenant)  # a collaborator may still read it
    kept.close()


def test_deleting_a_user_closes_their_sockets(
    tenant: Tenant, http: Http, make_user: MakeUser, base_url: str, admin_key: str
) -> None:
    friend, friend_key = make_user(prefix="rvfriend")
    tenant.share(friend, "write")
    sock = realtime(base_url, tenant.db, friend_key)
    owner = realtime(base_url, tenant.db, tenant.key)
    http("DELETE", f"/v1/users/{friend}", admin_key, 204)
    assert_closed(sock, 4001, "unauthorized")
    assert_streams(owner, tenant)
    owner.close()


def test_deleting_the_owner_with_their_databases_closes_every_socket_on_them(
    tenant: Tenant, http: Http, make_user: MakeUser, base_url: str, admin_key: str
) -> None:
    friend, friend_key = make_user(prefix="rvfriend")
    tenant.share(friend, "read")
    friend_sock = realtime(base_url, tenant.db, friend_key)
    owner_sock = realtime(base_url, tenant.db, tenant.key)
    http("DELETE", f"/v1/users/{tenant.user}?delete_databases=true", admin_key, 204)
    assert_closed(friend_sock, 4004, "database_not_found")
    code, _, took = owner_sock.closed_within()
    assert code in (4001, 4004) and took < WITHIN_S


def test_deleting_a_database_closes_its_sockets(
    tenant: Tenant, http: Http, make_user: MakeUser, base_url: str
) -> None:
    other = Tenant(http, make_user, base_url, public=False)
    sock = realtime(base_url, tenant.db, tenant.key)
    elsewhere = realtime(base_url, other.db, other.key)
    http("DELETE", f"/v1/databases/{tenant.db}", tenant.key, 204)
    assert_closed(sock, 4004, "database_not_found")
    assert_streams(elsewhere, other)
    elsewhere.close()


def test_a_new_database_with_the_old_name_is_not_the_old_sockets(
    tenant: Tenant, http: Http, base_url: str
) -> None:
    """A socket opened on a database must not survive into its same-named successor."""
    friend_view = realtime(base_url, tenant.db, tenant.key)
    http("DELETE", f"/v1/databases/{tenant.db}", tenant.key, 204)
    http("POST", "/v1/databases", tenant.key, 201, json={"name": "d"})
    assert_closed(friend_view, 4004, "database_not_found")


def test_deleting_a_service_account_closes_its_keys_sockets(
    tenant: Tenant, http: Http, base_url: str
) -> None:
    sa = http("POST", "/v1/service-accounts", tenant.key, 201, json={"name": "bot"})
    made = http("POST", f"/v1/service-accounts/{sa['id']}/keys", tenant.key, 201, json={})
    sock = realtime(base_url, tenant.db, made["secret"])
    owner = realtime(base_url, tenant.db, tenant.key)
    http("DELETE", f"/v1/service-accounts/{sa['id']}", tenant.key, 204)
    code, _, took = sock.closed_within()
    assert code == 4001 and took < WITHIN_S
    assert_streams(owner, tenant)
    owner.close()


def test_the_sdk_reports_the_close_and_stops_reconnecting(
    tenant: Tenant, http: Http, base_url: str
) -> None:
    key_id, secret = tenant.key_for()
    errors: list[BaseException] = []
    with Millpond(secret, base_url) as mp, mp.realtime(tenant.db) as rt:
        rt.on_error(errors.append)
        rt.subscribe(["SELECT * FROM notes"])
        http("DELETE", f"/v1/keys/{key_id}", tenant.key, 204)
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            rt.update(0.1)
        assert errors, "the SDK did not report the revocation"
        error = errors[0]
        assert isinstance(error, RealtimeError)
        assert (error.close_code, error.close_reason) == (4001, "key_revoked")
        assert not rt.connected
        with pytest.raises(RealtimeError):
            rt.subscribe(["SELECT * FROM notes"])


def test_an_expiring_key_ends_its_gateway_connection_at_expiry(
    tenant: Tenant, server: ServerThread
) -> None:
    """The gateway shares the re-checker: expiry no longer waits for its 30 s recheck."""
    _, secret = tenant.key_for(expires_in_seconds=3)
    made = time.monotonic()
    dsn = (
        f"host=127.0.0.1 port={server.settings.gateway_port} user=x password={secret}"
        f" dbname={tenant.db} sslmode=disable"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError) as info:
            while time.monotonic() - made < 3 + WITHIN_S + 3:
                conn.execute("SELECT 1")
                time.sleep(0.1)
        assert time.monotonic() - made < 3 + WITHIN_S
        assert "API key expired" in str(info.value) or conn.closed


# -- the flags stream ----------------------------------------------------------------------


class Account:
    """A user with a flags environment."""

    def __init__(self, http: Http, make_user: MakeUser) -> None:
        self.http = http
        self.user, self.key = make_user(prefix="rvflags")
        env = http("POST", "/v1/flags/environments", self.key, 201, json={"name": "prod"})
        self.env_id: str = env["id"]
        self.base = f"/v1/flags/environments/{self.env_id}"

    def bound_key(self) -> tuple[str, str]:
        made = self.http("POST", self.base + "/keys", self.key, 201, json={"scope": "read"})
        return made["id"], made["secret"]

    def change_a_flag(self) -> None:
        body = {"key": f"f{time.monotonic_ns()}", "default_value": True}
        self.http("POST", self.base + "/flags", self.key, 201, json=body)


def assert_flags_stream(sock: Socket, account: Account) -> None:
    account.change_a_flag()
    while sock.next()["type"] != "transaction":
        pass


@pytest.fixture
def account(http: Http, make_user: MakeUser) -> Account:
    return Account(http, make_user)


def test_revoking_a_bound_key_closes_its_stream(
    account: Account, http: Http, base_url: str
) -> None:
    key_id, secret = account.bound_key()
    _, kept_secret = account.bound_key()
    sock = flags_stream(base_url, secret, account.env_id)
    kept = flags_stream(base_url, kept_secret, account.env_id)
    assert_flags_stream(sock, account)
    http("DELETE", f"{account.base}/keys/{key_id}", account.key, 204)
    assert_closed(sock, 4001, "key_revoked")
    assert_flags_stream(kept, account)
    kept.close()


def test_revoking_an_account_key_closes_its_stream(
    account: Account, http: Http, base_url: str
) -> None:
    made = http("POST", "/v1/keys", account.key, 201, json={"scope": "read"})
    sock = flags_stream(base_url, made["secret"], account.env_id)
    http("DELETE", f"/v1/keys/{made['id']}", account.key, 204)
    assert_closed(sock, 4001, "key_revoked")


def test_an_expiring_key_closes_its_stream(account: Account, http: Http, base_url: str) -> None:
    made = http("POST", "/v1/keys", account.key, 201, json={"expires_in_seconds": 3})
    start = time.monotonic()
    sock = flags_stream(base_url, made["secret"], account.env_id)
    code, reason, _ = sock.closed_within(3 + WITHIN_S)
    assert (code, reason) == (4001, "key_expired")
    assert time.monotonic() - start < 3 + WITHIN_S


def test_deleting_the_environment_closes_its_streams(
    account: Account, http: Http, make_user: MakeUser, base_url: str
) -> None:
    _, bound = account.bound_key()
    by_account = flags_stream(base_url, account.key, account.env_id)
    by_bound = flags_stream(base_url, bound, account.env_id)
    other = Account(http, make_user)
    elsewhere = flags_stream(base_url, other.key, other.env_id)
    http("DELETE", account.base, account.key, 204)
    assert_closed(by_account, 4004, "environment_not_found")
    code, _, took = by_bound.closed_within()  # its key went with the environment
    assert code in (4001, 4004) and took < WITHIN_S
    assert_flags_stream(elsewhere, other)
    elsewhere.close()


def test_deleting_the_user_closes_their_streams(
    account: Account, http: Http, base_url: str, admin_key: str
) -> None:
    _, bound = account.bound_key()
    by_account = flags_stream(base_url, account.key, account.env_id)
    by_bound = flags_stream(base_url, bound, account.env_id)
    by_admin = flags_stream(base_url, admin_key, account.env_id)  # admins reach every env
    http("DELETE", f"/v1/users/{account.user}", admin_key, 204)
    for sock in (by_account, by_bound):
        code, _, took = sock.closed_within()
        assert code == 4001 and took < WITHIN_S
    assert_closed(by_admin, 4004, "environment_not_found")  # the environment went too


def test_the_live_flags_client_reports_the_revocation(
    account: Account, http: Http, base_url: str
) -> None:
    from millpond.client._base import ClientConfig
    from millpond.client._flags_live_sync import LiveFlags

    key_id, secret = account.bound_key()
    account.change_a_flag()
    live = LiveFlags(ClientConfig.resolve(secret, base_url, 10.0, 0, None))
    try:
        assert live.wait_ready(10)
        http("DELETE", f"{account.base}/keys/{key_id}", account.key, 204)
        deadline = time.monotonic() + 10
        while live.failed is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(live.failed, RealtimeError)
        assert (live.failed.close_code, live.failed.close_reason) == (4001, "key_revoked")
        assert not live.ready
    finally:
        live.close()


def test_an_admin_demoted_by_hand_in_sql_loses_other_tenants_streams(
    tenant: Tenant, account: Account, make_user: MakeUser, server: ServerThread
) -> None:
    """A change made outside the API (SQL on the control database) is announced by its
    trigger alone, and still closes what it must."""
    admin, admin_key = make_user(is_admin=True, prefix="rvadmin")
    on_db = realtime(server.url, tenant.db, admin_key)
    on_env = flags_stream(server.url, admin_key, account.env_id)
    owner = realtime(server.url, tenant.db, tenant.key)
    control = EmbeddedPostgres(server.settings.data_dir).url(server.settings.control_database)
    with psycopg.connect(control, autocommit=True) as conn:
        conn.execute("UPDATE users SET is_admin = false WHERE username = %s", (admin,))
    assert_closed(on_db, 4003, "access_revoked")
    assert_closed(on_env, 4004, "environment_not_found")
    assert_streams(owner, tenant)


# -- two replicas on one Postgres ----------------------------------------------------------


@pytest.fixture(scope="module")
def replica(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second server on the first one's Postgres (same control database and secret)."""
    data_dir: Path = tmp_path_factory.mktemp("replica")
    (data_dir / "admin-key").write_text(server.admin_key + "\n")
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=data_dir,
        database_url=EmbeddedPostgres(server.settings.data_dir).url(),
        realtime_idle_seconds=0.5,
        gateway_port=free_port(),
    )
    running = start_server(settings)
    yield running.url
    running.stop()


def test_a_change_on_one_replica_closes_sockets_on_the_other(
    tenant: Tenant, http: Http, make_user: MakeUser, base_url: str, replica: str
) -> None:
    key_id, secret = tenant.key_for()
    friend, friend_key = make_user(prefix="rvfriend")
    tenant.share(friend, "read")
    revoked = realtime(replica, tenant.db, secret)
    removed = realtime(replica, tenant.db, friend_key)
    owner = realtime(replica, tenant.db, tenant.key)
    assert_streams(owner, tenant)
    http("DELETE", f"/v1/keys/{key_id}", tenant.key, 204)  # through the first replica
    assert_closed(revoked, 4001, "key_revoked")
    http("DELETE", f"/v1/databases/{tenant.db}/collaborators/{friend}", tenant.key, 204)
    assert_closed(removed, 4003, "access_revoked")
    assert_streams(owner, tenant)
    owner.close()


def test_deleting_a_database_on_one_replica_closes_its_sockets_on_the_other(
    tenant: Tenant, base_url: str, replica: str
) -> None:
    owner = realtime(replica, tenant.db, tenant.key)
    r = tenant.http.client.delete(
        f"/v1/databases/{tenant.db}", headers={"Authorization": f"Bearer {tenant.key}"}
    )
    # marked deleting (and announced) before the drop: the other replica closes at once
    assert_closed(owner, 4004, "database_not_found")
    assert r.status_code == 204, r.text


def test_a_flags_change_on_one_replica_closes_streams_on_the_other(
    account: Account, http: Http, base_url: str, replica: str
) -> None:
    key_id, secret = account.bound_key()
    revoked = flags_stream(replica, secret, account.env_id)
    by_account = flags_stream(replica, account.key, account.env_id)
    assert_flags_stream(by_account, account)
    http("DELETE", f"{account.base}/keys/{key_id}", account.key, 204)
    assert_closed(revoked, 4001, "key_revoked")
    assert_flags_stream(by_account, account)
    http("DELETE", account.base, account.key, 204)
    assert_closed(by_account, 4004, "environment_not_found")
