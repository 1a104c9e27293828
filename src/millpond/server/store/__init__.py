"""The control database: accounts, keys, databases, collaborators (and, later, jobs,
events and flags). ``Store`` wraps an async connection pool with small helpers; the
schema lives in numbered SQL migrations next to this file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from .cache import GenerationCache
from .notifications import Invalidation

Params = Sequence[Any] | dict[str, Any] | None


class Store:
    def __init__(self, conninfo: str, max_size: int = 10) -> None:
        self.pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            name="control",
        )
        self.invalidation = Invalidation(conninfo, "millpond_auth")
        self.cache = GenerationCache(self.invalidation)
        """Keys and database access, dropped on every ``millpond_auth`` notification."""

    def changed(self) -> None:
        """This replica just changed who may do what: drop its cached keys and access at
        once (other replicas hear it from the ``millpond_auth`` notification)."""
        self.invalidation.bump()

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)
        await self.invalidation.start()

    async def close(self) -> None:
        await self.invalidation.stop()
        await self.pool.close()

    async def fetchone(self, query: Any, params: Params = None) -> DictRow | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def fetchall(self, query: Any, params: Params = None) -> list[DictRow]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def execute(self, query: Any, params: Params = None) -> int:
        """Run a statement; return the number of rows it touched."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn
