"""Shared helpers: a table with one column of each kind, and one-line evaluation."""

from __future__ import annotations

from typing import Any

from millpond.engine.predicates import BoundQuery, bind, parse_query

COLUMNS = {
    "id": "integer",
    "i": "int4",
    "s": "smallint",
    "big": "bigint",
    "n": "numeric(10,2)",
    "f": "double precision",
    "r": "real",
    "t": "text",
    "v": "character varying(5)",
    "c": "character(3)",
    "b": "boolean",
    "x": "bool",
    "y": "bool",
    "d": "date",
    "ts": "timestamp without time zone",
    "tz": "timestamp with time zone",
    "u": "uuid",
    "j": "jsonb",
    "arr": "int4[]",
    "iv": "interval",
}


def bound(where: str, timezone: str = "UTC") -> BoundQuery:
    return bind(parse_query(f"SELECT * FROM t WHERE {where}"), COLUMNS, timezone=timezone)


def row(**values: Any) -> dict[str, Any]:
    """A row of ``t``: the given values, every other column NULL."""
    return {name: values.get(name) for name in COLUMNS}


def evaluate(where: str, **values: Any) -> bool | None:
    """The WHERE clause's three-valued result for a row with ``values``."""
    return bound(where).evaluate(row(**values))
