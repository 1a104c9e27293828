"""Scheduled reducers: run each due row of a module's schedule tables, once.

A schedule table's trigger keeps ``millpond_schedules`` (schema.py) in its database: one
row per schedule row with the time it is ``due`` (and ``every_us`` for an interval).

- **One server per database.** Every server looks, every ``module_schedule_poll_s`` and
  at each publish, for databases whose newest ready module has schedule tables, and takes
  a session advisory lock per database on one control-database connection of its own.
  The holder runs that database's schedules; when it stops or dies its connection ends,
  the lock with it, and another server takes over at its next look.
- **On time.** The holder ``LISTEN``\\ s in the database (the trigger notifies at commit),
  reads the runs due within the next :data:`_LOOKAHEAD_S`, and starts each one at its
  time on the module's workers — by Postgres's clock (each read measures the offset of
  ours), since due times are Postgres's: a server whose clock is ahead never runs early.
- **Once.** The run's own transaction claims the queue row as it was read (``FOR
  UPDATE``, the same ``due``): a one-shot row is deleted, an interval moves to its next
  intended time. So a run commits exactly once even if two servers overlap (one finds
  nothing to claim: ``skipped``), and a run that failed or crashed is not lost: it is
  recorded here, retried (one-shot, up to ``module_schedule_attempts``) or skipped to the
  next tick (interval).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ...backoff import Backoff
from ...models.modules import Schedule
from ..accounts.service import Principal
from ..databases.service import Access, resolve
from ..errors import ServiceError
from ..observability.context import detached
from ..waiting import wait_event
from . import pool
from .publishing import ready_modules
from .schema import NEXT_TICK, SCHEDULE_CHANNEL, SCHEDULES

if TYPE_CHECKING:
    from .service import ModuleService

_log = logging.getLogger("millpond.modules")
_LEASE_CLASS = 0x6D70_5363  # pg_advisory_lock(class, database id): "mpSc"
_LOOKAHEAD_S = 0.25
_BATCH = 2000
_MAX_BATCH = 32
_MAX_ERROR = 2000
_RETRY_BASE_S = 1.0

_DUE_SQL = sql.SQL(
    "SELECT tbl, id, due, clock_timestamp() FROM public.{q}"
    " WHERE due < now() + make_interval(secs => %s)"
    " ORDER BY due LIMIT %s"
).format(q=sql.Identifier(SCHEDULES))
_LISTEN_SQL = sql.SQL("LISTEN {}").format(sql.Identifier(SCHEDULE_CHANNEL))
_NEXT_SQL = sql.SQL(
    "SELECT min(due) AS due, clock_timestamp() FROM public.{q}"
    " WHERE due >= now() + make_interval(secs => %s)"
).format(q=sql.Identifier(SCHEDULES))
_FAILED_SQL = sql.SQL(
    "UPDATE public.{q} SET attempts = attempts + 1, last_error = %(error)s, last_run = now(),"
    " due = CASE WHEN every_us IS NOT NULL THEN {next} WHEN attempts + 1 < %(attempts)s"
    " THEN clock_timestamp() + make_interval(secs => %(base)s * 2 ^ attempts) END"
    " WHERE tbl = %(tbl)s AND id = %(id)s AND due = %(due)s"
).format(q=sql.Identifier(SCHEDULES), next=sql.SQL(NEXT_TICK))
_LIST_SQL = sql.SQL(
    "SELECT tbl, id, reducer, due, every_us, attempts, last_run, last_error FROM public.{q}"
    " ORDER BY due NULLS LAST, tbl, id LIMIT %s"
).format(q=sql.Identifier(SCHEDULES))


def module_identity(secret: bytes, database_id: int) -> str:
    """``ctx.sender`` of a scheduled run: the database's module itself."""
    mac = hashlib.sha256(secret + f"millpond identity: module {database_id}".encode())
    return mac.hexdigest()


@dataclass
class Stats:
    """What this server's scheduled runs did."""

    committed: int = 0
    failed: int = 0
    skipped: int = 0


class Scheduler:
    def __init__(self, service: ModuleService) -> None:
        self.service = service
        self.stats = Stats()
        self._lease: psycopg.AsyncConnection[Any] | None = None
        self._running: dict[int, _Database] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="modules-scheduler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_all()

    def poke(self) -> None:
        """Look again now (a module was published here)."""
        self._wake.set()

    # -- leases ------------------------------------------------------------------------

    async def _loop(self) -> None:
        every = self.service.settings.module_schedule_poll_s
        seen = -1
        while True:
            changes = self.service.changes
            try:
                await self._refresh()
            except (ServiceError, psycopg.Error) as exc:
                _log.warning("schedules wait for Postgres: %s", exc)
                await self._stop_all()
            except Exception:
                _log.warning("the scheduler failed; trying again", exc_info=True)
            seen = changes.generation
            self._wake.clear()
            deadline = time.monotonic() + every
            while changes.generation == seen and time.monotonic() < deadline:
                if await wait_event(self._wake, min(0.1, every)):  # (a publish bumps it)
                    break

    async def _refresh(self) -> None:
        wanted = {a.id: a for a in await self._scheduled()}
        for database_id, running in list(self._running.items()):
            moved = database_id in wanted and wanted[database_id].cluster != running.access.cluster
            if database_id not in wanted or running.done or moved:
                await self._release(database_id)
        lease = await self._lease_connection()
        for database_id, access in wanted.items():
            if database_id in self._running:
                continue
            cur = await lease.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_LEASE_CLASS, database_id)
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                self._running[database_id] = _Database(self, access)

    async def _scheduled(self) -> list[Access]:
        return [
            access
            for access, definition in await ready_modules(self.service.store)
            if any(t.get("scheduled") for t in definition.get("tables") or [])
        ]

    async def _lease_connection(self) -> psycopg.AsyncConnection[Any]:
        lease = self._lease
        if lease is not None and not lease.closed:
            try:
                await lease.execute("SELECT 1")
                return lease
            except psycopg.Error:
                pass
        await self._stop_all()  # its locks went with it
        self._lease = await psycopg.AsyncConnection.connect(
            self.service.changes.conninfo, autocommit=True, application_name="millpond-scheduler"
        )
        return self._lease

    async def _release(self, database_id: int) -> None:
        running = self._running.pop(database_id, None)
        if running is not None:
            await running.stop()
        lease = self._lease
        if lease is not None and not lease.closed:
            with contextlib.suppress(psycopg.Error):
                await lease.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (_LEASE_CLASS, database_id)
                )

    async def _stop_all(self) -> None:
        for running in list(self._running.values()):
            await running.stop()
        self._running.clear()
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.close()
            self._lease = None

    async def forget(self, pg_name: str) -> None:
        """A database is being deleted: stop running its schedules (and close their
        sessions) first."""
        for database_id, running in list(self._running.items()):
            if running.access.pg_name == pg_name:
                await self._release(database_id)

    def runs(self, database_id: int) -> bool:
        """Whether this server runs the database's schedules now."""
        return database_id in self._running

    # -- the CLI's view ----------------------------------------------------------------

    async def schedules(self, principal: Principal, full_name: str, limit: int) -> list[Schedule]:
        """The database's scheduled runs, soonest first (failed ones last): owner and
        admins."""
        access = await resolve(self.service.store, principal, full_name, need="admin")
        conninfo = await self.service.publisher.conninfo(access, "reducer", "millpond-schedules")
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                rows = await (await conn.execute(_LIST_SQL, (limit,))).fetchall()
        except psycopg.errors.UndefinedTable:
            raise ServiceError(
                409,
                "no_schedules",
                f"the module of {access.full_name} has no schedule table"
                " (@table(scheduled=...)); see docs/modules.md",
            ) from None
        return [_schedule(row) for row in rows]


def _schedule(row: Any) -> Schedule:
    tbl, key, reducer, due, every_us, attempts, last_run, last_error = row
    state = "failed" if due is None else ("recurring" if every_us is not None else "due")
    return Schedule(
        table=tbl,
        scheduled_id=key,
        reducer=reducer,
        state=state,
        due=due,
        interval_us=every_us,
        attempts=attempts,
        last_run=last_run,
        last_error=last_error,
    )


class _Database:
    """The schedules of one database, on the server that holds its lease."""

    def __init__(self, scheduler: Scheduler, access: Access) -> None:
        self.scheduler = scheduler
        self.service = scheduler.service
        self.access = access
        self.sender = module_identity(self.service.secret, access.id)
        self._wake = asyncio.Event()
        self._pending: dict[tuple[str, int, datetime], asyncio.TimerHandle] = {}
        self._finished: dict[tuple[str, int, datetime], float] = {}
        self._skew = timedelta(0)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._ready: collections.deque[tuple[str, int, datetime]] = collections.deque()
        self._dispatchers = max(1, 2 * self.service.settings.module_workers)
        # started by whichever request first needs it, it runs for the database's life
        self._task = detached(self._run(), name=f"schedules-{access.pg_name}")
        self._listener = detached(self._listen(), name=f"schedules-listen-{access.id}")

    @property
    def done(self) -> bool:
        return self._task.done()

    async def stop(self) -> None:
        for task in (self._task, self._listener):
            task.cancel()
        await asyncio.gather(self._task, self._listener, return_exceptions=True)
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        self._ready.clear()  # not started: due still, for whoever runs them next
        if self._running:  # runs in flight finish: their transactions decide
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _conninfo(self, app: str) -> str:
        return await self.service.publisher.conninfo(self.access, "reducer", app)

    async def _listen(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    await self._conninfo("millpond-schedules-listen"), autocommit=True
                ) as conn:
                    await conn.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(SCHEDULE_CHANNEL))
                    )
                    backoff.reset()
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                _log.debug("schedules of %s: lost LISTEN (%s)", self.access.full_name, exc)
            self._wake.set()
            await asyncio.sleep(backoff.next_delay())

    async def _run(self) -> None:
        """Read what is due soon, start each run at its time, sleep until the next one
        (or a change); ends on a lost connection (the scheduler starts it again)."""
        async with await psycopg.AsyncConnection.connect(
            await self._conninfo("millpond-schedules"), autocommit=True
        ) as conn:
            self._conn = conn
            while True:
                self._wake.clear()
                rows = await (await conn.execute(_DUE_SQL, (_LOOKAHEAD_S, _BATCH))).fetchall()
                for tbl, key, due, clock in rows:
                    self._skew = clock - datetime.now(UTC)
                    self._plan(str(tbl), int(key), due)
                if len(rows) >= _BATCH:
                    await asyncio.sleep(_LOOKAHEAD_S / 2)  # the runs planned go first
                    continue
                row = await (await conn.execute(_NEXT_SQL, (_LOOKAHEAD_S,))).fetchone()
                assert row is not None
                self._skew = row[1] - datetime.now(UTC)
                await self._sleep(row[0])

    async def _sleep(self, due: datetime | None) -> None:
        wait = 60.0 if due is None else (due - self._now()).total_seconds()
        wait = max(0.01, min(60.0, wait - _LOOKAHEAD_S / 2))
        await wait_event(self._wake, wait)
        now = time.monotonic()
        self._finished = {s: t for s, t in self._finished.items() if t > now}

    def _now(self) -> datetime:
        """Postgres's time now: due times are its, and its clock may not be ours."""
        return datetime.now(UTC) + self._skew

    def _plan(self, tbl: str, key: int, due: datetime) -> None:
        slot = (tbl, key, due)
        if slot in self._pending or slot in self._finished:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (due - self._now()).total_seconds())
        self._pending[slot] = loop.call_later(delay, self._start, slot)

    def _start(self, slot: tuple[str, int, datetime]) -> None:
        """A run fell due: queue it for the next free dispatcher (one per call the
        workers can take at once)."""
        early = (slot[2] - self._now()).total_seconds()
        if early > 0:  # the loop's timers count whole milliseconds: it fired a little early
            self._pending[slot] = asyncio.get_running_loop().call_later(early, self._start, slot)
            return
        self._ready.append(slot)
        if len(self._running) < self._dispatchers:
            task = asyncio.create_task(self._dispatch())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[tuple[str, int, datetime]]:
        """The next runs for one worker: all that are due, shared between the workers,
        at most :data:`_MAX_BATCH` (one run when nothing queues: no waiting for company)."""
        workers = max(1, self.service.settings.module_workers)
        size = min(_MAX_BATCH, max(1, -(-len(self._ready) // workers)))
        return [self._ready.popleft() for _ in range(min(size, len(self._ready)))]

    async def _dispatch(self) -> None:
        while self._ready:
            slots = self._take()
            outcomes: list[dict[str, Any] | None] = [None] * len(slots)
            try:
                outcomes = await self._call(slots)
                for slot, outcome in zip(slots, outcomes, strict=True):
                    await self._settle(*slot, outcome)
            except Exception:
                _log.warning(
                    "scheduled runs of %s (%s)",
                    self.access.full_name,
                    ", ".join(f"{tbl}/{key}" for tbl, key, _ in slots),
                    exc_info=True,
                )
            for slot, outcome in zip(slots, outcomes, strict=True):
                self._after(slot, outcome)

    def _after(self, slot: tuple[str, int, datetime], outcome: dict[str, Any] | None) -> None:
        # a read from before the run may still name the slot: not again
        self._pending.pop(slot, None)
        self._finished[slot] = time.monotonic() + 10 * _LOOKAHEAD_S
        following = (outcome or {}).get("next_due")
        if isinstance(following, str):  # an interval's next tick: no need to read it
            self._plan(slot[0], slot[1], datetime.fromisoformat(following))
        elif (outcome or {}).get("status") != "committed":
            self._wake.set()  # rescheduled, failed or changed meanwhile: read again

    async def _call(self, slots: list[tuple[str, int, datetime]]) -> list[dict[str, Any] | None]:
        """Run ``slots`` on one worker, each in its own transaction; their outcomes
        (None: the table is no longer a schedule table)."""
        service = self.service
        for _ in range(3):  # a publish may swap the pool between lookup and call
            active = await service._active_for(self.access)
            calls: list[tuple[str | None, Any, dict[str, Any]]] = []
            runs: list[int] = []
            for index, (tbl, key, due) in enumerate(slots):
                try:
                    scheduled = active.definition.table(tbl).scheduled or ""
                    reducer = active.definition.reducer(scheduled)
                except KeyError:
                    continue  # a table no longer scheduled: the next publish removes its rows
                calls.append((reducer.name, [], self._ctx(tbl, key, due)))
                runs.append(index)
            outcomes: list[dict[str, Any] | None] = [None] * len(slots)
            if not calls:
                return outcomes
            active.last_used = time.monotonic()
            try:
                if len(calls) == 1:
                    done = [await active.pool.call(*calls[0])]
                else:
                    done = await active.pool.call_many(calls)
            except pool.PoolClosed:
                continue
            for index, call, outcome in zip(runs, calls, done, strict=True):
                name, _, ctx = call
                await service._keep_logs(
                    self.access, active.version, str(name), ctx["request_id"], outcome
                )
                outcomes[index] = outcome
            return outcomes
        raise RuntimeError(f"the module of {self.access.full_name} is being replaced")

    def _ctx(self, tbl: str, key: int, due: datetime) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "connection_id": None,
            "sender_auth": None,
            # never before it was due (whose time is Postgres', its clock perhaps ahead)
            "timestamp": max(datetime.now(UTC), due).isoformat(),
            "seed": secrets.randbits(63),
            "request_id": uuid.uuid4().hex,
            "schedule": {"table": tbl, "id": key, "due": due.isoformat()},
        }

    async def _settle(
        self, tbl: str, key: int, due: datetime, outcome: dict[str, Any] | None
    ) -> None:
        stats = self.scheduler.stats
        status = (outcome or {}).get("status")
        if status == "committed":
            stats.committed += 1
            return
        if status == "not_run":  # its batch's worker ended before it: not an attempt
            return
        if status == "skipped":
            stats.skipped += 1
            await self._drop_orphan(tbl, key, due)
            return
        stats.failed += 1
        message = str((outcome or {}).get("message") or status or "not run")[:_MAX_ERROR]
        params = {
            "error": f"{status}: {message}",
            "attempts": self.service.settings.module_schedule_attempts,
            "base": _RETRY_BASE_S,
            "tbl": tbl,
            "id": key,
            "due": due,
        }
        await self._execute(_FAILED_SQL, params)

    async def _drop_orphan(self, tbl: str, key: int, due: datetime) -> None:
        """A queue row whose schedule row is gone (the owner's SQL with triggers off)."""
        query = sql.SQL(
            "DELETE FROM public.{q} s WHERE s.tbl = %s AND s.id = %s AND s.due = %s"
            " AND NOT EXISTS (SELECT FROM public.{t} WHERE scheduled_id = s.id)"
        ).format(q=sql.Identifier(SCHEDULES), t=sql.Identifier(tbl))
        with contextlib.suppress(psycopg.Error):
            await self._execute(query, (tbl, key, due))

    async def _execute(self, query: sql.Composed, params: Any) -> None:
        """On the reading loop's connection (psycopg takes turns on it); on one of its own
        if that one is gone."""
        conn = self._conn
        if conn is not None and not conn.closed:
            await conn.execute(query, params)
            return
        async with await psycopg.AsyncConnection.connect(
            await self._conninfo("millpond-schedules"), autocommit=True
        ) as own:
            await own.execute(query, params)
