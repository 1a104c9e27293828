"""Modules: publish a database's module, run its reducers, read its versions and logs.

Each replica keeps, per database with a module, one :class:`~.pool.WorkerPool` for its
newest version, started at the first call and stopped after ``module_idle_s`` without
calls. A publish on any replica notifies every replica (``millpond_modules``); each
checks its pool's version before the next call and swaps: the new version's workers
start, new calls go to them, and the old pool drains (calls in flight finish) before
its workers stop — no call is dropped or failed by a publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from millpond.module._def import ModuleDef, ReducerDef
from millpond.module._values import ArgumentError, bind_args

from ...models.modules import (
    CallResult,
    LogLine,
    ModulePublish,
    ModuleRollback,
    ModuleVersion,
    ModuleVersionDetail,
    PublishResult,
)
from ..accounts.service import Principal
from ..clusters.registry import Clusters
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError
from ..observability.context import current_request_id
from ..store import Store
from ..store.notifications import Invalidation
from . import pool
from .identities import Identities, require_bound, sender_of
from .issuers import Issuers
from .lifecycle import Lifecycle
from .publishing import Publisher, Version, check_upload
from .scheduler import Scheduler

_log = logging.getLogger("millpond.modules")
CHANNEL = "millpond_modules"
_SCHEMA_SQLSTATES = ("42", "0A000", "22P02", "23502")
"""Errors old code meets on a migrated schema: an undefined or mistyped column or table
(class 42), a cached plan whose result type changed (0A000), a value of the old type
(22P02), a new NOT NULL column it does not fill (23502)."""
_FAILURES = {
    "failed": "reducer_failed",
    "error": "reducer_error",
    "timeout": "reducer_timeout",
    "crashed": "reducer_crashed",
}


@dataclass
class Active:
    """The running version of one database's module on this replica."""

    version: int
    definition: ModuleDef
    pool: pool.WorkerPool
    generation: int
    cluster: str
    """Where its workers' sessions go: a database moved elsewhere gets new workers."""
    last_used: float = field(default_factory=time.monotonic)
    calls: int = 0


class ModuleService:
    def __init__(self, store: Store, clusters: Clusters, secret: bytes, settings: Settings):
        self.store = store
        self.secret = secret
        self.settings = settings
        self.publisher = Publisher(store, clusters, secret, settings)
        self.identities = Identities(store, secret, settings)
        self.issuers = Issuers(store, settings)
        self.lifecycle = Lifecycle(self)
        self.scheduler = Scheduler(self)
        self.changes = Invalidation(clusters.home.control_conninfo, CHANNEL)
        self._active: dict[int, Active] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.changes.start()
        await self.lifecycle.start()
        await self.scheduler.start()
        self._reaper = asyncio.create_task(self._reap(), name="modules-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.scheduler.close()
        await self.lifecycle.close()
        await self.changes.stop()
        for active in list(self._active.values()):
            await active.pool.close()
        self._active.clear()
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)

    async def drop(self, pg_name: str) -> None:
        """A database is being deleted: stop its workers and schedules (their sessions
        would block it)."""
        await self.scheduler.forget(pg_name)
        for database_id, active in list(self._active.items()):
            if active.pool.name == pg_name:
                self._active.pop(database_id, None)
                await active.pool.close()

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self, principal: Principal, full_name: str, body: ModulePublish
    ) -> PublishResult:
        access = await resolve(self.store, principal, full_name, need="admin")
        upload = check_upload(body, self.settings)
        return await self.publisher.publish(access, principal.user_id, upload, body, self._swap)

    async def rollback(
        self, principal: Principal, full_name: str, body: ModuleRollback
    ) -> PublishResult:
        access = await resolve(self.store, principal, full_name, need="admin")
        row = await self._version_row(access, body.version)
        publish = ModulePublish(
            files=row["files"],
            entry=row["entry"],
            allow_destructive=body.allow_destructive,
            dry_run=body.dry_run,
        )
        upload = check_upload(publish, self.settings)
        return await self.publisher.publish(
            access, principal.user_id, upload, publish, self._swap, rolled_back_from=body.version
        )

    async def _swap(self, access: Access, version: Version) -> float:
        started = time.monotonic()
        async with self._lock(access.id):
            await self._replace(access, version)
        return time.monotonic() - started

    # -- versions --------------------------------------------------------------------------

    async def versions(self, principal: Principal, full_name: str) -> list[ModuleVersion]:
        access = await resolve(self.store, principal, full_name, need="admin")
        rows = await self.store.fetchall(
            _VERSIONS_SQL + " ORDER BY v.version DESC", {"db": access.id, "version": None}
        )
        return [_version(row, newest=rows[0]["version"]) for row in rows]

    async def version(
        self, principal: Principal, full_name: str, number: int
    ) -> ModuleVersionDetail:
        access = await resolve(self.store, principal, full_name, need="admin")
        row = await self._version_row(access, number)
        newest = await self.publisher.latest(access.id)
        return ModuleVersionDetail(
            **_version(row, newest=newest.version if newest else 0).model_dump(),
            files=row["files"],
            definition=row["definition"],
        )

    async def schema(self, principal: Principal, full_name: str) -> dict[str, Any]:
        """The running version's definition (what ``generate`` reads): any reader."""
        access = await resolve(self.store, principal, full_name)
        require_bound(principal, access)
        latest = await self.publisher.latest(access.id)
        if latest is None:
            raise _no_module(access)
        return {"version": latest.version, "definition": latest.definition.to_json()}

    async def _version_row(self, access: Access, number: int) -> dict[str, Any]:
        row = await self.store.fetchone(_VERSIONS_SQL, {"db": access.id, "version": number})
        if row is None:
            raise ServiceError(
                404,
                "version_not_found",
                f"{access.full_name} has no module version {number}; "
                f"see: millpond module versions {access.full_name}",
            )
        return dict(row)

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self,
        principal: Principal,
        full_name: str,
        reducer: str,
        args: Any,
        connection_id: str | None = None,
    ) -> CallResult:
        access = await resolve(self.store, principal, full_name)
        require_bound(principal, access)
        if not principal.can_write:
            raise ServiceError(403, "read_only_key", "a read-only API key cannot call reducers")
        for _ in range(3):  # a publish may swap the pool between lookup and call
            active = await self._active_for(access)
            definition = self._reducer(access, active.definition, reducer)
            self._check_args(definition, active.definition, args)
            # an HTTP call's is its request's (X-Request-Id): one id in logs and answer
            request_id = current_request_id() or uuid.uuid4().hex
            ctx: dict[str, Any] = {
                "sender": sender_of(self.secret, principal),
                "connection_id": connection_id,
                "sender_auth": dict(principal.claims) if principal.claims is not None else None,
                "timestamp": datetime.now(UTC).isoformat(),
                "seed": secrets.randbits(63),
                "request_id": request_id,
            }
            active.last_used = time.monotonic()
            active.calls += 1
            try:
                outcome = await active.pool.call(reducer, args, ctx)
            except pool.PoolClosed:
                continue
            if await self._outdated(access, active, outcome):
                continue  # rolled back; run it again on the new version
            await self._keep_logs(access, active.version, reducer, request_id, outcome)
            return _result(reducer, request_id, outcome)
        raise ServiceError(503, "module_unavailable", "the module is being replaced; retry")

    async def _outdated(self, access: Access, active: Active, outcome: dict[str, Any]) -> bool:
        """Whether a call failed because a newer version migrated the tables under the
        old version's code (a call routed to the old workers on this or another replica
        between the migration's commit and the swap): then it is run again on the new
        version, which is safe, since it was rolled back."""
        sqlstate = str(outcome.get("sqlstate") or "")
        if outcome.get("status") != "error" or not sqlstate.startswith(_SCHEMA_SQLSTATES):
            return False
        deadline = time.monotonic() + self.settings.module_call_timeout_s
        while True:  # a newer version may still be pending: its migration just committed
            row = await self.store.fetchone(
                "SELECT max(version) FILTER (WHERE state = 'ready') AS ready,"
                " max(version) AS newest FROM module_versions WHERE database_id = %s",
                (access.id,),
            )
            ready = row["ready"] if row else None
            newest = row["newest"] if row else None
            if ready is not None and ready > active.version:
                active.generation = -1  # look the version up again, and swap
                return True
            if newest is None or newest <= active.version or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    def _reducer(self, access: Access, module: ModuleDef, name: str) -> ReducerDef:
        try:
            reducer = module.reducer(name)
        except KeyError:
            known = ", ".join(r.name for r in module.reducers) or "none"
            raise ServiceError(
                404,
                "reducer_not_found",
                f"the module of {access.full_name} has no reducer {name!r} (it has: {known})",
            ) from None
        if reducer.lifecycle is not None:
            raise ServiceError(
                403,
                "reducer_lifecycle",
                f"reducer {name!r} is @{reducer.lifecycle}: the server runs it, no one calls it",
            )
        if reducer.scheduled is not None:
            raise ServiceError(
                403,
                "reducer_scheduled",
                f"reducer {name!r} runs when a row of table {reducer.scheduled} is due:"
                " insert a row there (or ctx.schedule in a reducer) to schedule it",
            )
        if reducer.private and not access.at_least("admin"):
            raise ServiceError(
                403, "reducer_private", f"reducer {name!r} is private: the owner and admins only"
            )
        return reducer

    @staticmethod
    def _check_args(reducer: ReducerDef, module: ModuleDef, args: Any) -> None:
        if not isinstance(args, list | dict):
            raise ServiceError(
                400,
                "invalid_arguments",
                "arguments are a JSON array (in order) or object (by name)",
            )
        try:
            bind_args(reducer, args, module)
        except ArgumentError as exc:
            raise ServiceError(
                400, "invalid_arguments", f"{reducer.name}: {exc}", {"where": exc.where}
            ) from None

    async def _active_for(self, access: Access) -> Active:
        active = self._active.get(access.id)
        if (
            active is not None
            and self.changes.live
            and active.generation == self.changes.generation
            and active.cluster == access.cluster
        ):
            return active
        async with self._lock(access.id):
            active = self._active.get(access.id)
            generation = self.changes.generation
            await self.publisher.settle(access)
            latest = await self.publisher.latest(access.id)
            if latest is None:
                raise _no_module(access)
            if active is None or (active.version, active.cluster) != (
                latest.version,
                access.cluster,
            ):
                active = await self._replace(access, latest)
            active.generation = generation
            return active

    async def _replace(self, access: Access, version: Version) -> Active:
        """Start ``version``'s workers, route calls to them, drain the old ones."""
        current = self._active.get(access.id)
        if current is not None and (current.version, current.cluster) == (
            version.version,
            access.cluster,
        ):
            return current
        new_pool = pool.WorkerPool(
            await self.publisher.conninfo(access, "reducer", "millpond-module"),
            version.files,
            version.entry,
            self.publisher.limits,
            size=self.settings.module_workers,
            name=access.pg_name,
        )
        try:
            await new_pool.start()
        except pool.ModuleInvalid as exc:
            raise ServiceError(
                503,
                "module_unavailable",
                f"version {version.version} of the module does not start: {exc.message}",
            ) from None
        active = Active(
            version.version, version.definition, new_pool, self.changes.generation, access.cluster
        )
        self._active[access.id] = active
        if current is not None:
            self._drain(current)
        return active

    def _drain(self, old: Active) -> None:
        task = asyncio.create_task(old.pool.close(), name="module-drain")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _lock(self, database_id: int) -> asyncio.Lock:
        return self._locks.setdefault(database_id, asyncio.Lock())

    async def _reap(self) -> None:
        """Stop the workers of modules without calls for ``module_idle_s``; purge logs."""
        while True:
            await asyncio.sleep(min(self.settings.module_idle_s / 2, 60))
            now = time.monotonic()
            for database_id, active in list(self._active.items()):
                idle = now - active.last_used > self.settings.module_idle_s
                if idle and self._active.get(database_id) is active:
                    del self._active[database_id]
                    self._drain(active)
            with contextlib.suppress(Exception):
                await self.purge_logs()

    # -- logs ------------------------------------------------------------------------------

    async def _keep_logs(
        self, access: Access, version: int, reducer: str, request_id: str, outcome: dict[str, Any]
    ) -> None:
        lines = [
            (str(line.get("level", "INFO")), str(line.get("message", "")), None)
            for line in outcome.get("logs") or []
        ]
        status = outcome.get("status")
        if status != "committed" and status != "failed":  # a bug or a limit: the owner's to see
            lines.append(
                (
                    "ERROR",
                    f"{reducer}: {status}: {outcome.get('message')}",
                    outcome.get("traceback"),
                )
            )
        if not lines:
            return
        async with self.store.transaction() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO module_logs (database_id, version, level, message, reducer,"
                " request_id, traceback) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(access.id, version, lvl, msg, reducer, request_id, tb) for lvl, msg, tb in lines],
            )

    async def logs(
        self,
        principal: Principal,
        full_name: str,
        after: int = 0,
        limit: int = 100,
        last: int | None = None,
    ) -> list[LogLine]:
        """Lines with an id above ``after``: the first ``limit``, or the newest ``last``;
        oldest first either way."""
        access = await resolve(self.store, principal, full_name, need="admin")
        newest = last is not None
        rows = await self.store.fetchall(
            "SELECT * FROM (SELECT id, ts, version, level, message, reducer, request_id,"
            " traceback FROM module_logs WHERE database_id = %s AND id > %s"
            f" ORDER BY id {'DESC' if newest else ''} LIMIT %s) AS page ORDER BY id",
            (access.id, after, last if newest else limit),
        )
        return [LogLine(**row) for row in rows]

    async def purge_logs(self) -> None:
        await self.store.execute(
            "DELETE FROM module_logs WHERE ts < now() - make_interval(secs => %s)",
            (self.settings.module_log_retention_s,),
        )
        await self.store.execute(
            "DELETE FROM module_logs l USING (SELECT database_id, id, row_number() OVER"
            " (PARTITION BY database_id ORDER BY id DESC) AS n FROM module_logs) old"
            " WHERE l.id = old.id AND old.n > %s",
            (self.settings.module_log_max_lines,),
        )


_VERSIONS_SQL = (
    "SELECT v.version, v.entry, v.published_at, u.username AS published_by, v.plan,"
    " v.rolled_back_from, v.definition, v.files FROM module_versions v"
    " LEFT JOIN users u ON u.id = v.published_by"
    " WHERE v.database_id = %(db)s AND v.state = 'ready'"
    " AND (%(version)s::int IS NULL OR v.version = %(version)s)"
)


def _version(row: Any, newest: int) -> ModuleVersion:
    definition = row["definition"]
    return ModuleVersion(
        version=row["version"],
        entry=row["entry"],
        published_at=row["published_at"],
        published_by=row["published_by"],
        plan=row["plan"],
        rolled_back_from=row["rolled_back_from"],
        tables=[t["name"] for t in definition.get("tables", [])],
        reducers=[r["name"] for r in definition.get("reducers", [])],
        active=row["version"] == newest,
    )


def _no_module(access: Access) -> ServiceError:
    return ServiceError(
        404,
        "module_not_found",
        f"{access.full_name} has no module; publish one: millpond publish {access.full_name} PATH",
    )


def _result(reducer: str, request_id: str, outcome: dict[str, Any]) -> CallResult:
    status = str(outcome.get("status"))
    if status == "committed":
        return CallResult(
            reducer=reducer,
            request_id=request_id,
            return_value=outcome.get("return"),
            retries=int(outcome.get("retries") or 0),
            duration_us=outcome.get("duration_us"),
            xid=outcome.get("xid"),
        )
    code = _FAILURES.get(status, "reducer_error")
    message = str(outcome.get("message") or status)
    if status != "failed":  # the details of a bug stay in the owner's logs
        message = {
            "error": f"the reducer raised an exception: {message}",
            "timeout": "the reducer ran out of time and was stopped",
            "crashed": "the reducer's worker died (out of memory, or it exited)",
        }.get(status, message)
    raise ServiceError(
        422, code, message, {"status": status, "reducer": reducer, "request_id": request_id}
    )
