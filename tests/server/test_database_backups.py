"""One database's backup (``GET /v1/databases/{owner}/{name}/backup``) and restore
(``POST …/restore``) against the real server: a round trip keeps every row and schema
object, restored objects are the target's roles', a module database loses its internal
schema and keeps its private tables private, refusals change nothing, and who may do it
follows the database's rights. (Hostile archives: tests/security/test_restore_hostile.py.)"""

from __future__ import annotations

import asyncio
import io
import itertools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from _backups import (
    TOOL_APP,
    archive_of,
    as_backup,
    backup,
    cluster,
    objects,
    restore,
    restore_sql,
    scratch_archive,
    superuser,
    tool_sessions,
)
from _codes import raised_codes
from _waiting import wait_until
from millpond import AsyncMillpond, Millpond
from millpond.errors import TransportError
from millpond.models.backups import MAGIC, MEDIA_TYPE
from millpond.server.modules import row_visibility
from millpond.server.postgres.embedded import bin_dir
from millpond.server.testing import ServerThread

from ._helpers import assert_error

MakeUser = Callable[..., tuple[str, str]]
ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count()

SOURCE_SQL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE things (
    id bigint PRIMARY KEY, name text NOT NULL, price numeric(12, 2), ratio float8,
    tags text[], doc jsonb, raw bytea, at timestamptz, day date, ok boolean,
    uid uuid, feeling mood, span interval
);
INSERT INTO things VALUES
  (1, 'lamp', 19.90, 0.5, '{home,light}', '{"a": [1, 2]}', '\\x00ff10', '2026-01-02 03:04:05+00',
   '2026-01-02', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', '1 day 2 hours'),
  (2, 'desk ''oak''', NULL, '-Infinity', '{}', 'null', '', NULL, NULL, false, NULL, 'sad', NULL);
CREATE INDEX things_name ON things (lower(name));
CREATE SEQUENCE ticket START 100;
SELECT nextval('ticket'), nextval('ticket');
CREATE VIEW cheap AS SELECT id, name FROM things WHERE price < 100;
CREATE FUNCTION double_it(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';
CREATE SCHEMA archive;
CREATE TABLE archive.old (id serial PRIMARY KEY, note text, thing bigint REFERENCES things);
INSERT INTO archive.old (note, thing) VALUES ('kept', 1), ('also', 2);
COMMENT ON TABLE things IS 'what we sell';
SELECT lo_from_bytea(424242, 'a large object');
"""

DEFINITIONS_SQL = """
SELECT 'view', pg_get_viewdef('cheap'::regclass)
UNION ALL SELECT 'function', pg_get_functiondef('double_it(int)'::regprocedure)
UNION ALL SELECT 'index', pg_get_indexdef('things_name'::regclass)
UNION ALL SELECT 'comment', obj_description('things'::regclass)
UNION ALL SELECT 'constraint ' || conname, pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace IN ('public'::regnamespace, 'archive'::regnamespace)
UNION ALL SELECT 'column ' || attrelid::regclass || '.' || attname,
    format_type(atttypid, atttypmod) FROM pg_attribute
    WHERE attrelid IN ('things'::regclass, 'archive.old'::regclass) AND attnum > 0
ORDER BY 1, 2
"""

ROWS_SQL = {
    "things": "SELECT * FROM things ORDER BY id",
    "archive.old": "SELECT * FROM archive.old ORDER BY id",
    "cheap": "SELECT * FROM cheap ORDER BY id",
    "ticket": "SELECT last_value, is_called FROM ticket",
    "large object": "SELECT lo_get(424242)",
    "function": "SELECT double_it(21)",
}


def _db(server: ServerThread, key: str, **fields: Any) -> tuple[str, str]:
    """A new database of the key's user: (owner/name, mp_db_<id>)."""
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": f"bk{next(_names)}", **fields},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["full_name"], f"mp_db_{r.json()['id']}"


def _sql(server: ServerThread, key: str, database: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/query",
        json={"database": database, "sql": text},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _state(server: ServerThread, pg_name: str) -> dict[str, Any]:
    """Everything the round trip must keep, as the superuser reads it."""
    with superuser(server, pg_name) as conn:
        state: dict[str, Any] = {
            name: conn.execute(query.encode()).fetchall() for name, query in ROWS_SQL.items()
        }
        state["definitions"] = conn.execute(DEFINITIONS_SQL.encode()).fetchall()
    state["objects"] = [row[:4] for row in objects(server, pg_name)]  # owners differ
    return state


def test_a_round_trip_keeps_every_row_and_object(server: ServerThread, make_user: MakeUser) -> None:
    name, key = make_user(prefix="bkowner")
    source, source_pg = _db(server, key)
    r = _sql(server, key, source, SOURCE_SQL)
    assert r.status_code == 200, r.text
    target, target_pg = _db(server, key)
    with Millpond(api_key=key, base_url=server.url) as mp:
        path = Path(server.settings.data_dir) / f"{name}.mpdb"
        manifest = mp.databases.backup(source, path)
        assert path.read_bytes().startswith(MAGIC) and path.stat().st_mode & 0o777 == 0o600
        result = mp.databases.restore(target, path)
    assert manifest.database == source and manifest.format == 1 and manifest.is_private
    assert manifest.postgres.startswith("16") and manifest.grants == []
    assert result.database == target and result.manifest == manifest
    assert result.bytes == path.stat().st_size
    assert _state(server, target_pg) == _state(server, source_pg)
    # owned by the target's roles, readable by its readers
    owners = {row[4] for row in objects(server, target_pg)}
    assert owners == {f"{target_pg}_owner"}
    with superuser(server, target_pg) as conn:
        conn.execute(f"SET ROLE {target_pg}_ro".encode())
        for table in ("things", "archive.old", "cheap", "ticket"):
            conn.execute(f"SELECT * FROM {table}".encode())
        conn.execute(b"SELECT double_it(1)")
    # and usable as any database of the owner: the API queries it, writes it
    r = _sql(server, key, target, "INSERT INTO archive.old (note) VALUES ('new') RETURNING id")
    assert r.status_code == 200 and r.json()["data"] == [[3]], r.text


def test_the_http_answer_is_the_documented_file(server: ServerThread, make_user: MakeUser) -> None:
    _, key = make_user(prefix="bkfile")
    source, _ = _db(server, key, is_private=False, storage_limit_bytes=50_000_000)
    assert _sql(server, key, source, "CREATE TABLE t (id int)").status_code == 200
    r = backup(server, key, source)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == MEDIA_TYPE
    owner, name = source.split("/")
    assert r.headers["content-disposition"] == f'attachment; filename="{owner}-{name}.mpdb"'
    magic, manifest, rest = r.content.split(b"\n", 2)
    assert magic + b"\n" == MAGIC and rest.startswith(b"PGDMP")
    assert b'"is_private":false' in manifest and b'"storage_limit_bytes":50000000' in manifest


def test_an_async_round_trip(server: ServerThread, make_user: MakeUser, tmp_path: Path) -> None:
    _, key = make_user(prefix="bkasync")
    source, _ = _db(server, key)
    target, _ = _db(server, key)
    assert _sql(server, key, source, "CREATE TABLE t AS SELECT 7 AS n").status_code == 200

    async def go() -> None:
        async with AsyncMillpond(api_key=key, base_url=server.url) as mp:
            with (tmp_path / "a.mpdb").open("wb") as out:  # a file object
                await mp.databases.backup(source, out)
            with (tmp_path / "a.mpdb").open("rb") as file:
                await mp.databases.restore(target, file)

    asyncio.run(go())
    assert _sql(server, key, target, "SELECT n FROM t").json()["data"] == [[7]]


def test_the_roles_privileges_come_along(server: ServerThread, make_user: MakeUser) -> None:
    """What the source's owner took from (or gave) its readers, writers and reducers is
    taken from (or given to) the target's."""
    _, key = make_user(prefix="bkgrants")
    source, pg = _db(server, key)
    sql = f"""
    CREATE TABLE hidden (id int); CREATE TABLE shown (id int); CREATE SEQUENCE counter;
    CREATE FUNCTION tally() RETURNS int LANGUAGE sql AS 'SELECT 1';
    CREATE AGGREGATE total(int) (SFUNC = int4pl, STYPE = int);
    REVOKE ALL ON hidden FROM {pg}_ro, {pg}_rw; GRANT SELECT ON hidden TO {pg}_reducer;
    REVOKE USAGE ON SEQUENCE counter FROM {pg}_rw;
    REVOKE EXECUTE ON FUNCTION tally() FROM PUBLIC; GRANT EXECUTE ON FUNCTION tally() TO {pg}_rw;
    REVOKE EXECUTE ON FUNCTION total(int) FROM PUBLIC;
    """
    assert _sql(server, key, source, sql).status_code == 200
    target, target_pg = _db(server, key)
    file = backup(server, key, source).content
    r = restore(server, key, target, file)
    assert r.status_code == 200, r.text
    kinds = sorted((g["kind"], g["name"]) for g in r.json()["manifest"]["grants"])
    assert kinds == [
        ("function", "tally"),
        ("function", "total"),
        ("sequence", "counter"),
        ("table", "hidden"),
    ]
    checks = """
    SELECT r, has_table_privilege(r, 'hidden', 'SELECT'), has_table_privilege(r, 'hidden',
           'INSERT'), has_table_privilege(r, 'shown', 'SELECT'),
           has_sequence_privilege(r, 'counter', 'USAGE'),
           has_function_privilege(r, 'tally()', 'EXECUTE'),
           has_function_privilege(r, 'total(int)', 'EXECUTE')
    FROM unnest(%s::text[]) AS r ORDER BY r
    """
    roles = [f"{{}}_{suffix}" for suffix in ("reducer", "ro", "rw")]
    with superuser(server, pg) as conn:
        before = conn.execute(checks.encode(), ([r.format(pg) for r in roles],)).fetchall()
    with superuser(server, target_pg) as conn:
        after = conn.execute(checks.encode(), ([r.format(target_pg) for r in roles],)).fetchall()
    assert [row[1:] for row in after] == [row[1:] for row in before]
    assert [row[1:] for row in after] == [
        (True, False, True, False, True, False),  # reducer: a member of rw
        (False, False, True, False, False, False),  # ro
        (False, False, True, False, True, False),  # rw
    ]


MODULE = """
from millpond.module import Identity, ReducerContext, primary_key, reducer, table

@table(public=True, visible_if="owner_identity = :sender")
class Note:
    id: int = primary_key()
    owner_identity: Identity
    body: str

@table()
class Secret:
    id: int = primary_key()
    body: str

@reducer
def add(ctx: ReducerContext, id: int, body: str) -> None:
    ctx.db.note.insert(Note(id=id, owner_identity=ctx.sender, body=body))
    ctx.db.secret.insert(Secret(id=id, body=body))
"""


def test_a_module_database_without_its_internal_schema(
    server: ServerThread, make_user: MakeUser
) -> None:
    _, key = make_user(prefix="bkmodule")
    auth = {"Authorization": f"Bearer {key}"}
    source, source_pg = _db(server, key)
    r = httpx.post(
        f"{server.url}/v1/databases/{source}/module",
        json={"files": {"notes.py": MODULE}},
        headers=auth,
        timeout=120,
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{server.url}/v1/databases/{source}/call/add",
        json={"id": 1, "body": "hi"},
        headers=auth,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    r = backup(server, key, source)
    assert r.status_code == 200, r.text
    text = restore_sql(archive_of(r.content))
    with superuser(server, server.settings.control_database) as conn:
        row = conn.execute("SELECT value FROM server_state WHERE key = 'role_secret'").fetchone()
    assert row is not None
    key_bytes = row_visibility.database_key(str(row[0]).encode(), source_pg)
    inner, outer = row_visibility._pads(key_bytes)
    for secret in (key_bytes.hex(), inner.hex(), outer.hex()):
        assert secret not in text
    assert row_visibility.KEY_TABLE not in text and "CREATE SCHEMA millpond" not in text
    target, target_pg = _db(server, key)
    r = restore(server, key, target, r.content)
    assert r.status_code == 200, r.text
    grants = {g["name"]: g for g in r.json()["manifest"]["grants"]}
    assert grants["secret"]["ro"] == [] and grants["secret"]["rw"] == []
    with superuser(server, target_pg) as conn:
        assert conn.execute("SELECT body FROM public.note").fetchall() == [("hi",)]
        assert not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'millpond'").fetchall()
        assert not conn.execute("SELECT 1 FROM pg_policy").fetchall()  # made by a publish
        rls = conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'note'")
        assert rls.fetchone() == (True,)  # readers see no row of it until then
        privileges = conn.execute(
            "SELECT has_table_privilege(%s, 'public.secret', 'SELECT'),"
            " has_table_privilege(%s, 'public.secret', 'SELECT'),"
            " has_table_privilege(%s, 'public.secret', 'INSERT'),"
            " has_table_privilege(%s, 'public.note', 'SELECT')",
            [f"{target_pg}_{r}" for r in ("ro", "rw", "reducer", "ro")],
        ).fetchone()
    assert privileges == (False, False, True, True)  # the private table stays private


def _big(server: ServerThread, key: str, database: str, rows: int = 20000) -> None:
    """20,000 rows are some 10 MB once compressed (and a second or so of pg_dump's
    time): more than the pipes and buffers on the way hold."""
    fill = (
        "CREATE TABLE big AS SELECT g, (SELECT string_agg(md5(g || '.' || i), '')"
        f" FROM generate_series(1, 30) i) AS v FROM generate_series(1, {rows}) g"
    )
    assert _sql(server, key, database, fill).status_code == 200


def test_the_client_going_away_ends_pg_dump(server: ServerThread, make_user: MakeUser) -> None:
    _, key = make_user(prefix="bkgone")
    source, source_pg = _db(server, key)
    _big(server, key, source)
    with socket.socket() as client:  # a small window: what it does not read stays unsent
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.settings.port))
        client.sendall(
            f"GET /v1/databases/{source}/backup HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\n\r\n".encode()
        )
        assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert tool_sessions(server, source_pg) == 1  # pg_dump is still at it
    wait_until(lambda: tool_sessions(server, source_pg) == 0, what="pg_dump to be gone")


def test_a_backup_cut_short_is_no_backup(server: ServerThread, make_user: MakeUser) -> None:
    """pg_dump failing once the answer began (its session ended here): the answer is cut
    short, never a complete-looking file; the SDK says so."""
    _, key = make_user(prefix="bkcut")
    source, source_pg = _db(server, key)
    _big(server, key, source, rows=60000)

    class EndsPgDump(io.BytesIO):
        def write(self, chunk: Any) -> int:
            if not self.tell():  # the first bytes are in: end pg_dump's session
                with superuser(server) as conn:
                    ended = conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND application_name = %s",
                        (source_pg, TOOL_APP),
                    ).fetchall()
                assert ended == [(True,)]  # pg_dump was still at it
            return super().write(chunk)

    # a small receive window: what the test has not read stays in pg_dump (the kernel's
    # buffers would otherwise take a whole 60,000-row dump before the first write here)
    small = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    with (
        httpx.Client(transport=httpx.HTTPTransport(socket_options=small), timeout=60) as http,
        Millpond(api_key=key, base_url=server.url, http_client=http) as mp,
        pytest.raises(TransportError) as err,
    ):
        mp.databases.backup(source, EndsPgDump())
    assert "cut short" in str(err.value)
    wait_until(lambda: tool_sessions(server, source_pg) == 0, what="pg_dump to be gone")


def test_a_restore_the_client_leaves_is_rolled_back(
    server: ServerThread, make_user: MakeUser
) -> None:
    _, key = make_user(prefix="bkleave")
    archive = scratch_archive(
        server,
        [
            "CREATE FUNCTION public.slow(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE"
            " AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN x; END $$",
            "CREATE TABLE public.t AS SELECT g AS id FROM generate_series(1, 300) g",
            "CREATE INDEX t_slow ON public.t (public.slow(id))",  # a minute to restore
        ],
    )
    target, target_pg = _db(server, key)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/databases/{target}/restore",
            content=as_backup(archive),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(60, read=2),
        )
    wait_until(lambda: tool_sessions(server, target_pg) == 0, what="pg_restore to be gone")
    assert objects(server, target_pg) == []


# -- refusals change nothing -----------------------------------------------------------------


def test_a_database_that_is_not_empty_is_refused(server: ServerThread, make_user: MakeUser) -> None:
    _, key = make_user(prefix="bkfull")
    source, _ = _db(server, key)
    assert _sql(server, key, source, "CREATE TABLE t AS SELECT 1 AS n").status_code == 200
    file = backup(server, key, source).content
    target, target_pg = _db(server, key)
    made = _sql(server, key, target, "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'")
    assert made.status_code == 200, made.text
    before = objects(server, target_pg)
    err = assert_error(restore(server, key, target, file), 409, "database_not_empty")
    assert err["details"] == {"objects": {"functions": 1}}
    assert objects(server, target_pg) == before
    # the source itself, too
    assert_error(restore(server, key, source, file), 409, "database_not_empty")


def test_what_is_not_a_backup_is_refused(server: ServerThread, make_user: MakeUser) -> None:
    _, key = make_user(prefix="bkjunk")
    source, _ = _db(server, key)
    fill = "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 2000) g"
    assert _sql(server, key, source, fill).status_code == 200
    file = backup(server, key, source).content
    head = file[: file.index(b"\nPGDMP") + 1]
    target, target_pg = _db(server, key)
    bodies = {
        b"": "invalid_backup",
        b"PK\x03\x04 a zip file": "invalid_backup",
        MAGIC: "invalid_backup",  # ends before its manifest
        MAGIC + b"not json\nPGDMP": "invalid_backup",
        MAGIC + b'{"format": 1}\nPGDMP': "invalid_backup",  # fields missing
        MAGIC + b'{"format": 99, "more": "later"}\n': "unsupported_backup_format",
        head + b"SQLite format 3\x00": "invalid_backup",  # no pg_dump archive
        head + b"PGDMP" + b"\x00" * 50: "invalid_backup",  # pg_restore cannot read it
        file[:-200]: "restore_failed",  # cut short: pg_restore fails part-way
    }
    server_paths = [str(server.settings.data_dir), str(bin_dir()), str(cluster(server).socket_dir)]
    for body, code in bodies.items():
        err = assert_error(restore(server, key, target, body), 400, code)
        assert not any(path in str(err) for path in server_paths), err
        assert objects(server, target_pg) == [], (body[:40], err)
    body = MAGIC + b'{"format": 99}\n'
    err = assert_error(restore(server, key, target, body), 400, "unsupported_backup_format")
    assert err["details"] == {"format": 99}


def test_a_backup_too_large_is_refused(
    server: ServerThread, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = make_user(prefix="bkbig")
    source, _ = _db(server, key)
    fill = "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g"
    assert _sql(server, key, source, fill).status_code == 200
    file = backup(server, key, source).content
    target, target_pg = _db(server, key)
    monkeypatch.setattr(server.settings, "transfer_max_file_bytes", 100_000)
    err = assert_error(restore(server, key, target, file), 413, "file_too_large")
    assert err["details"] == {"limit": 100_000}
    assert objects(server, target_pg) == []


def test_a_table_the_owner_cannot_read_fails_the_backup(
    server: ServerThread, make_user: MakeUser
) -> None:
    _, key = make_user(prefix="bkunread")
    source, source_pg = _db(server, key)
    with superuser(server, source_pg) as conn:
        conn.execute("CREATE TABLE public.not_yours (id int)")  # the superuser's
    err = assert_error(backup(server, key, source), 400, "backup_failed")
    assert "permission denied" in err["details"]["error"]
    assert tool_sessions(server, source_pg) == 0


# -- who may ------------------------------------------------------------------------------------


def test_who_may_back_up_and_restore(server: ServerThread, make_user: MakeUser) -> None:
    users = {role: make_user(prefix=f"bk{role}") for role in ("owner", "read", "write", "admin")}
    users["stranger"] = make_user(prefix="bkstranger")
    users["server_admin"] = make_user(is_admin=True, prefix="bkroot")
    owner_key = users["owner"][1]
    private, _ = _db(server, owner_key)
    public, _ = _db(server, owner_key, is_private=False)
    for db in (private, public):
        for role in ("read", "write", "admin"):
            r = httpx.put(
                f"{server.url}/v1/databases/{db}/collaborators/{users[role][0]}",
                json={"role": role},
                headers={"Authorization": f"Bearer {owner_key}"},
            )
            assert r.status_code == 200, r.text
    read_key = httpx.post(
        f"{server.url}/v1/keys",
        json={"scope": "read"},
        headers={"Authorization": f"Bearer {owner_key}"},
    ).json()["secret"]
    keys = {role: key for role, (_, key) in users.items()} | {"owner_read_key": read_key}
    expected = {
        "owner": (200, 400, "invalid_backup"),  # let in: the body is then refused
        "admin": (200, 400, "invalid_backup"),
        "server_admin": (200, 400, "invalid_backup"),
        "write": (403, 403, "forbidden"),
        "read": (403, 403, "forbidden"),
        "owner_read_key": (403, 403, "read_only_key"),
    }
    for role, (got, refused, code) in expected.items():
        for db in (private, public):
            r = backup(server, keys[role], db)
            assert r.status_code == got, (role, db, r.text)
            if got != 200:
                assert_error(r, got, code)
            assert_error(restore(server, keys[role], db, b"junk"), refused, code)
    stranger = keys["stranger"]
    assert_error(backup(server, stranger, private), 404, "database_not_found")
    assert_error(restore(server, stranger, private, b"junk"), 404, "database_not_found")
    assert_error(backup(server, stranger, public), 403, "forbidden")
    assert_error(restore(server, stranger, public, b"junk"), 403, "forbidden")
    r = httpx.get(f"{server.url}/v1/databases/{private}/backup")
    assert_error(r, 401, "unauthorized")


def test_every_database_error_code_is_documented() -> None:
    codes = raised_codes(ROOT / "src" / "millpond" / "server" / "databases")
    new = {
        "database_not_empty",
        "invalid_backup",
        "unsupported_backup_format",
        "restore_failed",
        "backup_failed",
    }
    assert new <= codes
    docs = (ROOT / "docs" / "api.md").read_text()
    table = docs[docs.index("## Error codes") :]
    missing = sorted(code for code in codes | {"file_too_large"} if f"`{code}`" not in table)
    assert not missing
    databases = (ROOT / "docs" / "databases.md").read_text()
    assert all(f"`{code}`" in databases for code in new)
