"""Query pools within the connection budget (``server/budget.py``): every connection a
pool opens is counted as a tenant connection from its login until it is closed (or, if
Postgres or the network ended it and nobody closed it, until it is garbage), and idle
pooled connections can be closed on demand to make room for another tenant's."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ..budget import ConnectionBudget


def budgeted_class(
    base: type[AsyncConnection[Any]], budget: ConnectionBudget
) -> type[AsyncConnection[Any]]:
    """A subclass of ``base`` whose ``connect`` first takes a place in ``budget``
    (:class:`~millpond.server.budget.BudgetExceeded` when there is none) and whose
    connections give it back when closed."""

    class _Budgeted(base):  # type: ignore[valid-type,misc]
        _give_back: weakref.finalize[Any, Any] | None = None

        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            await budget.open_connection()
            give_back = budget.closer()
            try:
                conn = await super().connect(conninfo, **kwargs)
            except BaseException:
                give_back()
                raise
            conn._give_back = weakref.finalize(conn, give_back)
            return conn

        async def close(self) -> None:
            try:
                await super().close()
            finally:
                if self._give_back is not None:
                    self._give_back()

    return _Budgeted


async def close_idle(pool: AsyncConnectionPool[Any], limit: int) -> int:
    """Close up to ``limit`` of the pool's idle connections (the pool shrinks by as many:
    it opens new ones again only when asked for more than it has)."""
    closing: list[Any] = []
    # psycopg_pool has no public call for this; its own ShrinkPool does the same
    async with pool._lock:
        while pool._pool and len(closing) < limit:
            closing.append(pool._pool.pop())
            pool._nconns -= 1
        pool._nconns_min = min(pool._nconns_min, len(pool._pool))
    for conn in closing:
        await pool._close_connection(conn)
    return len(closing)


async def reclaim_idle(pools: Iterable[AsyncConnectionPool[Any]], limit: int) -> int:
    """Close up to ``limit`` idle connections, from the pools with the most idle first."""
    closed = 0
    ranked = sorted(pools, key=lambda p: len(p._pool), reverse=True)
    for pool in ranked:
        if closed >= limit:
            break
        closed += await close_idle(pool, limit - closed)
    return closed
