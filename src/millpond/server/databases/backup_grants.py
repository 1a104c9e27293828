"""The privileges of a database's own roles, carried by a backup to the restored database.

A backup is ``pg_dump --no-acl``: its grants name the source database's roles, which the
restored database does not have. Restored as the target's ``_owner``, every object gets
the target's default privileges (readers ``SELECT``, writers the rest, ``EXECUTE`` for
everyone) — which would open what the source kept closed: a module's private tables
(no ``SELECT`` for readers and writers), a function revoked from ``PUBLIC``.

So the backup's manifest lists, for every table, view, sequence and function whose
effective privileges for ``_ro``, ``_rw`` and ``_reducer`` differ from those defaults,
what those roles may do (:func:`capture`, run as the source's owner); after the restore
the same privileges are given to the target's roles (:func:`apply`, as its owner).
Sessions here have ``search_path`` ``pg_catalog`` (``pg_tools.PINNED``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, cast, get_args

from psycopg import AsyncConnection, sql

from ...models.backups import Privilege, RoleGrants
from ..modules.row_visibility import SCHEMA as INTERNAL_SCHEMA
from ..postgres.provision import DatabaseRoles

Suffix = Literal["ro", "rw", "reducer"]
SUFFIXES: tuple[Suffix, ...] = ("ro", "rw", "reducer")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("SELECT", "USAGE", "UPDATE")
_ALLOWED = frozenset(get_args(Privilege))

USER_SCHEMA = (
    "n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema', 'pg_toast'])"
    " AND n.nspname !~ '^pg_(toast_)?temp_'"
)
"""A schema of the tenant's (with ``n`` its ``pg_namespace`` row)."""
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = {catalog}"
    " AND d.objid = {oid} AND d.deptype = 'e')"
)

_RELATIONS_SQL = f"""
SELECT n.nspname, c.relname, c.relkind = 'S' AS is_sequence, r.suffix,
       ARRAY(SELECT p FROM pg_catalog.unnest(CASE WHEN c.relkind = 'S'
                 THEN %(sequence)s::text[] ELSE %(table)s::text[] END) AS p
             WHERE CASE WHEN c.relkind = 'S'
                 THEN pg_catalog.has_sequence_privilege(r.role, c.oid, p)
                 ELSE pg_catalog.has_table_privilege(r.role, c.oid, p) END) AS privileges
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN ROWS FROM (pg_catalog.unnest(%(suffixes)s::text[]), pg_catalog.unnest(%(roles)s::name[]))
    AS r (suffix, role)
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMA} AND n.nspname <> %(internal)s
  AND {_NOT_EXTENSION.format(catalog="'pg_catalog.pg_class'::regclass", oid="c.oid")}
ORDER BY 1, 2
"""

_FUNCTIONS_SQL = f"""
SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
       r.suffix, CASE WHEN pg_catalog.has_function_privilege(r.role, p.oid, 'EXECUTE')
                 THEN ARRAY['EXECUTE'] ELSE ARRAY[]::text[] END AS privileges
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
CROSS JOIN ROWS FROM (pg_catalog.unnest(%(suffixes)s::text[]), pg_catalog.unnest(%(roles)s::name[]))
    AS r (suffix, role)
WHERE {USER_SCHEMA} AND n.nspname <> %(internal)s
  AND {_NOT_EXTENSION.format(catalog="'pg_catalog.pg_proc'::regclass", oid="p.oid")}
ORDER BY 1, 2, 3
"""

# the manifest is the uploader's: only the tenant's own schemas are ever named from it
_SIGNATURES_SQL = f"""
SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
       p.oid::pg_catalog.regprocedure::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND {USER_SCHEMA} AND n.nspname <> %(internal)s
"""

_RELATIONS_FOUND_SQL = f"""
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND {USER_SCHEMA} AND n.nspname <> %(internal)s
"""


def _defaults(kind: str) -> dict[str, set[str]]:
    """The effective privileges of the roles on a new object of ``kind`` in a database
    (``provision.create_database``'s default privileges; ``_rw`` is a member of ``_ro``,
    ``_reducer`` of ``_rw``)."""
    if kind == "function":
        return {s: {"EXECUTE"} for s in SUFFIXES}
    every = set(SEQUENCE_PRIVILEGES if kind == "sequence" else TABLE_PRIVILEGES)
    return {"ro": {"SELECT"}, "rw": every, "reducer": every}


async def capture(conn: AsyncConnection[Any], roles: DatabaseRoles) -> list[RoleGrants]:
    """The objects of the source database whose roles' privileges are not the defaults."""
    params = {
        "suffixes": list(SUFFIXES),
        "roles": [roles.role(s) for s in SUFFIXES],
        "table": list(TABLE_PRIVILEGES),
        "sequence": list(SEQUENCE_PRIVILEGES),
        "internal": INTERNAL_SCHEMA,
    }
    found: dict[tuple[str, str, str, str], dict[str, set[str]]] = {}
    for schema, name, is_sequence, suffix, privileges in await _rows(conn, _RELATIONS_SQL, params):
        kind = "sequence" if is_sequence else "table"
        found.setdefault((kind, schema, name, ""), {})[suffix] = set(privileges)
    for schema, name, args, suffix, privileges in await _rows(conn, _FUNCTIONS_SQL, params):
        found.setdefault(("function", schema, name, args), {})[suffix] = set(privileges)
    return [
        RoleGrants(
            kind=cast(Any, kind),
            schema_name=schema,
            name=name,
            arguments=args,
            **{s: sorted(privileges.get(s, ())) for s in SUFFIXES},
        )
        for (kind, schema, name, args), privileges in found.items()
        if privileges != _defaults(kind)
    ]


async def _rows(conn: AsyncConnection[Any], query: str, params: Any) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(query, params)
    return [tuple(row) for row in await cursor.fetchall()]


async def apply(conn: AsyncConnection[Any], roles: DatabaseRoles, grants: list[RoleGrants]) -> int:
    """Give the restored database's roles the privileges ``grants`` lists (the objects
    restored; one transaction). Returns how many objects it changed."""
    if not grants:
        return 0
    params = {"schemas": sorted({g.schema_name for g in grants}), "internal": INTERNAL_SCHEMA}
    relations = {(s, n) for s, n in await _rows(conn, _RELATIONS_FOUND_SQL, params)}
    signatures = {(s, n, a): sig for s, n, a, sig in await _rows(conn, _SIGNATURES_SQL, params)}
    statements: list[sql.Composable] = []
    changed = 0
    for grant in grants:
        target = _target(grant, relations, signatures)
        if target is not None:
            statements += _statements(grant, target, roles)
            changed += 1
    if statements:
        async with conn.transaction():
            await conn.execute(sql.SQL(";\n").join(statements))
    return changed


def _target(
    grant: RoleGrants,
    relations: set[tuple[str, str]],
    signatures: dict[tuple[str, str, str], str],
) -> sql.Composable | None:
    """What the GRANT names (``TABLE s.t``, ``ROUTINE s.f(int4)``); None if the restore
    made no such object. A routine's signature is Postgres' own text of it
    (``regprocedure``: quoted, schema-qualified under this session's search path)."""
    if grant.kind == "function":
        signature = signatures.get((grant.schema_name, grant.name, grant.arguments))
        return None if signature is None else sql.SQL("ROUTINE ") + sql.SQL(signature)
    if (grant.schema_name, grant.name) not in relations:
        return None
    keyword = "SEQUENCE" if grant.kind == "sequence" else "TABLE"
    return sql.SQL(keyword + " {}").format(sql.Identifier(grant.schema_name, grant.name))


def _statements(
    grant: RoleGrants, target: sql.Composable, roles: DatabaseRoles
) -> list[sql.Composable]:
    """REVOKE everything from the roles (and, for a routine, from ``PUBLIC``), then GRANT
    each role what it has beyond the role it is a member of."""
    who: list[sql.Composable] = [sql.Identifier(roles.role(s)) for s in SUFFIXES]
    if grant.kind == "function":
        who.insert(0, sql.SQL("PUBLIC"))
    statements: list[sql.Composable] = [
        sql.SQL("REVOKE ALL ON {} FROM {}").format(target, sql.SQL(", ").join(who))
    ]
    inherited: set[str] = set()
    for suffix, privileges in _effective(grant):
        own = [p for p in privileges if p not in inherited and p in _ALLOWED]
        inherited |= set(privileges)
        if own:
            statements.append(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in own),
                    target,
                    sql.Identifier(roles.role(suffix)),
                )
            )
    return statements


def _effective(grant: RoleGrants) -> Iterator[tuple[Suffix, list[str]]]:
    """Each role, members first (``_ro``, ``_rw``, ``_reducer``), with its privileges."""
    lists: dict[Suffix, Iterable[str]] = {"ro": grant.ro, "rw": grant.rw, "reducer": grant.reducer}
    for suffix in SUFFIXES:
        yield suffix, list(lists[suffix])
