"""Direct connections of ``AsyncMillpond`` (``get_connection``, ``pooled_connection``,
``pooled_cursor``): psycopg 3 through the gateway, one pool per database, created at
first use. Connections the server closed are found by the pool's check and replaced; a
``fork()`` child forgets the parent's pools and builds its own (see ``_connections``)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .._base import ClientConfig
from .._connections import conninfo, gateway_params, require, watch_forks

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor
    from psycopg_pool import AsyncConnectionPool


class AsyncConnections:
    def __init__(
        self, config: ClientConfig, port: int | None, min_size: int, max_size: int
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError("pool sizes need 0 <= pool_min_size <= pool_max_size, max >= 1")
        self.config = config
        self.port = port
        self.min_size = min_size
        self.max_size = max_size
        self._pools: dict[str, AsyncConnectionPool[Any]] = {}
        self._lock = threading.Lock()
        watch_forks(self)

    def conninfo(self, db: str, *, with_password: bool = True) -> str:
        params = gateway_params(self.config, db, self.port)
        if with_password:
            params["password"] = self.config.api_key
        return conninfo(**params)

    async def connect(self, db: str, **kwargs: Any) -> AsyncConnection[Any]:
        psycopg = require("psycopg")
        connection: AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
            self.conninfo(db), **kwargs
        )
        return connection

    async def pool(self, db: str) -> AsyncConnectionPool[Any]:
        with self._lock:
            pool = self._pools.get(db)
            if pool is None:
                pools = require("psycopg_pool")
                require("psycopg")
                pool = pools.AsyncConnectionPool(
                    self.conninfo(db),
                    min_size=self.min_size,
                    max_size=self.max_size,
                    open=False,
                    check=pools.AsyncConnectionPool.check_connection,
                    name=f"millpond:{db}",
                )
                self._pools[db] = pool
        await pool.open()  # idempotent
        return pool

    @asynccontextmanager
    async def connection(self, db: str) -> AsyncIterator[AsyncConnection[Any]]:
        pool = await self.pool(db)
        async with pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def cursor(self, db: str) -> AsyncIterator[AsyncCursor[Any]]:
        async with self.connection(db) as conn, conn.cursor() as cur:
            yield cur  # the pool commits on success and rolls back on an exception

    async def aclose(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()

    def _forget_pools(self) -> None:
        self._lock = threading.Lock()
        self._pools = {}  # the parent's: never closed from here
