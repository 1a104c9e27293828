"""A first publish into a database that already holds the module's tables — one restored
from a backup (``databases/backup.py``; a backup carries the tables, not the module's code)
or filled by hand before.

A table the module declares is **adopted** when one of that name exists in ``public``
with the columns the module declares, in order — the same names, types (as Postgres
spells them) and NOT NULL — and the same primary key: the publish neither creates it nor
touches its rows, its grants and row visibility policies are set as for any publish, and
``@init`` does not run (the rows came with the tables). One that differs refuses the
publish, changing nothing: 409 ``table_exists``, naming the table and what differs.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from millpond.module._def import ModuleDef, TableDef

from ..errors import ServiceError
from . import migrate, schema

_COLUMNS_SQL = """
SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
WHERE n.nspname OPERATOR(pg_catalog.=) 'public' AND c.relkind OPERATOR(pg_catalog.=) 'r'
  AND c.relname OPERATOR(pg_catalog.=) ANY(%s::text[])
  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""
_KEYS_SQL = """
SELECT c.relname, ARRAY(SELECT a.attname FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY
       AS u(attnum, ord) JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=)
       c.oid AND a.attnum OPERATOR(pg_catalog.=) u.attnum ORDER BY u.ord)::text[]
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE n.nspname OPERATOR(pg_catalog.=) 'public' AND k.contype OPERATOR(pg_catalog.=) 'p'
  AND c.relname OPERATOR(pg_catalog.=) ANY(%s::text[])
"""
_TYPES_SQL = "SELECT t, t::pg_catalog.regtype::text FROM pg_catalog.unnest(%s::text[]) AS t"

Shape = list[tuple[str, str, bool]]
"""A table's columns: (name, type as ``format_type`` spells it, NOT NULL)."""


async def adopting(
    conn: AsyncConnection[Any], module: ModuleDef, plan: migrate.Plan
) -> tuple[migrate.Plan, list[str]]:
    """``plan`` (a first publish's) without the tables that exist already and match, with
    a step saying each is adopted; and their names. 409 ``table_exists`` for one that
    exists and differs."""
    names = [t.name for t in module.tables]
    found = await _shapes(conn, names)
    if not found:
        return plan, []
    keys = {
        str(name): list(columns)
        for name, columns in await (await conn.execute(_KEYS_SQL, (names,))).fetchall()
    }
    types = await _canonical(conn, module)
    problems = {}
    for table in module.tables:
        if table.name in found:
            problem = _difference(table, found[table.name], keys.get(table.name, []), types)
            if problem:
                problems[table.name] = problem
    if problems:
        listed = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise ServiceError(
            409,
            "table_exists",
            f"the database already has tables the module declares, and they differ: {listed};"
            " rename or drop them, or change the module to match",
            {"tables": problems},
        )
    adopted = [t for t in module.tables if t.name in found]
    before = ModuleDef(tables=tuple(adopted))
    steps = migrate.plan(before, module).steps  # ``before`` is within ``module``: no drops
    steps += [
        migrate.Step("adopt_table", f"= table {t.name} (adopted: it exists as declared)")
        for t in adopted
    ]
    return migrate.Plan(steps), [t.name for t in adopted]


async def _shapes(conn: AsyncConnection[Any], names: list[str]) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for table, column, type_name, not_null in await (
        await conn.execute(_COLUMNS_SQL, (names,))
    ).fetchall():
        shapes.setdefault(str(table), []).append((str(column), str(type_name), bool(not_null)))
    return shapes


async def _canonical(conn: AsyncConnection[Any], module: ModuleDef) -> dict[str, str]:
    """Each column type the module uses, as Postgres spells it."""
    texts = sorted(
        {schema.column_type(c.type).as_string(None) for t in module.tables for c in t.columns}
    )
    rows = await (await conn.execute(_TYPES_SQL, (texts,))).fetchall()
    return {str(given): str(spelled) for given, spelled in rows}


def _difference(table: TableDef, shape: Shape, key: list[str], types: dict[str, str]) -> str:
    """What differs between the existing table and the declared one ("" if nothing)."""
    declared_key = list(table.primary_key)
    want = [
        (
            c.name,
            types[schema.column_type(c.type).as_string(None)],
            not c.type.nullable or c.name in declared_key,
        )
        for c in table.columns
    ]
    if [c[0] for c in shape] != [c[0] for c in want]:
        return f"its columns are {[c[0] for c in shape]}, the module's {[c[0] for c in want]}"
    for (name, have_type, have_nn), (_, want_type, want_nn) in zip(shape, want, strict=True):
        if have_type != want_type:
            return f"column {name} is {have_type}, the module's {want_type}"
        if have_nn != want_nn:
            return f"column {name} is {_nullness(have_nn)}, the module's {_nullness(want_nn)}"
    if key != declared_key:
        return f"its primary key is {key}, the module's {declared_key}"
    return ""


def _nullness(not_null: bool) -> str:
    return "NOT NULL" if not_null else "nullable"
