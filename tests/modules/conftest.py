"""Fixtures of the module tests: a private embedded Postgres, started once per session
when a test asks for it, and a fresh database per test (``db``: an autocommit
connection, session TimeZone UTC)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from millpond.server.postgres.embedded import EmbeddedPostgres

_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    cluster = EmbeddedPostgres(Path(tmp_path_factory.mktemp("modules-pg")))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def db(pg_cluster: EmbeddedPostgres) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    name = f"modules_{next(_numbers)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_cluster.url(name), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn
