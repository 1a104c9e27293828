"""Row visibility rules: ``@table(public=True, visible_if="owner = :sender")``, enforced
by Postgres row-level security bound to the caller's identity.

A rule is SQL over the table's columns; ``:sender`` stands for the caller's identity. At
publish it becomes a policy ``FOR SELECT`` on the table, with ``:sender`` compiled to
``(SELECT millpond.sender())``, beside one that lets the module's reducer role see and
write every row; the owner owns the table (not ``FORCE``\\ d), so sees every row too.

The identity is bound by a **proof** the server sets in the caller's session: the
setting ``millpond.identity`` = ``<identity>.<HMAC-SHA256(K, identity) in hex>``, where
``K`` is a key of the database derived from the server secret (:func:`database_key`).
Readers run arbitrary SQL and may set any setting, so the function ``millpond.sender()``
(``SECURITY DEFINER``, owned by the owner role, ``search_path`` pinned, every name
schema-qualified) recomputes the HMAC in SQL from the key, kept in the table
``millpond.identity_key`` that only the owner can read, and returns the identity, or
NULL when the setting is missing or forged. Nobody without the key can make another
identity's proof; the server never puts a proof in the text of a statement (other
sessions of a shared role see that text in ``pg_stat_activity``): it is a bind parameter
or a startup parameter.

Where it is set: the HTTP query API (:class:`RowRules` says whether the database has
rules, so others pay nothing), the gateway (a startup parameter, which ``RESET`` falls
back to), exports (a startup option) and realtime initial rows. Streamed changes are
judged by the server itself, for each identity subscribed (``realtime/visibility.py``).

Every publish makes the schema, the key, the function and each rule's policies again
(idempotent statements after the migration's, in its transaction); a rule removed is a
step of the migration plan (:func:`drop_statements`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from psycopg import sql

from millpond.module._declare import VISIBLE_IF_PLACEHOLDER as PLACEHOLDER
from millpond.module._def import ModuleDef, TableDef

from ..postgres import provision
from ..store import Store
from ..store.cache import GenerationCache
from ..store.notifications import Invalidation

SCHEMA = "millpond"
KEY_TABLE = "identity_key"
FUNCTION = "sender"
SETTING = "millpond.identity"
SENDER_CALL = f"{SCHEMA}.{FUNCTION}()"
"""How the function's call reads in a policy's deparsed text."""
RULE_POLICY = "millpond_visible_if"
REDUCER_POLICY = "millpond_reducer"
SET_PROOF_SQL = "SELECT pg_catalog.set_config('millpond.identity', %s, false)"
"""Sets a proof for the session; the proof is a parameter, never in the statement's text."""
SET_LOCAL_PROOF_SQL = "SELECT pg_catalog.set_config('millpond.identity', %s, true)"

_KEY_LABEL = "millpond row visibility key: {}"
_BLOCK = 64  # SHA-256's block size


# -- keys and proofs -----------------------------------------------------------------------


def database_key(secret: bytes, pg_name: str) -> bytes:
    """The key a database's proofs are made with: an HMAC of its name under the server
    secret (the label cannot be a role name, so it is no role's password)."""
    return hmac.new(secret, _KEY_LABEL.format(pg_name).encode(), hashlib.sha256).digest()


def proof(secret: bytes, pg_name: str, identity: str) -> str:
    """What ``millpond.identity`` is set to for ``identity`` in database ``pg_name``."""
    mac = hmac.new(database_key(secret, pg_name), identity.encode(), hashlib.sha256)
    return f"{identity}.{mac.hexdigest()}"


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer padded keys, stored so that SQL needs only ``sha256``."""
    padded = key.ljust(_BLOCK, b"\x00")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)


# -- rules -----------------------------------------------------------------------------------


def compile_rule(expression: str) -> sql.Composed:
    """The policy's condition: the owner's SQL, each ``:sender`` the proven identity."""
    sender = sql.SQL("(SELECT {}())").format(sql.Identifier(SCHEMA, FUNCTION))
    parts: list[sql.Composable] = []
    position = 0
    for match in PLACEHOLDER.finditer(expression):
        parts += [sql.SQL(expression[position : match.start()]), sender]
        position = match.end()
    parts.append(sql.SQL(expression[position:]))
    return sql.Composed(parts)


def statements(module: ModuleDef, pg_name: str, secret: bytes) -> list[sql.Composable]:
    """Run as the owner in every publish, after the migration: the key and the function
    when any table has a rule, each rule's policies. Every statement may run again."""
    tables = [t for t in module.tables if t.visible_if is not None]
    if not tables:
        return []
    roles = provision.DatabaseRoles(pg_name)
    out = _sender_statements(database_key(secret, pg_name), roles)
    reducer = sql.Identifier(roles.role("reducer"))
    for table in tables:
        out += policy_statements(table, reducer)
    return out


def _sender_statements(key: bytes, roles: provision.DatabaseRoles) -> list[sql.Composable]:
    owner, ro, rw, reducer = (
        sql.Identifier(roles.role(r)) for r in ("owner", "ro", "rw", "reducer")
    )
    schema = sql.Identifier(SCHEMA)
    keys = sql.Identifier(SCHEMA, KEY_TABLE)
    function = sql.Identifier(SCHEMA, FUNCTION)
    inner, outer = _pads(key)
    others = sql.SQL(", ").join([ro, rw, reducer])
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
        sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, owner),
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC, {}").format(schema, others),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, ro),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (one bool PRIMARY KEY DEFAULT true CHECK (one),"
            " inner_pad bytea NOT NULL, outer_pad bytea NOT NULL)"
        ).format(keys),
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(keys, owner),
        sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC, {}").format(keys, others),
        sql.SQL(
            "INSERT INTO {t} AS k (one, inner_pad, outer_pad) VALUES (true,"
            " pg_catalog.decode({i}, 'hex'), pg_catalog.decode({o}, 'hex'))"
            " ON CONFLICT (one) DO UPDATE SET inner_pad = EXCLUDED.inner_pad,"
            " outer_pad = EXCLUDED.outer_pad"
            " WHERE (k.inner_pad, k.outer_pad) IS DISTINCT FROM (EXCLUDED.inner_pad,"
            " EXCLUDED.outer_pad)"
        ).format(t=keys, i=sql.Literal(inner.hex()), o=sql.Literal(outer.hex())),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS pg_catalog.text LANGUAGE sql STABLE"
            " SECURITY DEFINER PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS {}"
        ).format(function, sql.Literal(_sender_body().as_string(None))),
        sql.SQL("ALTER FUNCTION {}() OWNER TO {}").format(function, owner),
        sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function),
        sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(function, ro),
    ]


def _sender_body() -> sql.Composed:
    """The identity of a well-formed setting whose HMAC checks out, else no row (NULL).
    The MACs are compared through SHA-256, so the time a comparison takes says nothing
    about the right MAC."""
    return sql.SQL(
        "SELECT p.identity FROM (SELECT pg_catalog.split_part(s.v, '.', 1) AS identity,"
        " pg_catalog.split_part(s.v, '.', 2) AS mac"
        " FROM (SELECT pg_catalog.current_setting({setting}, true) AS v) AS s"
        " WHERE s.v OPERATOR(pg_catalog.~) '^[0-9a-f]{{64}}[.][0-9a-f]{{64}}$') AS p,"
        " {keys} AS k"
        " WHERE pg_catalog.sha256(pg_catalog.convert_to(p.mac, 'UTF8'))"
        " OPERATOR(pg_catalog.=) pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.encode("
        "pg_catalog.sha256(k.outer_pad OPERATOR(pg_catalog.||) pg_catalog.sha256(k.inner_pad"
        " OPERATOR(pg_catalog.||) pg_catalog.convert_to(p.identity, 'UTF8'))), 'hex'), 'UTF8'))"
    ).format(setting=sql.Literal(SETTING), keys=sql.Identifier(SCHEMA, KEY_TABLE))


def policy_statements(table: TableDef, reducer: sql.Identifier) -> list[sql.Composable]:
    """Row-level security on ``table``: its rule for everyone (but the owner), every row
    for the reducer role. A rule Postgres refuses fails the publish naming the table."""
    assert table.visible_if is not None
    name = sql.Identifier("public", table.name)
    rule, everything = sql.Identifier(RULE_POLICY), sql.Identifier(REDUCER_POLICY)
    create = sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR SELECT TO PUBLIC USING ({})").format(
        rule, name, compile_rule(table.visible_if)
    )
    return [
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(name),
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(rule, name),
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(everything, name),
        _naming(create, f"table {table.name}: visible_if {table.visible_if!r}: "),
        sql.SQL(
            "CREATE POLICY {} ON {} AS PERMISSIVE FOR ALL TO {} USING (true) WITH CHECK (true)"
        ).format(everything, name, reducer),
    ]


def drop_statements(table: str) -> list[sql.Composed]:
    """A table's rule removed: its policies go and row-level security is off again."""
    name = sql.Identifier("public", table)
    return [
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(RULE_POLICY), name),
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(REDUCER_POLICY), name),
        sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(name),
    ]


def _naming(statement: sql.Composed, prefix: str) -> sql.Composed:
    """``statement`` run so that its error starts with ``prefix`` (its SQLSTATE kept)."""
    body = sql.SQL(
        "BEGIN EXECUTE {}; EXCEPTION WHEN OTHERS THEN"
        " RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = {} OPERATOR(pg_catalog.||) SQLERRM;"
        " END"
    ).format(sql.Literal(statement.as_string(None)), sql.Literal(prefix))
    return sql.SQL("DO {}").format(sql.Literal(body.as_string(None)))


# -- which databases have rules (the HTTP query API's question) ------------------------------

_RULES_SQL = """
SELECT coalesce((SELECT v.definition @? '$.tables[*] ? (@.visible_if != null)'
                 FROM module_versions v
                 WHERE v.database_id = %s AND v.state = 'ready'
                 ORDER BY v.version DESC LIMIT 1), false) AS rules
"""


class RowRules:
    """Whether a database's running module has visibility rules, cached until the next
    publish anywhere (the ``millpond_modules`` notification). A stale answer errs safe:
    a session without a proof sees no row a rule guards."""

    def __init__(self, store: Store, changes: Invalidation | None) -> None:
        self.store = store
        self.cache = GenerationCache(changes)

    async def active(self, database_id: int) -> bool:
        row: Any = await self.cache.get_or_load(
            ("row_rules", database_id), lambda: self.store.fetchone(_RULES_SQL, (database_id,))
        )
        return bool(row and row["rules"])
