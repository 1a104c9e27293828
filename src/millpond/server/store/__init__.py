"""The control database: accounts, keys, databases, collaborators (and, later, jobs,
events and flags). ``Store`` wraps an async connection pool with small helpers; the
schema lives in numbered SQL migrations next to this file.

The pool fails fast while the supervisor knows Postgres is down (503
``postgres_unavailable`` instead of waiting out its timeout), and hands out no connection
that died while idle (a terminated backend, a restarted Postgres)."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from ..postgres.availability import Availability
from .cache import GenerationCache
from .notifications import Invalidation

Params = Sequence[Any] | dict[str, Any] | None
_RECONNECT_TIMEOUT_S = 2.0


class _Pool(AsyncConnectionPool[AsyncConnection[DictRow]]):
    availability: Availability | None = None

    async def getconn(self, timeout: float | None = None) -> AsyncConnection[DictRow]:
        """A live connection: ones that died while idle are dropped (at once, not with
        the growing pause of psycopg_pool's own ``check``)."""
        for _ in range(self.max_size):
            conn = await self._guarded_getconn(timeout)
            if await connection_alive(conn):
                return conn
            await conn.close()
            await self.putconn(conn)  # the pool replaces it
        return await self._guarded_getconn(timeout)

    async def _guarded_getconn(self, timeout: float | None) -> AsyncConnection[DictRow]:
        if self.availability is None:
            return await super().getconn(timeout)
        return await self.availability.guard(super().getconn(timeout))


async def connection_alive(conn: AsyncConnection[Any]) -> bool:
    """No round trip for a healthy idle connection: it has nothing to read unless the
    server ended it (or sent a notice), and only then is it asked."""
    try:
        poll = select.poll()
        poll.register(conn.pgconn.socket, select.POLLIN)
        if poll.poll(0):
            await AsyncConnectionPool.check_connection(conn)
    except Exception:
        return False
    return True


class Store:
    def __init__(
        self, conninfo: str, max_size: int = 10, availability: Availability | None = None
    ) -> None:
        pool = _Pool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            name="control",
            # give up a failed reconnect soon: a growing pool whose one reconnect is backing
            # off does not try again for its waiters, which would wait after Postgres is back
            reconnect_timeout=_RECONNECT_TIMEOUT_S,
        )
        pool.availability = availability
        self.pool: AsyncConnectionPool[AsyncConnection[DictRow]] = pool
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
