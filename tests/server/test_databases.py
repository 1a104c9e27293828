"""/v1/databases: the role matrix (every endpoint for anonymous, stranger, read, write and
admin collaborators, owner, the owner's read-only key, a server admin; on private and
public databases), names, renames, privacy, storage limits, deletion down to Postgres,
and least privilege in Postgres itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from millpond.server.postgres import scram
from millpond.server.postgres.provision import ROLE_SUFFIXES

from ._helpers import (
    assert_error,
    assert_permission_denied,
    assert_write_refused,
    pg_name,
    unique,
)
from .conftest import Call, Superuser

MakeUser = Callable[..., tuple[str, str]]
MakeDb = Callable[..., dict[str, Any]]

ROLES = [
    "anonymous",
    "stranger",
    "read",
    "write",
    "admin",
    "owner",
    "owner_read_key",
    "server_admin",
]


@dataclass
class Cast:
    """Everyone who calls, by role; ``keys[role]`` is None for anonymous."""

    names: dict[str, str]
    keys: dict[str, str | None]

    @property
    def owner_key(self) -> str:
        key = self.keys["owner"]
        assert key is not None
        return key


@pytest.fixture(scope="module")
def cast(call: Call, make_user: MakeUser) -> Cast:
    names: dict[str, str] = {}
    keys: dict[str, str | None] = {"anonymous": None}
    for role in ("owner", "read", "write", "admin", "stranger", "bystander", "leaver"):
        names[role], keys[role] = make_user(prefix=role)
    names["server_admin"], keys["server_admin"] = make_user(is_admin=True, prefix="root")
    r = call("POST", "/v1/keys", keys["owner"], json={"scope": "read", "name": "ro"})
    keys["owner_read_key"] = r.json()["secret"]
    names["owner_read_key"] = names["owner"]
    # databases made here are left to the session's throwaway cluster: dropping dozens
    # of them one by one would cost more time than all these tests
    return Cast(names, keys)


def _shared_db(
    call: Call, cast: Cast, is_private: bool, with_leaver: bool = False
) -> dict[str, Any]:
    """A database of ``owner`` with read/write/admin collaborators and a table ``t``."""
    r = call(
        "POST",
        "/v1/databases",
        cast.owner_key,
        json={"name": unique("m"), "is_private": is_private},
    )
    assert r.status_code == 201, r.text
    db = dict(r.json())
    full = db["full_name"]
    roles = ["read", "write", "admin"] + (["leaver"] if with_leaver else [])
    for role in roles:
        body = {"role": "read" if role == "leaver" else role}
        r = call(
            "PUT",
            f"/v1/databases/{full}/collaborators/{cast.names[role]}",
            cast.owner_key,
            json=body,
        )
        assert r.status_code == 200, r.text
    q = {"database": full, "sql": "CREATE TABLE t (a int)"}
    assert call("POST", "/v1/query", cast.owner_key, json=q).status_code == 200
    return db


@pytest.fixture(scope="module")
def private_db(call: Call, cast: Cast) -> dict[str, Any]:
    return _shared_db(call, cast, is_private=True)


@pytest.fixture(scope="module")
def public_db(call: Call, cast: Cast) -> dict[str, Any]:
    return _shared_db(call, cast, is_private=False)


def _state(call: Call, cast: Cast, full: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the owner sees of a database (minus its size, which Postgres moves)."""
    r = call("GET", f"/v1/databases/{full}", cast.owner_key)
    assert r.status_code == 200, r.text
    db = {k: v for k, v in r.json().items() if k != "size_bytes"}
    collabs = call("GET", f"/v1/databases/{full}/collaborators", cast.owner_key).json()
    return db, collabs


# -- the matrix ------------------------------------------------------------------------

Expect = dict[str, tuple[int, str | None]]

# what each role gets, on a private database: (status, code or the role shown)
_READ_OK: Expect = {
    "anonymous": (401, "unauthorized"),
    "stranger": (404, "database_not_found"),
    "read": (200, "read"),
    "write": (200, "write"),
    "admin": (200, "admin"),
    "owner": (200, "owner"),
    "owner_read_key": (200, "read"),
    "server_admin": (200, "owner"),
}
_MANAGE: Expect = {
    "anonymous": (401, "unauthorized"),
    "stranger": (404, "database_not_found"),
    "read": (403, "forbidden"),
    "write": (403, "forbidden"),
    "admin": (200, None),
    "owner": (200, None),
    "owner_read_key": (403, "read_only_key"),
    "server_admin": (200, None),
}
_DELETE: Expect = {
    **_MANAGE,
    "admin": (403, "forbidden"),
    "owner": (204, None),
    "server_admin": (204, None),
}
_QUERY_WRITE: Expect = {
    **{r: (200, None) for r in ("write", "admin", "owner", "server_admin")},
    "anonymous": (401, "unauthorized"),
    "stranger": (404, "database_not_found"),
    "read": (400, "sql_error"),
    "owner_read_key": (400, "sql_error"),
}
# on a public database a stranger is a reader
_PUBLIC_STRANGER: Expect = {
    "get": (200, "read"),
    "collaborators": (200, None),
    "update": (403, "forbidden"),
    "delete": (403, "forbidden"),
    "set_collaborator": (403, "forbidden"),
    "remove_collaborator": (403, "forbidden"),
    "query_read": (200, None),
    "query_write": (400, "sql_error"),
}
_PUBLIC_ROLES = ["anonymous", "stranger", "read", "owner_read_key"]


def _expected(endpoint: str, role: str, public: bool) -> tuple[int, str | None]:
    if public and role == "stranger":
        return _PUBLIC_STRANGER[endpoint]
    table: Expect = {
        "get": _READ_OK,
        "collaborators": _READ_OK,
        "query_read": _READ_OK,
        "update": _MANAGE,
        "set_collaborator": _MANAGE,
        "remove_collaborator": _MANAGE,
        "delete": _DELETE,
        "query_write": _QUERY_WRITE,
    }[endpoint]
    return table[role]


def _cases() -> list[Any]:
    return [pytest.param(role, False, id=f"private-{role}") for role in ROLES] + [
        pytest.param(role, True, id=f"public-{role}") for role in _PUBLIC_ROLES
    ]


def _check(r: Any, status: int, code: str | None) -> None:
    if status >= 400:
        err = assert_error(r, status, code or "")
        if code == "sql_error":
            assert err["details"]["sqlstate"] in ("25006", "42501")
    else:
        assert r.status_code == status, (r.status_code, r.text)


@pytest.mark.parametrize(("role", "public"), _cases())
def test_get(
    call: Call, cast: Cast, private_db: Any, public_db: Any, role: str, public: bool
) -> None:
    db = public_db if public else private_db
    status, expect = _expected("get", role, public)
    r = call("GET", f"/v1/databases/{db['full_name']}", cast.keys[role])
    _check(r, status, None if status == 200 else expect)
    if status == 200:
        body = r.json()
        assert body["role"] == expect
        assert body["full_name"] == db["full_name"] and body["id"] == db["id"]
        assert body["is_private"] is (not public)
        assert body["size_bytes"] > 0


@pytest.mark.parametrize(("role", "public"), _cases())
def test_list_collaborators(
    call: Call, cast: Cast, private_db: Any, public_db: Any, role: str, public: bool
) -> None:
    db = public_db if public else private_db
    status, code = _expected("collaborators", role, public)
    r = call("GET", f"/v1/databases/{db['full_name']}/collaborators", cast.keys[role])
    _check(r, status, None if status == 200 else code)
    if status == 200:
        got = {(c["username"], c["role"]) for c in r.json()}
        assert got == {(cast.names[x], x) for x in ("read", "write", "admin")}


@pytest.mark.parametrize(("role", "public"), _cases())
def test_query_read(
    call: Call, cast: Cast, private_db: Any, public_db: Any, role: str, public: bool
) -> None:
    db = public_db if public else private_db
    status, code = _expected("query_read", role, public)
    q = {"database": db["full_name"], "sql": "SELECT count(*) AS n FROM t"}
    r = call("POST", "/v1/query", cast.keys[role], json=q)
    _check(r, status, None if status == 200 else code)
    if status == 200:
        assert r.json()["columns"] == [{"name": "n", "type": "int8"}]


@pytest.mark.parametrize(("role", "public"), _cases())
def test_query_write(
    call: Call, cast: Cast, private_db: Any, public_db: Any, role: str, public: bool
) -> None:
    db = public_db if public else private_db
    status, code = _expected("query_write", role, public)
    count = {"database": db["full_name"], "sql": "SELECT count(*) FROM t"}
    before = call("POST", "/v1/query", cast.owner_key, json=count).json()["data"][0][0]
    q = {"database": db["full_name"], "sql": "INSERT INTO t VALUES (1)"}
    r = call("POST", "/v1/query", cast.keys[role], json=q)
    _check(r, status, code)
    after = call("POST", "/v1/query", cast.owner_key, json=count).json()["data"][0][0]
    assert after == before + (1 if status == 200 else 0)
    if status == 200:
        assert r.json()["command"] == "INSERT 0 1" and r.json()["row_count"] == 1


@pytest.fixture(scope="module")
def mutable_dbs(call: Call, cast: Cast) -> dict[bool, dict[str, Any]]:
    """Databases the manage tests change and put back, by ``is_public``; they also have
    a ``leaver`` read collaborator to remove."""
    return {
        public: _shared_db(call, cast, is_private=not public, with_leaver=True)
        for public in (False, True)
    }


@pytest.mark.parametrize(("role", "public"), _cases())
def test_update(
    call: Call, cast: Cast, mutable_dbs: dict[bool, Any], role: str, public: bool
) -> None:
    full = mutable_dbs[public]["full_name"]
    status, code = _expected("update", role, public)
    before = _state(call, cast, full)
    body = {"is_private": public, "storage_limit_bytes": 10**9}
    r = call("PATCH", f"/v1/databases/{full}", cast.keys[role], json=body)
    _check(r, status, code)
    after = _state(call, cast, full)
    if status == 200:
        assert r.json()["is_private"] is public and r.json()["storage_limit_bytes"] == 10**9
        assert r.json()["role"] == _READ_OK[role][1]
        assert after[0]["is_private"] is public and after[0]["storage_limit_bytes"] == 10**9
        assert after[0]["updated_at"] > before[0]["updated_at"]
        assert after[1] == before[1]
        undo = {"is_private": not public, "clear_storage_limit": True}
        assert call("PATCH", f"/v1/databases/{full}", cast.owner_key, json=undo).status_code == 200
    else:
        assert after == before


@pytest.mark.parametrize(("role", "public"), _cases())
def test_delete(
    call: Call,
    cast: Cast,
    mutable_dbs: dict[bool, Any],
    superuser: Superuser,
    role: str,
    public: bool,
) -> None:
    status, code = _expected("delete", role, public)
    # only the callers who may delete get a database of their own to delete
    db = _shared_db(call, cast, is_private=not public) if status == 204 else mutable_dbs[public]
    full = db["full_name"]
    before = _state(call, cast, full)
    r = call("DELETE", f"/v1/databases/{full}", cast.keys[role])
    _check(r, status, code)
    with superuser() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (pg_name(db),)
        ).fetchone()
    if status == 204:
        assert r.content == b""
        r = call("GET", f"/v1/databases/{full}", cast.owner_key)
        assert_error(r, 404, "database_not_found")
        assert exists is None
    else:
        assert _state(call, cast, full) == before
        assert exists is not None


@pytest.mark.parametrize(("role", "public"), _cases())
def test_set_collaborator(
    call: Call, cast: Cast, mutable_dbs: dict[bool, Any], role: str, public: bool
) -> None:
    full = mutable_dbs[public]["full_name"]
    status, code = _expected("set_collaborator", role, public)
    before = _state(call, cast, full)
    target = cast.names["bystander"]
    path = f"/v1/databases/{full}/collaborators/{target}"
    r = call("PUT", path, cast.keys[role], json={"role": "write"})
    _check(r, status, code)
    after = _state(call, cast, full)
    if status == 200:
        assert r.json()["username"] == target and r.json()["role"] == "write"
        assert (target, "write") in {(c["username"], c["role"]) for c in after[1]}
        # and it takes effect: the bystander can now see and write the database
        q = {"database": full, "sql": "INSERT INTO t VALUES (7)"}
        assert call("POST", "/v1/query", cast.keys["bystander"], json=q).status_code == 200
        assert call("DELETE", path, cast.owner_key).status_code == 204
        assert _state(call, cast, full)[1] == before[1]
    else:
        assert after == before


@pytest.mark.parametrize(("role", "public"), _cases())
def test_remove_collaborator(
    call: Call, cast: Cast, mutable_dbs: dict[bool, Any], role: str, public: bool
) -> None:
    full = mutable_dbs[public]["full_name"]
    status, code = _expected("remove_collaborator", role, public)
    status = 204 if status == 200 else status
    before = _state(call, cast, full)
    target = cast.names["leaver"]
    path = f"/v1/databases/{full}/collaborators/{target}"
    r = call("DELETE", path, cast.keys[role])
    _check(r, status, code)
    after = _state(call, cast, full)
    if status == 204:
        assert target not in {c["username"] for c in after[1]}
        r = call("GET", f"/v1/databases/{full}", cast.keys["leaver"])
        if public:
            assert r.json()["role"] == "read"
        else:
            assert_error(r, 404, "database_not_found")
        assert call("PUT", path, cast.owner_key, json={"role": "read"}).status_code == 200
    else:
        assert after == before


# -- collaborators: bad input ------------------------------------------------------------


def test_collaborator_errors_change_nothing(call: Call, cast: Cast, private_db: Any) -> None:
    full = private_db["full_name"]
    key = cast.owner_key
    before = _state(call, cast, full)
    base = f"/v1/databases/{full}/collaborators"
    assert_error(
        call("PUT", f"{base}/no-such-user", key, json={"role": "read"}), 404, "user_not_found"
    )
    r = call("PUT", f"{base}/{cast.names['owner']}", key, json={"role": "read"})
    assert_error(r, 422, "validation_error")
    r = call("PUT", f"{base}/{cast.names['owner'].upper()}", key, json={"role": "admin"})
    assert_error(r, 422, "validation_error")
    bystander = cast.names["bystander"]
    for body in ({"role": "owner"}, {"role": "READ"}, {}, {"role": "read", "x": 1}):
        assert_error(call("PUT", f"{base}/{bystander}", key, json=body), 422, "validation_error")
    assert_error(call("DELETE", f"{base}/{bystander}", key), 404, "collaborator_not_found")
    assert_error(call("DELETE", f"{base}/no-such-user", key), 404, "user_not_found")
    assert _state(call, cast, full) == before


def test_collaborator_role_changes_take_effect(
    call: Call, cast: Cast, make_user: MakeUser, make_db: MakeDb
) -> None:
    db = make_db(cast.owner_key)
    full = db["full_name"]
    name, key = make_user()
    base = f"/v1/databases/{full}/collaborators/{name}"
    insert = {
        "database": full,
        "sql": "CREATE TABLE IF NOT EXISTS c (a int); INSERT INTO c VALUES (1)",
    }
    assert_error(call("POST", "/v1/query", key, json=insert), 404, "database_not_found")
    assert call("PUT", base, cast.owner_key, json={"role": "read"}).json()["role"] == "read"
    assert_write_refused(call("POST", "/v1/query", key, json=insert))
    assert call("PUT", base, cast.owner_key, json={"role": "write"}).json()["role"] == "write"
    assert call("POST", "/v1/query", key, json=insert).status_code == 200
    listed = {d["full_name"]: d["role"] for d in call("GET", "/v1/databases", key).json()}
    assert listed == {full: "write"}
    assert call("DELETE", base, cast.owner_key).status_code == 204
    assert_error(call("POST", "/v1/query", key, json=insert), 404, "database_not_found")
    assert call("GET", "/v1/databases", key).json() == []


def test_admin_collaborator_can_manage_collaborators_but_not_delete(
    call: Call, cast: Cast, private_db: Any
) -> None:
    full = private_db["full_name"]
    admin = cast.keys["admin"]
    target = cast.names["bystander"]
    base = f"/v1/databases/{full}/collaborators/{target}"
    assert call("PUT", base, admin, json={"role": "admin"}).status_code == 200
    assert call("GET", f"/v1/databases/{full}", cast.keys["bystander"]).json()["role"] == "admin"
    assert call("DELETE", base, admin).status_code == 204
    assert_error(call("DELETE", f"/v1/databases/{full}", admin), 403, "forbidden")


# -- create, names ----------------------------------------------------------------------


def _pg_databases(superuser: Superuser) -> set[str]:
    with superuser() as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def test_create(call: Call, cast: Cast, superuser: Superuser) -> None:
    name = unique("Fresh")
    r = call("POST", "/v1/databases", cast.owner_key, json={"name": name})
    assert r.status_code == 201, r.text
    db = r.json()
    assert db["owner"] == cast.names["owner"] and db["name"] == name
    assert db["full_name"] == f"{cast.names['owner']}/{name}"
    assert db["is_private"] is True and db["storage_limit_bytes"] is None
    assert db["role"] == "owner" and db["size_bytes"] > 0
    assert pg_name(db) in _pg_databases(superuser)
    # case-insensitive lookups
    owner, _, dbname = db["full_name"].partition("/")
    r = call("GET", f"/v1/databases/{owner.upper()}/{dbname.lower()}", cast.owner_key)
    assert r.status_code == 200 and r.json()["id"] == db["id"]


def test_role_passwords_are_handed_to_postgres_as_verifiers(
    call: Call, cast: Cast, superuser: Superuser
) -> None:
    """Each role's password reaches Postgres as a SCRAM verifier of scram.ITERATIONS
    iterations (the text of the password never does), and is the one the server derives:
    its sessions log in with it, queries work."""
    name = unique("verified")
    r = call("POST", "/v1/databases", cast.owner_key, json={"name": name})
    assert r.status_code == 201, r.text
    prefix = pg_name(r.json())
    with superuser() as conn:
        rows = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE %s ORDER BY 1",
            (prefix + "\\_%",),
        ).fetchall()
    assert [role for role, _ in rows] == sorted(f"{prefix}_{s}" for s in ROLE_SUFFIXES)
    salts = set()
    for _, verifier in rows:
        method, iterations_salt, _ = verifier.split("$")
        iterations, salt = iterations_salt.split(":")
        assert method == "SCRAM-SHA-256" and int(iterations) == scram.ITERATIONS, verifier
        salts.add(salt)
    assert len(salts) == 4  # a salt of its own each
    with superuser() as conn:  # the embedded cluster's superuser, set at initdb, too
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = current_user")
        assert str(row.fetchone()[0]).startswith(f"SCRAM-SHA-256${scram.ITERATIONS}:")  # type: ignore[index]
    r = call(
        "POST",
        "/v1/query",
        cast.owner_key,
        json={"database": f"{cast.names['owner']}/{name}", "sql": "SELECT current_user"},
    )
    assert r.status_code == 200 and r.json()["data"] == [[f"{prefix}_owner"]], r.text


def test_the_scram_verifier_passes_rfc_7677s_exchange() -> None:
    """RFC 7677's example exchange (user "user", password "pencil"): the ServerKey of our
    verifier signs it as the RFC's server does, and the RFC client's proof checks against
    its StoredKey — what Postgres does with the verifier at each login."""
    salt = "W22ZaJ0SNY7soEsUEjb6gQ=="
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s={salt},i=4096,c=biws,r={nonce}".encode()
    verifier = scram.verifier("pencil", 4096, base64.b64decode(salt))
    assert verifier.startswith(f"SCRAM-SHA-256$4096:{salt}$")
    stored, server = (base64.b64decode(k) for k in verifier.split("$")[2].split(":"))
    signature = hmac.new(server, auth, hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored, auth, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored
    with pytest.raises(ValueError, match="ASCII"):
        scram.verifier("pâté")


def test_create_public_with_limit(call: Call, cast: Cast) -> None:
    body = {"name": unique("pub"), "is_private": False, "storage_limit_bytes": 123456789}
    r = call("POST", "/v1/databases", cast.owner_key, json=body)
    assert r.status_code == 201
    assert r.json()["is_private"] is False and r.json()["storage_limit_bytes"] == 123456789


def test_create_anonymous(call: Call, cast: Cast) -> None:
    assert_error(call("POST", "/v1/databases", json={"name": unique("anon")}), 401, "unauthorized")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-dash",
        "_under",
        "has space",
        "has/slash",
        "dot.ted",
        "x" * 64,
        "ünï",
        "newline\n",
        "semi;colon",
        'quo"te',
        "mp_db_1; DROP DATABASE millpond",
    ],
)
def test_invalid_names_are_422_and_create_nothing(
    call: Call, cast: Cast, superuser: Superuser, name: str
) -> None:
    before = call("GET", "/v1/databases", cast.owner_key).json()
    pg_before = _pg_databases(superuser)
    r = call("POST", "/v1/databases", cast.owner_key, json={"name": name})
    err = assert_error(r, 422, "invalid_name")
    assert err["details"] == {"field": "name"}
    assert call("GET", "/v1/databases", cast.owner_key).json() == before
    assert _pg_databases(superuser) == pg_before


def test_longest_name(call: Call, cast: Cast) -> None:
    name = unique("L").ljust(63, "z")
    r = call("POST", "/v1/databases", cast.owner_key, json={"name": name})
    assert r.status_code == 201, r.text


def test_duplicate_names_are_409_case_insensitively(
    call: Call, cast: Cast, superuser: Superuser
) -> None:
    name = unique("Twin")
    r = call("POST", "/v1/databases", cast.owner_key, json={"name": name})
    assert r.status_code == 201
    before = call("GET", "/v1/databases", cast.owner_key).json()
    pg_before = _pg_databases(superuser)
    for clash in (name, name.lower(), name.upper()):
        r = call("POST", "/v1/databases", cast.owner_key, json={"name": clash, "is_private": False})
        assert_error(r, 409, "database_exists")
    assert call("GET", "/v1/databases", cast.owner_key).json() == before
    assert _pg_databases(superuser) == pg_before
    # another owner may use the same name
    r = call("POST", "/v1/databases", cast.keys["stranger"], json={"name": name})
    assert r.status_code == 201
    call("DELETE", f"/v1/databases/{r.json()['full_name']}", cast.keys["stranger"])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/databases/nobody-here/x",
        "/v1/databases/{owner}/no-such-db",
        "/v1/databases/{owner}/-bad",
    ],
)
def test_unknown_databases_are_404(call: Call, cast: Cast, path: str) -> None:
    path = path.replace("{owner}", cast.names["owner"])
    for method, body in [("GET", None), ("PATCH", {"is_private": False}), ("DELETE", None)]:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        assert_error(call(method, path, cast.owner_key, **kwargs), 404, "database_not_found")
    assert_error(call("GET", path + "/collaborators", cast.owner_key), 404, "database_not_found")
    r = call("PUT", path + "/collaborators/x", cast.owner_key, json={"role": "read"})
    assert_error(r, 404, "database_not_found")


# -- update: rename, privacy, storage limit --------------------------------------------


def test_rename(call: Call, cast: Cast, make_db: MakeDb) -> None:
    db = make_db(cast.owner_key)
    old = db["full_name"]
    q = {"database": old, "sql": "CREATE TABLE kept (a int); INSERT INTO kept VALUES (42)"}
    assert call("POST", "/v1/query", cast.owner_key, json=q).status_code == 200
    new_name = unique("renamed")
    r = call("PATCH", f"/v1/databases/{old}", cast.owner_key, json={"name": new_name})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["name"] == new_name and new["id"] == db["id"]
    assert new["full_name"] == f"{cast.names['owner']}/{new_name}"
    assert_error(call("GET", f"/v1/databases/{old}", cast.owner_key), 404, "database_not_found")
    r = call("POST", "/v1/query", cast.owner_key, json={"database": old, "sql": "SELECT 1"})
    assert_error(r, 404, "database_not_found")
    assert call("GET", f"/v1/databases/{new['full_name']}", cast.owner_key).json()["id"] == db["id"]
    q = {"database": new["full_name"], "sql": "SELECT a FROM kept"}
    assert call("POST", "/v1/query", cast.owner_key, json=q).json()["data"] == [[42]]
    # the old name is free again
    again = make_db(cast.owner_key, name=db["name"])
    assert again["id"] != db["id"]
    # a case-only rename is a rename, not a clash
    r = call(
        "PATCH",
        f"/v1/databases/{new['full_name']}",
        cast.owner_key,
        json={"name": new_name.upper()},
    )
    assert r.status_code == 200 and r.json()["name"] == new_name.upper()


def test_rename_onto_an_existing_name_is_409(call: Call, cast: Cast, make_db: MakeDb) -> None:
    a, b = make_db(cast.owner_key), make_db(cast.owner_key)
    before = _state(call, cast, a["full_name"])
    for clash in (b["name"], b["name"].upper()):
        r = call("PATCH", f"/v1/databases/{a['full_name']}", cast.owner_key, json={"name": clash})
        assert_error(r, 409, "database_exists")
    r = call("PATCH", f"/v1/databases/{a['full_name']}", cast.owner_key, json={"name": "bad name"})
    assert_error(r, 422, "invalid_name")
    r = call(
        "PATCH",
        f"/v1/databases/{a['full_name']}",
        cast.owner_key,
        json={"name": b["name"], "is_private": False},
    )
    assert_error(r, 409, "database_exists")
    assert _state(call, cast, a["full_name"]) == before
    assert call("GET", f"/v1/databases/{b['full_name']}", cast.owner_key).json()["id"] == b["id"]


def test_privacy_toggle_changes_stranger_visibility(
    call: Call, cast: Cast, make_db: MakeDb
) -> None:
    db = make_db(cast.owner_key)
    full = db["full_name"]
    stranger = cast.keys["stranger"]
    q = {"database": full, "sql": "SELECT 1"}
    assert_error(call("GET", f"/v1/databases/{full}", stranger), 404, "database_not_found")
    assert (
        call("PATCH", f"/v1/databases/{full}", cast.owner_key, json={"is_private": False}).json()[
            "is_private"
        ]
        is False
    )
    assert call("GET", f"/v1/databases/{full}", stranger).json()["role"] == "read"
    assert call("POST", "/v1/query", stranger, json=q).status_code == 200
    assert full not in {d["full_name"] for d in call("GET", "/v1/databases", stranger).json()}
    assert (
        call(
            "PATCH", f"/v1/databases/{full}", cast.owner_key, json={"is_private": True}
        ).status_code
        == 200
    )
    assert_error(call("GET", f"/v1/databases/{full}", stranger), 404, "database_not_found")
    assert_error(call("POST", "/v1/query", stranger, json=q), 404, "database_not_found")


def test_storage_limit_set_and_clear(call: Call, cast: Cast, make_db: MakeDb) -> None:
    db = make_db(cast.owner_key)
    path = f"/v1/databases/{db['full_name']}"
    key = cast.owner_key
    assert (
        call("PATCH", path, key, json={"storage_limit_bytes": 50_000_000}).json()[
            "storage_limit_bytes"
        ]
        == 50_000_000
    )
    # a patch that does not mention the limit keeps it
    assert (
        call("PATCH", path, key, json={"is_private": True}).json()["storage_limit_bytes"]
        == 50_000_000
    )
    before = _state(call, cast, db["full_name"])
    for body in (
        {"storage_limit_bytes": 0},
        {"storage_limit_bytes": -1},
        {"storage_limit_bytes": 2**63},
        {"storage_limit_bytes": 1000, "clear_storage_limit": True},
        {"storage_limit_bytes": "big"},
        {"clear_storage_limit": "yes please"},
        {"size": 1},
    ):
        assert_error(call("PATCH", path, key, json=body), 422, "validation_error")
    assert _state(call, cast, db["full_name"]) == before
    assert (
        call("PATCH", path, key, json={"clear_storage_limit": True}).json()["storage_limit_bytes"]
        is None
    )
    assert call("GET", path, key).json()["storage_limit_bytes"] is None


# -- delete, down to Postgres --------------------------------------------------------------


def test_delete_drops_the_postgres_database_and_roles(
    call: Call, cast: Cast, make_db: MakeDb, superuser: Superuser
) -> None:
    db = make_db(cast.owner_key)
    full, pg = db["full_name"], pg_name(db)
    q = {"database": full, "sql": "CREATE TABLE t (a int); INSERT INTO t VALUES (1)"}
    assert call("POST", "/v1/query", cast.owner_key, json=q).status_code == 200
    # read through the ro role too, so the server holds pools to it
    r = call(
        "POST",
        "/v1/query",
        cast.keys["owner_read_key"],
        json={"database": full, "sql": "SELECT * FROM t"},
    )
    assert r.status_code == 200
    roles = {f"{pg}_owner", f"{pg}_rw", f"{pg}_ro"}
    with superuser() as conn:
        found = {
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(roles),)
            )
        }
        assert found == roles
    assert call("DELETE", f"/v1/databases/{full}", cast.owner_key).status_code == 204
    with superuser() as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg,)).fetchone() is None
        )
        left = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(roles),)
        ).fetchall()
        assert left == []
    assert_error(call("GET", f"/v1/databases/{full}", cast.owner_key), 404, "database_not_found")
    assert_error(call("POST", "/v1/query", cast.owner_key, json=q), 404, "database_not_found")
    assert_error(call("DELETE", f"/v1/databases/{full}", cast.owner_key), 404, "database_not_found")
    assert full not in {d["full_name"] for d in call("GET", "/v1/databases", cast.owner_key).json()}
    # the name can be used again, for a new, empty database
    make_db(cast.owner_key, name=db["name"])
    r = call("POST", "/v1/query", cast.owner_key, json={"database": full, "sql": "SELECT * FROM t"})
    assert assert_error(r, 400, "sql_error")["details"]["sqlstate"] == "42P01"


# -- least privilege in Postgres ------------------------------------------------------------


def test_connect_is_not_granted_to_public(
    cast: Cast, private_db: Any, public_db: Any, superuser: Superuser, server: Any
) -> None:
    a, b = pg_name(private_db), pg_name(public_db)
    control = server.settings.control_database
    with superuser() as conn:
        for db in (a, b, control):
            assert conn.execute(
                "SELECT has_database_privilege('public', %s, 'CONNECT')", (db,)
            ).fetchone() == (False,)
            acl = conn.execute(
                "SELECT datacl::text[] FROM pg_database WHERE datname = %s", (db,)
            ).fetchone()
            assert acl is not None and acl[0] is not None  # an explicit ACL, not the default
            assert not any(entry.startswith("=") for entry in acl[0]), acl  # nothing for PUBLIC
        # a database's roles reach only their own database
        for role in ("owner", "rw", "ro", "reducer"):
            assert conn.execute(
                "SELECT has_database_privilege(%s, %s, 'CONNECT')", (f"{a}_{role}", a)
            ).fetchone() == (True,)
            for other in (b, control, "postgres"):
                assert conn.execute(
                    "SELECT has_database_privilege(%s, %s, 'CONNECT')", (f"{a}_{role}", other)
                ).fetchone() == (False,), (role, other)
        flags = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname LIKE %s",
            (a + "\\_%",),
        ).fetchall()
        assert len(flags) == 4  # owner, rw, ro, reducer
        assert all(not any(f[1:]) for f in flags), flags


def test_ro_role_cannot_write_even_in_a_read_write_transaction(
    call: Call, cast: Cast, private_db: Any, superuser: Superuser
) -> None:
    full = private_db["full_name"]
    reader = cast.keys["read"]
    for sql in (
        "SET TRANSACTION READ WRITE; INSERT INTO t VALUES (1)",
        "SET TRANSACTION READ WRITE; CREATE TABLE sneaky (a int)",
        "SET TRANSACTION READ WRITE; DELETE FROM t",
        "SET TRANSACTION READ WRITE; TRUNCATE t",
        "SET TRANSACTION READ WRITE; CREATE TEMP TABLE tmp (a int)",
    ):
        assert_permission_denied(
            call("POST", "/v1/query", reader, json={"database": full, "sql": sql})
        )
    with superuser(pg_name(private_db)) as conn:
        ro = pg_name(private_db) + "_ro"
        for priv in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert conn.execute(
                "SELECT has_table_privilege(%s, 't', %s)", (ro, priv)
            ).fetchone() == (False,)
        assert conn.execute("SELECT has_table_privilege(%s, 't', 'SELECT')", (ro,)).fetchone() == (
            True,
        )
        assert conn.execute(
            "SELECT has_schema_privilege(%s, 'public', 'CREATE')", (ro,)
        ).fetchone() == (False,)


def test_query_runs_as_the_callers_database_role(call: Call, cast: Cast, private_db: Any) -> None:
    pg = pg_name(private_db)
    q = {"database": private_db["full_name"], "sql": "SELECT current_user, session_user"}
    expected = {
        "read": "ro",
        "write": "rw",
        "admin": "owner",
        "owner": "owner",
        "owner_read_key": "ro",
        "server_admin": "owner",
    }
    for role, sql_role in expected.items():
        r = call("POST", "/v1/query", cast.keys[role], json=q)
        assert r.json()["data"] == [[f"{pg}_{sql_role}"] * 2], role


# -- list --------------------------------------------------------------------------------


def test_list_shows_owned_and_collaborating_with_the_callers_role(
    call: Call, cast: Cast, private_db: Any, public_db: Any
) -> None:
    mine = {private_db["full_name"], public_db["full_name"]}

    def listed(role: str) -> dict[str, str]:
        r = call("GET", "/v1/databases", cast.keys[role])
        assert r.status_code == 200, r.text
        return {d["full_name"]: d["role"] for d in r.json()}

    owned = listed("owner")
    assert mine <= set(owned) and all(v == "owner" for v in owned.values())
    for role in ("read", "write", "admin"):
        got = listed(role)
        assert {k: got[k] for k in mine} == dict.fromkeys(mine, role)
    ro = listed("owner_read_key")
    assert set(ro) == set(owned) and set(ro.values()) == {"read"}
    assert not mine & set(listed("stranger"))
    # a server admin can reach every database, but lists only their own
    assert not mine & set(listed("server_admin"))
    assert_error(call("GET", "/v1/databases"), 401, "unauthorized")
    # full entries, sorted by owner then name
    entries = call("GET", "/v1/databases", cast.keys["read"]).json()
    assert [e["full_name"].lower() for e in entries] == sorted(
        e["full_name"].lower() for e in entries
    )
    assert {
        "id",
        "owner",
        "name",
        "full_name",
        "is_private",
        "created_at",
        "updated_at",
        "role",
    } <= set(entries[0])
