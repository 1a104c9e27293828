"""Watch Postgres while the server runs; restart the embedded one when it dies.

Every ``postgres_check_interval_s`` (sooner when a request saw a connection fail) the
supervisor checks that the embedded postmaster is alive and that Postgres answers a
``SELECT 1`` on its own connection. When either fails it marks the cluster's
:class:`Availability` down with the reason, so requests get a fast 503
``postgres_unavailable`` and ``/v1/health`` says why. A dead embedded postmaster is
started again (``postgres_restart_attempts`` tries with backoff); if it cannot be, the
supervisor logs why and ends the process with exit status 3, so whatever supervises
millpond restarts it. An external Postgres cannot be restarted from here: the server
answers 503 until it answers again. Once Postgres answers, the pools' dead connections
are discarded (``on_recovered`` hooks) and the cluster is marked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable

import psycopg

from ...backoff import Backoff
from ..config import Settings
from . import privileged
from .availability import Availability
from .cluster import Cluster

_log = logging.getLogger("millpond.postgres")

EXIT_STATUS = 3
POSTMASTER_EXITED = "postmaster exited"
_PROBE_TIMEOUT_S = 5.0  # a busy Postgres is slow, not down
_HOOK_TIMEOUT_S = 10.0

Fatal = Callable[[str], None]


def exit_process(reason: str) -> None:
    """The default reaction to a Postgres that cannot be restarted: end the process with a
    non-zero status (the log line saying why is already written)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STATUS)


class Supervisor:
    def __init__(self, cluster: Cluster, settings: Settings, on_fatal: Fatal = exit_process):
        self.cluster = cluster
        self.availability: Availability = cluster.availability
        self.interval = settings.postgres_check_interval_s
        self.attempts = settings.postgres_restart_attempts
        self.on_fatal = on_fatal
        self.on_recovered: list[Callable[[], Awaitable[None]]] = []
        """Run once Postgres answers again, before requests are let through."""
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._had_connection = False
        self._restarting: asyncio.Future[None] | None = None
        self._gave_up = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._restarting is not None:  # let a pg_ctl start finish, so the stop stops it
            with contextlib.suppress(Exception):
                await self._restarting
        await self._drop_connection()

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._gave_up:
            await self.availability.wait_suspicion(self.interval)
            try:
                await self._check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.exception("the Postgres supervisor failed a check: %s", type(exc).__name__)

    async def _check(self) -> None:
        problem = await self._problem()
        if problem is None:
            if not self.availability.up:
                await self._recovered()
            return
        if self.availability.up:
            _log.error("Postgres is unavailable: %s", problem)
        self.availability.mark_down(problem)
        if problem == POSTMASTER_EXITED:
            await self._restart()

    async def _problem(self) -> str | None:
        """Why Postgres cannot serve right now, or None if it can."""
        embedded = self.cluster.embedded
        if embedded is not None and not embedded.is_running():
            return POSTMASTER_EXITED
        problem = await self._probe()
        if problem is not None and self._had_connection:
            problem = await self._probe()  # only its own connection died: ask a new one
        if problem is not None and embedded is not None and not embedded.is_running():
            return POSTMASTER_EXITED  # it died while we asked
        return problem

    def _conninfo(self) -> str:
        """The probe's session: the control database's on the home cluster, the
        maintenance database's on another (it has no control database)."""
        if self.cluster.home:
            return self.cluster.control_conninfo
        return privileged.conninfo(self.cluster, application_name="millpond-supervisor")

    async def _probe(self) -> str | None:
        self._had_connection = self._conn is not None and not self._conn.closed
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo(),
                        autocommit=True,
                        connect_timeout=int(_PROBE_TIMEOUT_S),
                        application_name="millpond-supervisor",
                    )
                await self._conn.execute("SELECT 1")
        except TimeoutError:
            await self._drop_connection()
            return f"no answer within {_PROBE_TIMEOUT_S:g} s"
        except (psycopg.Error, OSError) as exc:
            await self._drop_connection()
            return describe(exc)
        return None

    async def _restart(self) -> None:
        embedded = self.cluster.embedded
        assert embedded is not None
        backoff = Backoff(base=0.5, cap=10.0)
        error = ""
        for attempt in range(1, self.attempts + 1):
            self.availability.mark_down(
                f"{POSTMASTER_EXITED}; restarting (attempt {attempt} of {self.attempts})"
            )
            _log.warning("restarting the embedded Postgres (attempt %d)", attempt)
            self._restarting = asyncio.ensure_future(asyncio.to_thread(embedded.restart))
            try:
                await asyncio.shield(self._restarting)
            except Exception as exc:
                error = str(exc).strip()
                _log.warning("restarting the embedded Postgres failed: %s", _gist(error))
                await asyncio.sleep(backoff.next_delay())
                continue
            _log.warning("restarted the embedded Postgres in %s", embedded.pgdata)
            return  # the next check marks it up once it answers
        self.availability.mark_down(f"{POSTMASTER_EXITED}; it could not be restarted")
        self._gave_up = True
        _log.critical(
            "the embedded Postgres in %s exited and could not be restarted after %d attempts"
            " (last error: %s); exiting with status %d so that a process supervisor restarts"
            " millpond",
            embedded.pgdata,
            self.attempts,
            error,
            EXIT_STATUS,
        )
        self.on_fatal(POSTMASTER_EXITED)

    async def _recovered(self) -> None:
        for hook in self.on_recovered:
            try:
                await asyncio.wait_for(hook(), _HOOK_TIMEOUT_S)
            except Exception as exc:
                _log.warning("after Postgres came back, a recovery step failed: %r", exc)
        _log.warning("Postgres answers again (it was: %s)", self.availability.reason)
        self.availability.mark_up()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _gist(error: str) -> str:
    """The line of a failed start that says why (Postgres' FATAL, else the first)."""
    lines = error.splitlines() or [""]
    fatal = [line for line in lines if "FATAL:" in line]
    return (fatal[-1] if fatal else lines[0]).strip()


def describe(exc: BaseException) -> str:
    """A short reason for a failed connection, fit for a public health answer: the last
    part of libpq's first line (no socket paths or host names), e.g. ``connection
    refused`` or ``the database system is starting up``."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    reason = first.rpartition(": ")[2].strip() or type(exc).__name__
    return reason[:1].lower() + reason[1:]
