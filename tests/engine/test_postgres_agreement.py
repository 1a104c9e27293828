"""The predicate engine agrees with Postgres: for random rows (NULLs included) and
random predicates, a row matches exactly when ``SELECT id FROM t WHERE <predicate>``
returns it; the engine refuses exactly the predicates Postgres rejects; and the
canonical SQL the engine writes means the same to Postgres as the text it read."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from millpond.engine.predicates import Expr, UnsupportedQuery, bind, parse_query
from millpond.server.postgres.embedded import EmbeddedPostgres

from .conftest import Connection
from .strategies import COLUMNS, EDGES, NAMES, PREDICATES, ROWS, loose_comparisons

AGREEMENT = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Outcome = frozenset[int] | str


class Rows(list[dict[str, Any]]):
    """Loaded rows, with a short repr for Hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} rows>"


def load(pg: Connection, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace ``table``'s rows; return them as psycopg's default loaders give them."""
    pg.execute(f"TRUNCATE {table}")
    columns = ", ".join(NAMES)
    marks = ", ".join(["%s"] * (len(NAMES) + 1))
    with pg.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} (id, {columns}) VALUES ({marks})",
            [(i, *(row[name] for name in NAMES)) for i, row in enumerate(rows)],
        )
    return Rows(pg.execute(f"SELECT * FROM {table}").fetchall())


def postgres_outcome(pg: Connection, table: str, where: str) -> Outcome:
    try:
        return frozenset(row["id"] for row in pg.execute(f"SELECT id FROM {table} WHERE {where}"))
    except psycopg.Error as exc:
        return f"error: {exc.diag.message_primary}"


def engine_outcome(
    table: str, where: str, columns: dict[str, str], rows: list[dict[str, Any]], timezone: str
) -> tuple[Outcome, str | None]:
    """The ids the engine matches (or its refusal), and its canonical WHERE text."""
    try:
        query = parse_query(f"SELECT * FROM {table} WHERE {where}")
        bound = bind(query, columns, timezone=timezone)
    except UnsupportedQuery as exc:
        return f"refused: {exc}", None
    assert parse_query(query.to_sql()) == query, query.to_sql()
    return frozenset(row["id"] for row in rows if bound.matches(row)), bound.where_sql()


def check(
    pg: Connection,
    table: str,
    predicate: Expr,
    columns: dict[str, str],
    rows: list[dict[str, Any]],
    timezone: str = "UTC",
    strict: bool = True,
) -> None:
    where = predicate.to_sql()
    expected = postgres_outcome(pg, table, where)
    actual, canonical = engine_outcome(table, where, columns, rows, timezone)
    if isinstance(expected, str):
        assert isinstance(actual, str), f"Postgres {expected}, but the engine accepted: {where}"
        return
    if isinstance(actual, str):
        assert not strict, f"the engine {actual}, but Postgres accepted: {where}"
        return
    assert actual == expected, f"{where}\nrows: {[r for r in rows if r['id'] in actual ^ expected]}"
    assert canonical is not None
    assert postgres_outcome(pg, table, canonical) == expected, f"canonical: {canonical}"


@pytest.fixture(scope="module")
def fixed_rows(pg: Connection) -> list[dict[str, Any]]:
    """A second table, ``fixed``: every edge value of every column, NULLs, shuffled
    across ~150 rows, so each predicate is checked against many rows at once."""
    columns = ", ".join(f"{name} {type_name}" for name, type_name in COLUMNS.items())
    pg.execute(f"CREATE TABLE IF NOT EXISTS fixed (id int4 PRIMARY KEY, {columns})")
    rng = random.Random(20240310)
    rows = [{name: rng.choice([*EDGES[name], None]) for name in NAMES} for _ in range(150)]
    for name in NAMES:  # each edge value (and NULL) at least once
        for i, value in enumerate([*EDGES[name], None]):
            rows[i][name] = value
    return load(pg, "fixed", rows)


@AGREEMENT
@given(rows=ROWS, predicates=st.lists(PREDICATES, min_size=1, max_size=4))
def test_random_rows_and_predicates(
    pg: Connection, column_types: dict[str, str], rows: list[dict[str, Any]], predicates: list[Expr]
) -> None:
    loaded = load(pg, "t", rows)
    for predicate in predicates:
        check(pg, "t", predicate, column_types, loaded)


@AGREEMENT
@given(predicate=PREDICATES)
def test_predicates_over_edge_values(
    pg: Connection, column_types: dict[str, str], fixed_rows: list[dict[str, Any]], predicate: Expr
) -> None:
    check(pg, "fixed", predicate, column_types, fixed_rows)


@pytest.fixture(scope="module")
def new_york(
    pg_cluster: EmbeddedPostgres, fixed_rows: list[dict[str, Any]]
) -> Iterator[Connection]:
    """A connection whose session time zone has daylight saving time."""
    with psycopg.connect(pg_cluster.url(), autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET TimeZone = 'America/New_York'")
        yield conn


@settings(AGREEMENT, max_examples=100)
@given(predicate=PREDICATES)
def test_in_a_session_time_zone_with_dst(
    new_york: Connection, column_types: dict[str, str], predicate: Expr
) -> None:
    """Quoted timestamps without an offset, and date/timestamp vs timestamptz, are read
    in the session time zone: bound with the same zone, the engine agrees."""
    rows = new_york.execute("SELECT * FROM fixed").fetchall()
    check(new_york, "fixed", predicate, column_types, rows, timezone="America/New_York")


@settings(AGREEMENT, max_examples=150)
@given(predicate=loose_comparisons())
def test_refuses_what_postgres_rejects(
    pg: Connection, column_types: dict[str, str], fixed_rows: list[dict[str, Any]], predicate: Expr
) -> None:
    """Ill-typed comparisons: whatever Postgres rejects, the engine refuses (it may
    refuse more, e.g. date literals with a time), and what it accepts, it gets right."""
    check(pg, "fixed", predicate, column_types, fixed_rows, strict=False)
