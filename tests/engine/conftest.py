"""A private embedded Postgres for the predicate engine's agreement tests, started once
per session (only when a test asks for it), and a table shaped for random rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from millpond.server.postgres.embedded import EmbeddedPostgres

from .strategies import COLUMNS

Connection = psycopg.Connection[dict[str, Any]]


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    cluster = EmbeddedPostgres(Path(tmp_path_factory.mktemp("engine-pg")))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pg(pg_cluster: EmbeddedPostgres) -> Iterator[Connection]:
    """An autocommit connection (session TimeZone UTC) with the table ``t``."""
    with psycopg.connect(pg_cluster.url(), autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        columns = ", ".join(f"{name} {type_name}" for name, type_name in COLUMNS.items())
        conn.execute(f"CREATE TABLE t (id int4 PRIMARY KEY, {columns})")
        yield conn


@pytest.fixture(scope="session")
def column_types(pg: Connection) -> dict[str, str]:
    """The table's columns as the realtime layer would describe them."""
    rows = pg.execute(
        "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
        " WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped"
    ).fetchall()
    return {row["attname"]: row["type"] for row in rows}
