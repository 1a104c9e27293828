"""Fixtures for the cluster tests: a server of its own (so that placement touches no
other test) with a second embedded Postgres added by URL as the cluster ``second``
(``env``), and superuser sessions on both Postgres to check where databases really are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from millpond.server.config import Settings
from millpond.server.deps import Services
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread, free_port, start_server


class Env:
    def __init__(self, server: ServerThread, second: EmbeddedPostgres) -> None:
        self.server = server
        self.second = second
        self.key = server.admin_key
        self.http = httpx.Client(base_url=server.url, timeout=120)

    def __call__(self, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return self.http.request(method, path, headers=headers, **kw)

    @property
    def services(self) -> Services:
        svc: Services = self.server.server.config.app.state.services
        return svc

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the server's event loop."""
        loop = self.services.store.invalidation._task.get_loop()  # type: ignore[union-attr]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(120)

    def database(self, name: str, cluster: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "is_private": False}
        if cluster is not None:
            body["cluster"] = cluster
        r = self("POST", "/v1/databases", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def sql(self, database: str, text: str, key: str | None = None) -> Any:
        r = self("POST", "/v1/query", key, json={"database": database, "sql": text})
        assert r.status_code == 200, r.text
        return r.json()

    def user(self, admin: bool = False) -> str:
        name = f"u{time.monotonic_ns() % 10**9}"
        r = self("POST", "/v1/users", json={"username": name, "is_admin": admin})
        assert r.status_code == 201, r.text
        return str(r.json()["api_key"]["secret"])


def on(pg: EmbeddedPostgres, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """A superuser session on one of the two Postgres."""
    return psycopg.connect(pg.url(dbname), autocommit=True)


def databases_on(pg: EmbeddedPostgres) -> set[str]:
    with on(pg) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'mp_db_%'")
        return {r[0] for r in rows}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    second = EmbeddedPostgres(tmp_path_factory.mktemp("second-pg"))
    second.start()
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("clusters-data"),
        statement_timeout_ms=5000,
        realtime_idle_seconds=0.5,
        module_workers=1,
        gateway_port=free_port(),
        placement="home",
        postgres_check_interval_s=0.2,  # the second cluster's supervisor checks often
    )
    server = start_server(settings)
    environment = Env(server, second)
    r = environment("POST", "/v1/clusters", json={"url": second.url(), "name": "second"})
    assert r.status_code == 201, r.text
    try:
        yield environment
    finally:
        environment.http.close()
        server.stop()
        second.stop()


def home_pg(env: Env) -> EmbeddedPostgres:
    embedded = env.services.cluster.embedded
    assert embedded is not None
    return embedded
