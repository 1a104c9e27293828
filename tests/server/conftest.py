"""Fixtures for the server API tests: a session-wide HTTP caller (usable from module-scoped
fixtures, unlike the function-scoped ``api``), a superuser connection to the test
server's embedded cluster to check what really happened in Postgres, and small helpers
to make databases and assert error envelopes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import psycopg
import pytest

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

from ._helpers import unique


class Call(Protocol):
    def __call__(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> httpx.Response: ...


class Superuser(Protocol):
    def __call__(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]: ...


@pytest.fixture(scope="session")
def call(base_url: str) -> Iterator[Call]:
    """Like ``api`` but session-scoped: ``call(method, path, key=None, **httpx_kwargs)``."""
    with httpx.Client(base_url=base_url, timeout=60) as client:

        def do(method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return client.request(method, path, headers=headers, **kwargs)

        yield do


@pytest.fixture(scope="session")
def superuser(server: ServerThread) -> Superuser:
    """``superuser(dbname)`` → an autocommit superuser connection to the test cluster
    (use it in a ``with`` block)."""
    pg = EmbeddedPostgres(server.settings.data_dir)

    def connect(dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(pg.url(dbname), autocommit=True)

    return connect


@pytest.fixture(scope="session")
def make_db(call: Call) -> Callable[..., dict[str, Any]]:
    """``make_db(key, name=None, **fields)`` → the created ``Database`` as JSON."""

    def make(key: str, name: str | None = None, **fields: Any) -> dict[str, Any]:
        r = call("POST", "/v1/databases", key, json={"name": name or unique("db"), **fields})
        assert r.status_code == 201, r.text
        return dict(r.json())

    return make
