"""A hostile tenant for the security tests: a user with a database of its own, HTTP and
gateway access as each of its roles, and a superuser view of the cluster to check what
really happened."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

_names = itertools.count()


@dataclass
class Tenant:
    server: ServerThread
    username: str
    key: str
    database: str  # owner/name
    db_id: int

    @property
    def pg_name(self) -> str:
        return f"mp_db_{self.db_id}"

    def role(self, which: str) -> str:
        return f"{self.pg_name}_{which}"

    def http(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.request(method, self.server.url + path, headers=headers, timeout=60, **kw)

    def query(self, sql: str, key: str | None = None) -> httpx.Response:
        return self.http("POST", "/v1/query", key, json={"database": self.database, "sql": sql})

    def ok(self, sql: str, key: str | None = None) -> Any:
        r = self.query(sql, key)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def new_key(self, **fields: Any) -> str:
        r = self.http("POST", "/v1/keys", json=fields)
        assert r.status_code == 201, r.text
        return str(r.json()["secret"])

    def share(self, username: str, role: str) -> None:
        r = self.http(
            "PUT", f"/v1/databases/{self.database}/collaborators/{username}", json={"role": role}
        )
        assert r.status_code in (200, 201), r.text

    def gateway(self, key: str | None = None, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.server.settings.gateway_port,
            user="anyone",
            password=key or self.key,
            dbname=self.database,
            sslmode="disable",
            autocommit=True,
            **kw,
        )

    @contextmanager
    def superuser(self, dbname: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        url = EmbeddedPostgres(self.server.settings.data_dir).url(dbname or self.pg_name)
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn


def make_tenant(server: ServerThread, key_maker: Any, prefix: str = "sec") -> Tenant:
    username, key = key_maker(prefix=prefix)
    name = f"{prefix}db{next(_names)}"
    r = httpx.post(
        server.url + "/v1/databases",
        json={"name": name},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return Tenant(server, username, key, f"{username}/{name}", int(r.json()["id"]))
