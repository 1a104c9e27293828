"""Fixtures of the module tests: the session server's embedded Postgres (``pg_cluster``:
no second cluster to initialise), and a fresh database of it per test (``db``: an
autocommit superuser connection, session TimeZone UTC), not known to millpond."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster(server: ServerThread) -> EmbeddedPostgres:
    return EmbeddedPostgres(server.settings.data_dir)


@pytest.fixture
def db(pg_cluster: EmbeddedPostgres) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    name = f"modules_{next(_numbers)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_cluster.url(name), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn
