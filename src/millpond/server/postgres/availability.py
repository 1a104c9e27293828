"""Whether Postgres is reachable right now, as the supervisor last saw it.

One :class:`Availability` per cluster (``Cluster.availability``). The supervisor marks it
down when the postmaster dies or stops answering, and up once it answers again; everything
that talks to Postgres consults it so that, meanwhile, callers get a fast 503
``postgres_unavailable`` (with ``Retry-After``) instead of waiting out a pool timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout

from ..errors import ServiceError
from ..waiting import wait_event

RETRY_AFTER_S = 1

# connection exception (08…), admin/crash shutdown, cannot connect now (57P01-57P03)
_GONE_SQLSTATES = ("57P01", "57P02", "57P03")

T = TypeVar("T")


class PostgresUnavailable(ServiceError):
    """503 ``postgres_unavailable``: Postgres is down, restarting or unreachable."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            503,
            "postgres_unavailable",
            f"Postgres is unavailable ({reason}); retry shortly",
            {"reason": reason},
        )
        self.reason = reason
        self.headers = {"Retry-After": str(RETRY_AFTER_S)}


class Availability:
    def __init__(self) -> None:
        self.up = True
        self.reason: str | None = None
        self._suspicion = asyncio.Event()
        self._waiting: dict[asyncio.Task[Any], bool] = {}
        """Tasks in ``guard``, and whether ``mark_down`` cancelled them."""

    def mark_down(self, reason: str) -> None:
        self.up = False
        self.reason = reason
        for task, cancelled in list(self._waiting.items()):  # end waits for connections
            if not cancelled:
                self._waiting[task] = True
                task.cancel()

    def mark_up(self) -> None:
        self.up = True
        self.reason = None

    def check(self) -> None:
        """Raise :class:`PostgresUnavailable` if Postgres is known to be down."""
        if not self.up:
            raise PostgresUnavailable(self.reason or "down")

    def suspect(self) -> None:
        """A connection just failed: have the supervisor look now, not at its next tick."""
        self._suspicion.set()

    async def wait_suspicion(self, timeout: float) -> None:
        await wait_event(self._suspicion, timeout)
        self._suspicion.clear()

    async def guard(self, getting: Coroutine[Any, Any, T]) -> T:
        """Await ``getting`` (a pool's ``getconn``), but fail fast with
        :class:`PostgresUnavailable` when Postgres is, or goes, down meanwhile instead of
        waiting out the pool's timeout: ``mark_down`` cancels the wait (psycopg_pool keeps
        a connection it got meanwhile), as ``asyncio.timeout`` would, for less."""
        if not self.up:
            getting.close()
            self.check()
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._waiting[task] = False
        try:
            return await getting
        except asyncio.CancelledError:
            if self._waiting.get(task) and task.uncancel() <= cancelling:
                raise PostgresUnavailable(self.reason or "down") from None
            raise
        except (PoolTimeout, PoolClosed) as exc:
            if not self.up:
                raise PostgresUnavailable(self.reason or "down") from exc
            raise
        finally:
            self._waiting.pop(task, None)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection to Postgres failed (rather than the SQL)."""
    if isinstance(exc, (PostgresUnavailable, PoolTimeout, PoolClosed)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _GONE_SQLSTATES


def unavailable(
    exc: BaseException, availability: Availability | None = None
) -> PostgresUnavailable:
    """The 503 for a connection failure ``exc``, naming why when the supervisor knows."""
    if isinstance(exc, PostgresUnavailable):
        return exc
    if availability is not None and availability.reason:
        return PostgresUnavailable(availability.reason)
    if isinstance(exc, PoolTimeout):
        return PostgresUnavailable("no connection became free in time")
    return PostgresUnavailable("the connection to Postgres failed")
