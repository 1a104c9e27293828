"""Users, API keys and service accounts: every endpoint for every kind of caller, and
every rejection changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ._helpers import (
    assert_error,
    assert_permission_denied,
    assert_write_refused,
    pg_name,
    unique,
)
from .conftest import Call, Superuser

Api = Callable[..., httpx.Response]
MakeUser = Callable[..., tuple[str, str]]
MakeDb = Callable[..., dict[str, Any]]


def _usernames(call: Call, admin_key: str) -> set[str]:
    r = call("GET", "/v1/users", admin_key)
    assert r.status_code == 200
    return {u["username"] for u in r.json()}


def _key_ids(call: Call, key: str) -> set[str]:
    r = call("GET", "/v1/keys", key)
    assert r.status_code == 200, r.text
    return {k["id"] for k in r.json()}


# -- users -----------------------------------------------------------------------------


def test_admin_creates_a_user_with_a_working_first_key(api: Api, admin_key: str) -> None:
    name = unique("alice")
    r = api("POST", "/v1/users", admin_key, json={"username": name})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user", "api_key"}
    assert body["user"]["username"] == name
    assert body["user"]["is_admin"] is False
    key = body["api_key"]
    secret = key["secret"]
    assert secret.startswith("mp_") and len(secret) == 43
    assert key["prefix"] == secret[:10]
    assert key["scope"] == "write"
    me = api("GET", "/v1/me", secret).json()
    assert me["user"]["username"] == name
    assert me["key"]["id"] == key["id"]
    assert me["service_account"] is None
    assert "secret" not in me["key"]


def test_admin_can_create_another_admin(api: Api, admin_key: str) -> None:
    name = unique("boss")
    r = api("POST", "/v1/users", admin_key, json={"username": name, "is_admin": True})
    assert r.status_code == 201
    new_admin = r.json()["api_key"]["secret"]
    assert api("GET", "/v1/users", new_admin).status_code == 200


def test_list_and_get_users(api: Api, admin_key: str, make_user: MakeUser) -> None:
    name, key = make_user()
    other, _ = make_user()
    listed = api("GET", "/v1/users", admin_key).json()
    assert {name, other, "admin"} <= {u["username"] for u in listed}
    assert all(set(u) == {"id", "username", "is_admin", "created_at"} for u in listed)
    # admin gets anyone, case-insensitively
    r = api("GET", f"/v1/users/{name.upper()}", admin_key)
    assert r.status_code == 200 and r.json()["username"] == name
    # a user gets themselves, also case-insensitively
    assert api("GET", f"/v1/users/{name}", key).json()["username"] == name
    assert api("GET", f"/v1/users/{name.upper()}", key).status_code == 200
    # but nobody else, and cannot probe who exists
    assert_error(api("GET", f"/v1/users/{other}", key), 403, "admin_required")
    assert_error(api("GET", "/v1/users/nobody-at-all", key), 403, "admin_required")
    assert_error(api("GET", "/v1/users/nobody-at-all", admin_key), 404, "user_not_found")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/users", {"username": "{new}"}),
        ("GET", "/v1/users", None),
        ("DELETE", "/v1/users/{victim}", None),
    ],
)
def test_users_endpoints_need_an_admin(
    api: Api,
    admin_key: str,
    make_user: MakeUser,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    victim, key = make_user()
    new = unique("nope")

    def fill(s: str) -> str:
        return s.replace("{new}", new).replace("{victim}", victim)

    kwargs: dict[str, Any] = {"json": {k: fill(v) for k, v in body.items()}} if body else {}
    assert_error(api(method, fill(path), key, **kwargs), 403, "admin_required")
    assert_error(api(method, fill(path), **kwargs), 401, "unauthorized")
    names = _usernames(api, admin_key)
    assert victim in names and new not in names


def test_admins_read_key_cannot_create_or_delete_users(
    api: Api, admin_key: str, make_user: MakeUser
) -> None:
    victim, _ = make_user()
    read = api("POST", "/v1/keys", admin_key, json={"scope": "read"}).json()["secret"]
    new = unique("ro")
    assert_error(api("POST", "/v1/users", read, json={"username": new}), 403, "read_only_key")
    assert_error(api("DELETE", f"/v1/users/{victim}", read), 403, "read_only_key")
    assert api("GET", "/v1/users", read).status_code == 200  # reading is fine
    names = _usernames(api, admin_key)
    assert victim in names and new not in names


def test_duplicate_username_is_409_case_insensitively(api: Api, admin_key: str) -> None:
    name = unique("Dup")
    assert api("POST", "/v1/users", admin_key, json={"username": name}).status_code == 201
    before = api("GET", "/v1/users", admin_key).json()
    for clash in (name, name.lower(), name.upper()):
        r = api("POST", "/v1/users", admin_key, json={"username": clash})
        assert_error(r, 409, "user_exists")
    assert api("GET", "/v1/users", admin_key).json() == before


@pytest.mark.parametrize(
    "username",
    [
        "",
        "-leading-dash",
        "_leading-underscore",
        "has space",
        "has/slash",
        "has.dot",
        "x" * 40,
        "ünicode",
        "trailing-newline\n",
        "tab\tinside",
        "semi;colon",
        "quote'",
    ],
)
def test_invalid_usernames_are_422_and_create_nothing(
    api: Api, admin_key: str, username: str
) -> None:
    before = api("GET", "/v1/users", admin_key).json()
    r = api("POST", "/v1/users", admin_key, json={"username": username})
    err = assert_error(r, 422, "invalid_name")
    assert err["details"] == {"field": "username"}
    assert api("GET", "/v1/users", admin_key).json() == before


def test_longest_valid_username(api: Api, admin_key: str) -> None:
    name = ("L" + unique("")).ljust(39, "z")
    r = api("POST", "/v1/users", admin_key, json={"username": name})
    assert r.status_code == 201, r.text


def test_delete_user(api: Api, admin_key: str, make_user: MakeUser) -> None:
    name, key = make_user()
    assert api("DELETE", f"/v1/users/{name}", admin_key).status_code == 204
    assert_error(api("GET", f"/v1/users/{name}", admin_key), 404, "user_not_found")
    assert name not in _usernames(api, admin_key)
    assert_error(api("GET", "/v1/me", key), 401, "unauthorized")
    assert_error(api("DELETE", f"/v1/users/{name}", admin_key), 404, "user_not_found")


def test_an_admin_cannot_delete_themselves(api: Api, admin_key: str) -> None:
    r = api("DELETE", "/v1/users/admin", admin_key)
    assert_error(r, 409, "cannot_delete_self")
    assert api("GET", "/v1/me", admin_key).status_code == 200


def test_deleting_a_user_who_owns_databases(
    api: Api, admin_key: str, make_user: MakeUser, make_db: MakeDb, superuser: Superuser
) -> None:
    name, key = make_user()
    collaborator, ckey = make_user()
    dbs = [make_db(key), make_db(key)]
    api(
        "PUT",
        f"/v1/databases/{dbs[0]['full_name']}/collaborators/{collaborator}",
        key,
        json={"role": "write"},
    )
    # refused without the flag, and nothing changes
    err = assert_error(api("DELETE", f"/v1/users/{name}", admin_key), 409, "user_owns_databases")
    assert "delete_databases" in err["message"]
    assert api("GET", "/v1/me", key).status_code == 200
    assert [d["full_name"] for d in api("GET", "/v1/databases", key).json()] == sorted(
        d["full_name"] for d in dbs
    )
    r = api("DELETE", f"/v1/users/{name}?delete_databases=false", admin_key)
    assert_error(r, 409, "user_owns_databases")
    with superuser() as conn:
        for db in dbs:
            assert conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (pg_name(db),)
            ).fetchone()

    # with the flag: the user, their databases, the Postgres databases and roles are gone
    assert api("DELETE", f"/v1/users/{name}?delete_databases=true", admin_key).status_code == 204
    assert_error(api("GET", "/v1/me", key), 401, "unauthorized")
    assert api("GET", "/v1/databases", ckey).json() == []
    for db in dbs:
        r = api("GET", f"/v1/databases/{db['full_name']}", admin_key)
        assert_error(r, 404, "database_not_found")
    with superuser() as conn:
        for db in dbs:
            assert (
                conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (pg_name(db),)
                ).fetchone()
                is None
            )
            roles = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (pg_name(db) + "\\_%",)
            ).fetchall()
            assert roles == []


def test_deleting_a_user_without_databases_needs_no_flag(
    api: Api, admin_key: str, make_user: MakeUser
) -> None:
    name, _ = make_user()
    r = api("DELETE", f"/v1/users/{name}?delete_databases=true", admin_key)
    assert r.status_code == 204


# -- keys ------------------------------------------------------------------------------


@pytest.fixture
def fresh(make_user: MakeUser) -> tuple[str, str]:
    return make_user()


def test_create_key_shows_the_secret_once(api: Api, fresh: tuple[str, str]) -> None:
    _, key = fresh
    r = api("POST", "/v1/keys", key, json={"name": "ci", "scope": "read"})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("mp_") and len(secret) == 43
    assert created["name"] == "ci" and created["scope"] == "read"
    assert created["prefix"] == secret[:10]
    assert created["expires_at"] is None
    assert created["service_account_id"] is None
    listed = api("GET", "/v1/keys", key)
    assert secret not in listed.text
    for item in listed.json():
        assert "secret" not in item and "secret_hash" not in item
        assert set(item) == {
            "id",
            "name",
            "prefix",
            "scope",
            "created_at",
            "expires_at",
            "last_used_at",
            "service_account_id",
            "environment_id",
        }
    assert created["id"] in {k["id"] for k in listed.json()}
    assert secret not in api("GET", "/v1/me", secret).text


def test_keys_are_stored_hashed(
    api: Api, fresh: tuple[str, str], superuser: Superuser, server: Any
) -> None:
    _, key = fresh
    created = api("POST", "/v1/keys", key, json={}).json()
    secret = created["secret"]
    with superuser(server.settings.control_database) as conn:
        cur = conn.execute("SELECT * FROM api_keys WHERE id = %s", (created["id"],))
        row = cur.fetchone()
        assert row is not None
        columns = [d.name for d in cur.description or ()]
        # no column holds the secret, in any form but its SHA-256
        for column, value in zip(columns, row, strict=True):
            as_text = value.hex() if isinstance(value, bytes) else str(value)
            assert secret not in as_text, column
            assert secret[10:] not in as_text, column
            if isinstance(value, bytes):
                assert secret.encode() not in value, column
        assert dict(zip(columns, row, strict=True))["secret_hash"] == (
            hashlib.sha256(secret.encode()).digest()
        )
        # and the whole table never holds it, whatever the column
        dump = conn.execute("SELECT api_keys::text FROM api_keys").fetchall()
        assert not any(secret in r[0] for r in dump)


def test_last_used_is_recorded(api: Api, fresh: tuple[str, str]) -> None:
    _, key = fresh
    created = api("POST", "/v1/keys", key, json={}).json()
    assert created["last_used_at"] is None
    api("GET", "/v1/me", created["secret"])
    listed = {k["id"]: k for k in api("GET", "/v1/keys", key).json()}
    assert listed[created["id"]]["last_used_at"] is not None


def test_revoke_a_key_by_id(api: Api, fresh: tuple[str, str], make_user: MakeUser) -> None:
    _, key = fresh
    other = api("POST", "/v1/keys", key, json={}).json()
    assert api("GET", "/v1/me", other["secret"]).status_code == 200
    assert api("DELETE", f"/v1/keys/{other['id']}", key).status_code == 204
    assert_error(api("GET", "/v1/me", other["secret"]), 401, "unauthorized")
    assert other["id"] not in _key_ids(api, key)
    # again: it is no longer an active key
    assert_error(api("DELETE", f"/v1/keys/{other['id']}", key), 404, "key_not_found")
    assert_error(api("DELETE", "/v1/keys/key_0000000000000000", key), 404, "key_not_found")


def test_cannot_revoke_someone_elses_key(
    api: Api, fresh: tuple[str, str], make_user: MakeUser
) -> None:
    _, key = fresh
    _, victim = make_user()
    victim_key = api("GET", "/v1/me", victim).json()["key"]
    assert_error(api("DELETE", f"/v1/keys/{victim_key['id']}", key), 404, "key_not_found")
    r = api("POST", "/v1/keys/revoke", key, json={"key_id": victim_key["id"]})
    assert_error(r, 404, "key_not_found")
    r = api("POST", "/v1/keys/revoke", key, json={"api_key": victim})
    assert_error(r, 404, "key_not_found")
    assert api("GET", "/v1/me", victim).status_code == 200
    # "revoke all" revokes only the caller's own
    assert api("POST", "/v1/keys/revoke", key, json={}).json() == {"count": 1}
    assert api("GET", "/v1/me", victim).status_code == 200


def test_revoke_by_id_by_secret_and_all(api: Api, fresh: tuple[str, str]) -> None:
    _, key = fresh
    a, b, c = (api("POST", "/v1/keys", key, json={"name": n}).json() for n in "abc")
    r = api("POST", "/v1/keys/revoke", key, json={"key_id": a["id"]})
    assert r.status_code == 200 and r.json() == {"count": 1}
    assert_error(api("GET", "/v1/me", a["secret"]), 401, "unauthorized")
    r = api("POST", "/v1/keys/revoke", key, json={"api_key": b["secret"]})
    assert r.json() == {"count": 1}
    assert_error(api("GET", "/v1/me", b["secret"]), 401, "unauthorized")
    assert api("GET", "/v1/me", c["secret"]).status_code == 200
    # again, or unknown: 404 and nothing revoked
    for body in ({"key_id": a["id"]}, {"api_key": b["secret"]}, {"key_id": ""}):
        assert_error(api("POST", "/v1/keys/revoke", key, json=body), 404, "key_not_found")
    both = {"key_id": c["id"], "api_key": c["secret"]}
    assert_error(api("POST", "/v1/keys/revoke", key, json=both), 422, "validation_error")
    assert api("GET", "/v1/me", c["secret"]).status_code == 200
    # neither: all of them, including the caller's own key
    assert api("POST", "/v1/keys/revoke", c["secret"], json={}).json() == {"count": 2}
    assert_error(api("GET", "/v1/me", c["secret"]), 401, "unauthorized")
    assert_error(api("GET", "/v1/me", key), 401, "unauthorized")


def test_read_scope_key(api: Api, fresh: tuple[str, str], make_db: MakeDb) -> None:
    name, key = fresh
    db = make_db(key)
    api(
        "POST", "/v1/query", key, json={"database": db["full_name"], "sql": "CREATE TABLE t(a int)"}
    )
    read = api("POST", "/v1/keys", key, json={"scope": "read"}).json()
    ro = read["secret"]
    keys_before = _key_ids(api, key)
    dbs_before = api("GET", "/v1/databases", key).json()
    # cannot write anything through the API
    assert_error(api("POST", "/v1/keys", ro, json={}), 403, "read_only_key")
    assert_error(api("POST", "/v1/keys/revoke", ro, json={}), 403, "read_only_key")
    assert_error(api("DELETE", f"/v1/keys/{read['id']}", ro), 403, "read_only_key")
    r = api("POST", "/v1/databases", ro, json={"name": unique("ro")})
    assert_error(r, 403, "read_only_key")
    assert_error(api("POST", "/v1/service-accounts", ro, json={"name": "x"}), 403, "read_only_key")
    assert _key_ids(api, key) == keys_before
    assert api("GET", "/v1/databases", key).json() == dbs_before
    # can list and read
    assert api("GET", "/v1/keys", ro).status_code == 200
    assert api("GET", "/v1/me", ro).json()["key"]["scope"] == "read"
    listed = api("GET", "/v1/databases", ro).json()
    assert [(d["full_name"], d["role"]) for d in listed] == [(db["full_name"], "read")]
    assert api("GET", "/v1/service-accounts", ro).status_code == 200
    q = api("POST", "/v1/query", ro, json={"database": db["full_name"], "sql": "SELECT 1 AS one"})
    assert q.status_code == 200 and q.json()["data"] == [[1]]
    w = {"database": db["full_name"], "sql": "INSERT INTO t VALUES (1)"}
    assert_write_refused(api("POST", "/v1/query", ro, json=w))
    w["sql"] = "SET TRANSACTION READ WRITE; INSERT INTO t VALUES (1)"
    assert_permission_denied(api("POST", "/v1/query", ro, json=w))
    assert api("GET", f"/v1/users/{name}", ro).status_code == 200


def test_key_expiry_is_reported(api: Api, fresh: tuple[str, str]) -> None:
    _, key = fresh
    created = api("POST", "/v1/keys", key, json={"expires_in_seconds": 3600}).json()
    listed = {k["id"]: k for k in api("GET", "/v1/keys", key).json()}
    assert listed[created["id"]]["expires_at"] == created["expires_at"]
    assert api("GET", "/v1/me", created["secret"]).status_code == 200


# -- service accounts ------------------------------------------------------------------


@pytest.fixture
def owner(make_user: MakeUser) -> tuple[str, str]:
    return make_user()


def _sa(api: Api, key: str, name: str = "bot") -> dict[str, Any]:
    r = api("POST", "/v1/service-accounts", key, json={"name": name})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_service_account_lifecycle(api: Api, owner: tuple[str, str]) -> None:
    name, key = owner
    sa = _sa(api, key, "deployer")
    assert sa["name"] == "deployer" and sa["owner"] == name and sa["key_count"] == 0
    assert_error(
        api("POST", "/v1/service-accounts", key, json={"name": "deployer"}),
        409,
        "service_account_exists",
    )
    assert [s["id"] for s in api("GET", "/v1/service-accounts", key).json()] == [sa["id"]]
    assert api("GET", f"/v1/service-accounts/{sa['id']}", key).json() == sa

    r = api("POST", f"/v1/service-accounts/{sa['id']}/keys", key, json={"name": "ci"})
    assert r.status_code == 201, r.text
    sa_key = r.json()
    assert sa_key["secret"].startswith("mp_")
    assert sa_key["service_account_id"] == sa["id"]
    listed = api("GET", f"/v1/service-accounts/{sa['id']}/keys", key)
    assert [k["id"] for k in listed.json()] == [sa_key["id"]]
    assert sa_key["secret"] not in listed.text
    assert api("GET", f"/v1/service-accounts/{sa['id']}", key).json()["key_count"] == 1
    # the user's own key list does not mix in the service account's keys
    assert sa_key["id"] not in _key_ids(api, key)

    me = api("GET", "/v1/me", sa_key["secret"]).json()
    assert me["user"]["username"] == name
    assert me["service_account"]["id"] == sa["id"]
    assert me["key"]["service_account_id"] == sa["id"]

    assert api("DELETE", f"/v1/service-accounts/{sa['id']}", key).status_code == 204
    assert_error(api("GET", "/v1/me", sa_key["secret"]), 401, "unauthorized")
    r = api("GET", f"/v1/service-accounts/{sa['id']}", key)
    assert_error(r, 404, "service_account_not_found")
    assert api("GET", "/v1/service-accounts", key).json() == []


def test_revoke_service_account_keys(api: Api, owner: tuple[str, str]) -> None:
    _, key = owner
    sa = _sa(api, key)
    path = f"/v1/service-accounts/{sa['id']}/keys"
    a, b, c = (api("POST", path, key, json={}).json() for _ in range(3))
    assert api("POST", f"{path}/revoke", key, json={"key_id": a["id"]}).json() == {"count": 1}
    assert api("POST", f"{path}/revoke", key, json={"api_key": b["secret"]}).json() == {"count": 1}
    assert_error(api("GET", "/v1/me", a["secret"]), 401, "unauthorized")
    assert_error(api("GET", "/v1/me", b["secret"]), 401, "unauthorized")
    assert api("GET", "/v1/me", c["secret"]).status_code == 200
    r = api("POST", f"{path}/revoke", key, json={"key_id": a["id"]})
    assert_error(r, 404, "key_not_found")
    # the owner's own keys cannot be revoked through the service account
    own = api("GET", "/v1/me", key).json()["key"]["id"]
    assert_error(api("POST", f"{path}/revoke", key, json={"key_id": own}), 404, "key_not_found")
    assert api("POST", f"{path}/revoke", key, json={}).json() == {"count": 1}
    assert_error(api("GET", "/v1/me", c["secret"]), 401, "unauthorized")
    assert api("GET", "/v1/me", key).status_code == 200
    assert api("GET", path, key).json() == []


def test_another_users_service_account_is_404(
    api: Api, owner: tuple[str, str], make_user: MakeUser, admin_key: str
) -> None:
    _, key = owner
    sa = _sa(api, key)
    sa_key = api("POST", f"/v1/service-accounts/{sa['id']}/keys", key, json={}).json()
    _, stranger = make_user()
    base = f"/v1/service-accounts/{sa['id']}"
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", base, None),
        ("DELETE", base, None),
        ("POST", f"{base}/keys", {}),
        ("GET", f"{base}/keys", None),
        ("POST", f"{base}/keys/revoke", {}),
    ]
    for who in (stranger, admin_key):
        for method, path, body in calls:
            kwargs: dict[str, Any] = {} if body is None else {"json": body}
            assert_error(api(method, path, who, **kwargs), 404, "service_account_not_found")
        assert api("GET", "/v1/service-accounts", who).json() == []
    # an id that does not exist at all looks the same as someone else's
    r = api("GET", "/v1/service-accounts/999999999", key)
    assert_error(r, 404, "service_account_not_found")
    # nothing changed
    assert api("GET", base, key).json()["key_count"] == 1
    assert api("GET", "/v1/me", sa_key["secret"]).status_code == 200


def test_service_account_endpoints_anonymous_and_read_key(api: Api, owner: tuple[str, str]) -> None:
    _, key = owner
    sa = _sa(api, key)
    base = f"/v1/service-accounts/{sa['id']}"
    ro = api("POST", "/v1/keys", key, json={"scope": "read"}).json()["secret"]
    writes = [
        ("POST", "/v1/service-accounts", {"name": "other"}),
        ("DELETE", base, None),
        ("POST", f"{base}/keys", {}),
        ("POST", f"{base}/keys/revoke", {}),
    ]
    reads = [
        ("GET", "/v1/service-accounts", None),
        ("GET", base, None),
        ("GET", f"{base}/keys", None),
    ]
    for method, path, body in writes + reads:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        assert_error(api(method, path, **kwargs), 401, "unauthorized")
    for method, path, body in writes:
        kwargs = {} if body is None else {"json": body}
        assert_error(api(method, path, ro, **kwargs), 403, "read_only_key")
    for method, path, _ in reads:
        assert api(method, path, ro).status_code == 200
    assert [s["name"] for s in api("GET", "/v1/service-accounts", key).json()] == ["bot"]


def test_service_account_key_acts_with_owners_database_rights(
    api: Api, owner: tuple[str, str], make_user: MakeUser, make_db: MakeDb
) -> None:
    name, key = owner
    _, other_key = make_user()
    mine = make_db(key)
    theirs = make_db(other_key)  # private, not shared
    shared = make_db(other_key)
    api(
        "PUT",
        f"/v1/databases/{shared['full_name']}/collaborators/{name}",
        other_key,
        json={"role": "read"},
    )
    sa = _sa(api, key)
    sa_w = api("POST", f"/v1/service-accounts/{sa['id']}/keys", key, json={}).json()["secret"]
    sa_r = api("POST", f"/v1/service-accounts/{sa['id']}/keys", key, json={"scope": "read"}).json()[
        "secret"
    ]

    # same view of databases as its owner
    assert api("GET", "/v1/databases", sa_w).json() == api("GET", "/v1/databases", key).json()
    assert api("GET", f"/v1/databases/{mine['full_name']}", sa_w).json()["role"] == "owner"
    assert api("GET", f"/v1/databases/{shared['full_name']}", sa_w).json()["role"] == "read"
    r = api("GET", f"/v1/databases/{theirs['full_name']}", sa_w)
    assert_error(r, 404, "database_not_found")
    q = {"database": mine["full_name"], "sql": "CREATE TABLE t(a int); INSERT INTO t VALUES (1)"}
    assert api("POST", "/v1/query", sa_w, json=q).status_code == 200
    q = {"database": shared["full_name"], "sql": "CREATE TABLE t(a int)"}
    assert_write_refused(api("POST", "/v1/query", sa_w, json=q))
    # a database it creates belongs to its owner
    created = api("POST", "/v1/databases", sa_w, json={"name": unique("bydb")})
    assert created.status_code == 201 and created.json()["owner"] == name
    # its own keys
    new = api("POST", "/v1/keys", sa_w, json={"name": "rotated"})
    assert new.status_code == 201 and new.json()["service_account_id"] == sa["id"]
    assert new.json()["id"] in _key_ids(api, sa_w)
    assert new.json()["id"] not in _key_ids(api, key)

    # read scope: reads only
    q = {"database": mine["full_name"], "sql": "SELECT a FROM t"}
    assert api("POST", "/v1/query", sa_r, json=q).json()["data"] == [[1]]
    q = {"database": mine["full_name"], "sql": "INSERT INTO t VALUES (2)"}
    assert_write_refused(api("POST", "/v1/query", sa_r, json=q))
    r = api("POST", "/v1/databases", sa_r, json={"name": unique("nope")})
    assert_error(r, 403, "read_only_key")
    r = api("PATCH", f"/v1/databases/{mine['full_name']}", sa_r, json={"is_private": False})
    assert_error(r, 403, "read_only_key")
    assert api("GET", f"/v1/databases/{mine['full_name']}", key).json()["is_private"] is True


def test_service_account_key_cannot_manage_service_accounts_or_users(
    api: Api, admin_key: str, make_user: MakeUser
) -> None:
    _, boss_key = make_user(is_admin=True)
    sa = _sa(api, boss_key)
    base = f"/v1/service-accounts/{sa['id']}"
    sa_key = api("POST", f"{base}/keys", boss_key, json={}).json()["secret"]
    for method, path, body in [
        ("POST", "/v1/service-accounts", {"name": "child"}),
        ("GET", "/v1/service-accounts", None),
        ("GET", base, None),
        ("DELETE", base, None),
        ("POST", f"{base}/keys", {}),
        ("GET", f"{base}/keys", None),
        ("POST", f"{base}/keys/revoke", {}),
    ]:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        assert_error(api(method, path, sa_key, **kwargs), 403, "forbidden")
    # its owner is an admin, but the service account is not
    victim, _ = make_user()
    new = unique("sa-made")
    assert_error(api("POST", "/v1/users", sa_key, json={"username": new}), 403, "admin_required")
    assert_error(api("GET", "/v1/users", sa_key), 403, "admin_required")
    assert_error(api("GET", f"/v1/users/{victim}", sa_key), 403, "admin_required")
    assert_error(api("DELETE", f"/v1/users/{victim}", sa_key), 403, "admin_required")
    names = _usernames(api, admin_key)
    assert victim in names and new not in names
    listed = api("GET", base, boss_key).json()
    assert listed["key_count"] == 1
    assert [s["name"] for s in api("GET", "/v1/service-accounts", boss_key).json()] == ["bot"]


def test_an_admins_service_account_is_no_admin(
    api: Api, admin_key: str, make_user: MakeUser, make_db: MakeDb
) -> None:
    """A service account acts with its owner's rights on databases the owner has by
    ownership or collaboration, but never with the owner's server-admin powers."""
    _, other = make_user()
    private = make_db(other)
    r = api("POST", "/v1/service-accounts", admin_key, json={"name": unique("adminsa")})
    assert r.status_code == 201, r.text
    sa = r.json()
    r = api("POST", f"/v1/service-accounts/{sa['id']}/keys", admin_key, json={})
    sa_key = r.json()["secret"]
    assert_error(
        api("GET", f"/v1/databases/{private['full_name']}", sa_key), 404, "database_not_found"
    )
    assert_error(api("GET", "/v1/users", sa_key), 403, "admin_required")
    # the admin's own key does reach it
    assert api("GET", f"/v1/databases/{private['full_name']}", admin_key).status_code == 200
