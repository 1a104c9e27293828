"""Fixtures for the realtime client against the real server (``tests/conftest.py``): a
user with a database and a ``msgs`` table, SQL through ``/v1/query``, and waiting for the
cache to catch up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from millpond import Millpond
from millpond.backoff import Backoff
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

FAST = Backoff(base=0.05, cap=0.3)
"""Reconnect quickly in tests."""

SCHEMA = "CREATE TABLE msgs (id int8 PRIMARY KEY, room int4, body text, score numeric)"


@dataclass
class Database:
    """A user's database: ``name`` (owner/name), the user's ``key``, its Postgres name."""

    base_url: str
    name: str
    key: str
    pg_name: str
    pg_url: str

    def sql(self, sql: str) -> list[dict[str, Any]]:
        """Run ``sql`` through the HTTP query API (one transaction); rows as dicts."""
        r = httpx.post(
            f"{self.base_url}/v1/query",
            json={"database": self.name, "sql": sql, "data_format": "objects"},
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"] or []
        return data

    def client(self) -> Millpond:
        return Millpond(self.key, self.base_url)


def make_database(
    base_url: str, admin_key: str, username: str, key: str, data_dir: Any, schema: str
) -> Database:
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{base_url}/v1/databases", json={"name": "live"}, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    db = Database(base_url, f"{username}/live", key, "", "")
    db.pg_name = db.sql(schema + "; SELECT current_database() AS name")[0]["name"]
    db.pg_url = EmbeddedPostgres(data_dir).url(db.pg_name)
    return db


@pytest.fixture
def database(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Iterator[Database]:
    username, key = make_user(prefix="rtc")
    yield make_database(
        server.url, server.admin_key, username, key, server.settings.data_dir, SCHEMA
    )


@pytest.fixture
def mp(database: Database) -> Iterator[Millpond]:
    with database.client() as client:
        yield client
