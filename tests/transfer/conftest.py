"""Fixtures for import and export jobs against the session's real server: a session-wide
HTTP caller (``xfer``), a database owner and fresh databases, a superuser connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

from ._helpers import Api


@pytest.fixture(scope="session")
def xfer(base_url: str) -> Iterator[Api]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield Api(client)


@pytest.fixture(scope="session")
def owner(make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    """A user who owns the databases the tests import into: (username, key)."""
    return make_user(prefix="owner")


@pytest.fixture
def db(xfer: Api, owner: tuple[str, str]) -> str:
    """A fresh database of ``owner``."""
    return xfer.make_db(owner[1])


@pytest.fixture(scope="session")
def superuser(server: ServerThread) -> Callable[[str], psycopg.Connection[Any]]:
    pg = EmbeddedPostgres(server.settings.data_dir)

    def connect(dbname: str = "millpond") -> psycopg.Connection[Any]:
        return psycopg.connect(pg.url(dbname), autocommit=True)

    return connect
