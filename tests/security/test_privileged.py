"""The server never runs tenant-resolvable SQL with privileges.

A database owner sets database-level settings on their own database and creates objects
named like catalogs (views, functions, operators), then makes the server open every kind
of session it opens into a tenant database: realtime (publication lookup, replica
identity, snapshot, the WAL stream), HTTP queries with and without a storage limit, the
gateway, type-name lookups. Each trap records the session it ran in; none may be a
superuser's or another role's than the tenant's own.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.sync.client import connect

from millpond.server.postgres import privileged
from millpond.server.testing import ServerThread

from ._tenant import Tenant, make_tenant

SRC = Path(__file__).resolve().parents[2] / "src" / "millpond"

# every catalog the server's SQL names, shadowed by a view in public that records who
# read it (a SECURITY DEFINER function owned by the tenant, so a reader's session can
# record too) and otherwise answers like the real catalog
_SHADOWED = (
    "pg_publication",
    "pg_class",
    "pg_namespace",
    "pg_attribute",
    "pg_type",
    "pg_index",
    "pg_roles",
    "pg_database",
    "pg_settings",
    "pg_stat_activity",
    "pg_db_role_setting",
)
_TRAPS = """
CREATE TABLE trapped (session_user_name text, current_user_name text, what text);
GRANT SELECT ON trapped TO PUBLIC;
CREATE FUNCTION trap(what text) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  BEGIN
    INSERT INTO public.trapped VALUES (session_user, current_user, what);
  EXCEPTION WHEN OTHERS THEN NULL;  -- read-only transactions: still answer
  END;
  RETURN true;
END $$;
CREATE FUNCTION pg_current_snapshot() RETURNS pg_snapshot LANGUAGE sql
  AS $$ SELECT pg_catalog.pg_current_snapshot() WHERE public.trap('pg_current_snapshot') $$;
CREATE FUNCTION current_database() RETURNS name LANGUAGE sql
  AS $$ SELECT pg_catalog.current_database() WHERE public.trap('current_database') $$;
CREATE FUNCTION pg_database_size(name) RETURNS bigint LANGUAGE sql
  AS $$ SELECT 0::bigint WHERE public.trap('pg_database_size') $$;
CREATE FUNCTION pg_xact_status(xid8) RETURNS text LANGUAGE sql
  AS $$ SELECT pg_catalog.pg_xact_status($1) WHERE public.trap('pg_xact_status') $$;
CREATE FUNCTION trap_eq(oid, oid) RETURNS boolean LANGUAGE sql
  AS $$ SELECT public.trap('operator =') AND $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = trap_eq);
CREATE TABLE items (id int PRIMARY KEY, label text);
INSERT INTO items VALUES (1, 'one');
"""


def _arm(tenant: Tenant) -> None:
    tenant.ok(_TRAPS)
    for name in _SHADOWED:
        columns = "*"
        if name == "pg_attribute":  # attmissingval's pseudo-type cannot be in a view
            columns = "attrelid, attname, atttypid, attnum, attisdropped"
        tenant.ok(
            f"CREATE VIEW public.{name} AS SELECT {columns} FROM pg_catalog.{name}"
            f" WHERE public.trap('{name}')"
        )
    tenant.ok(f"ALTER DATABASE {tenant.pg_name} SET search_path = public, pg_catalog")


def _trapped(tenant: Tenant) -> list[tuple[str, str, str]]:
    with tenant.superuser() as conn:
        rows = conn.execute("SELECT * FROM public.trapped").fetchall()
    return [tuple(r) for r in rows]


@pytest.fixture
def armed(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Tenant:
    tenant = make_tenant(server, make_user, prefix="trap")
    _arm(tenant)
    return tenant


_ids = itertools.count(100)


def _subscribe(tenant: Tenant, key: str | None = None) -> dict[str, object]:
    url = tenant.server.url.replace("http://", "ws://") + f"/v1/realtime/{tenant.database}"
    headers = {"Authorization": f"Bearer {key or tenant.key}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        subscribe = {"type": "subscribe", "request_id": "r", "queries": ["SELECT * FROM items"]}
        ws.send(json.dumps(subscribe))
        applied = json.loads(ws.recv(timeout=20))
        assert applied["type"] == "subscription_applied", applied
        tenant.ok(f"INSERT INTO items VALUES ({next(_ids)}, 'two')")
        while True:
            message = json.loads(ws.recv(timeout=20))
            if message["type"] == "transaction":
                return dict(message)


def test_catalog_shadowing_never_runs_in_a_privileged_session(
    armed: Tenant, make_user: Callable[..., tuple[str, str]]
) -> None:
    reader_name, reader = make_user(prefix="trapreader")
    armed.share(reader_name, "read")
    tx = _subscribe(armed)
    assert tx["tables"]["items"]["inserts"][0]["label"] == "two"  # type: ignore[index]
    _subscribe(armed, reader)
    armed.ok("SELECT * FROM items")
    armed.ok("SELECT * FROM items", reader)
    r = armed.http("PATCH", f"/v1/databases/{armed.database}", json={"storage_limit_bytes": 10**9})
    assert r.status_code == 200, r.text
    armed.ok("INSERT INTO items VALUES (3, 'three')")  # the storage check's SQL
    armed.ok("SELECT ARRAY[1]::int[] AS a, '{}'::jsonb AS j")  # type names
    with armed.gateway() as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (4,)
    with armed.gateway(reader) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (4,)
    # nothing the test itself ran names a trap: every trap that fired was the server's
    # own SQL resolving to the tenant's objects — in a privileged session that is code
    # execution as the superuser; in the tenant's own sessions it would let the tenant
    # fake the storage check, the realtime snapshot or the type names cached for all
    assert _trapped(armed) == []


def test_a_database_level_role_setting_does_not_demote_the_server(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    """``ALTER DATABASE mine SET role = …`` would make every session into the database
    start as that role — the server's own privileged sessions included."""
    victim = make_tenant(server, make_user, prefix="victim")
    attacker = make_tenant(server, make_user, prefix="demote")
    attacker.ok("CREATE TABLE items (id int PRIMARY KEY, label text)")
    r = attacker.query(f"ALTER DATABASE {attacker.pg_name} SET role = '{victim.role('owner')}'")
    # Postgres itself may refuse (the owner is no member of that role); either way the
    # server's sessions keep their own identity and realtime works
    assert r.status_code in (200, 400), r.text
    tx = _subscribe(attacker)
    assert tx["type"] == "transaction"


def test_privileged_sessions_pin_their_settings(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    tenant = make_tenant(server, make_user, prefix="pin")
    for setting in (
        "search_path = public",
        "statement_timeout = 1",
        "default_transaction_read_only = on",
        "transform_null_equals = on",
        "bytea_output = 'escape'",
        "logical_decoding_work_mem = '2GB'",
    ):
        tenant.ok(f"ALTER DATABASE {tenant.pg_name} SET {setting}")
    cluster = server.server.config.app.state.services.cluster
    with privileged.connect(cluster, tenant.pg_name) as conn:
        got = dict(
            conn.execute(
                "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                (list(privileged.PINNED),),
            ).fetchall()
        )
        assert conn.execute("SELECT current_user, session_user").fetchone() == (
            conn.info.user,
            conn.info.user,
        )
    assert got["search_path"] == "pg_catalog,pg_temp"
    assert got["statement_timeout"] == "0"
    assert got["default_transaction_read_only"] == "off"
    assert got["transform_null_equals"] == "off"
    assert got["bytea_output"] == "hex"
    assert got["logical_decoding_work_mem"] == "65536"  # kB


# -- one module opens privileged sessions ------------------------------------------------------


def _references(name: str) -> set[str]:
    """Modules that call ``….name(…)`` or pass ``name=`` to a call."""
    found = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if (isinstance(node.func, ast.Attribute) and node.func.attr == name) or any(
                k.arg == name for k in node.keywords
            ):
                found.add(str(path.relative_to(SRC)))
    return found


def test_only_the_privileged_module_opens_privileged_sessions() -> None:
    # the raw superuser connection string: privileged.py (and the cluster, which defines
    # it and derives least-privilege and address-only strings from it)
    assert _references("admin_conninfo") <= {
        "server/postgres/privileged.py",
        "server/postgres/cluster.py",
    }, _references("admin_conninfo")
    # replication connections
    assert _references("replication") == {"server/postgres/privileged.py"}


def test_the_control_database_sessions_are_pinned(server: ServerThread) -> None:
    cluster = server.server.config.app.state.services.cluster
    assert "search_path=public" in cluster.control_conninfo
    assert "role=none" in cluster.control_conninfo


def test_wal_streams_run_as_a_replication_role_not_the_superuser(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    tenant = make_tenant(server, make_user, prefix="wal")
    tenant.ok("CREATE TABLE items (id int PRIMARY KEY, label text)")
    url = tenant.server.url.replace("http://", "ws://") + f"/v1/realtime/{tenant.database}"
    headers = {"Authorization": f"Bearer {tenant.key}"}
    with (
        connect(url, additional_headers=headers, open_timeout=10) as ws,
        tenant.superuser() as conn,
    ):
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        subscribe = {"type": "subscribe", "request_id": "r", "queries": ["SELECT * FROM items"]}
        ws.send(json.dumps(subscribe))  # the hub streams while this socket is open
        assert json.loads(ws.recv(timeout=20))["type"] == "subscription_applied"
        walsenders = conn.execute(
            "SELECT a.usename, r.rolsuper, r.rolreplication, r.rolbypassrls"
            " FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename"
            " WHERE a.backend_type = 'walsender' AND a.datname = %s",
            (tenant.pg_name,),
        ).fetchall()
        tables = conn.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relkind = 'r'"
            " AND has_table_privilege(%s, c.oid, 'SELECT')"
            " AND c.relnamespace = 'public'::regnamespace",
            (privileged.REPLICATION_ROLE,),
        ).fetchone()
    assert walsenders and {tuple(w) for w in walsenders} <= {
        (privileged.REPLICATION_ROLE, False, True, False)
    }, walsenders
    assert tables == (0,)  # decoding needs no privilege on the tenant's tables
