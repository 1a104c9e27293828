"""Lifecycle reducers: ``@client_connected`` and ``@client_disconnected``.

A module that declares either has its realtime connections recorded in its database
(``millpond_connections``, schema.py): the ``client_connected`` transaction inserts the
connection's row (and runs the reducer, whose ``SenderError`` refuses the connection),
the ``client_disconnected`` one deletes it (and runs the reducer) — or does nothing if the
row is gone already. So each connection gets exactly one of each, whoever runs it:

- the server that held the connection, when it ends for any reason it sees (closed,
  lost, heartbeat timeout, this server stopping);
- after a crash, any server: each one says it is alive in ``module_replicas`` every
  ``module_replica_heartbeat_s``, and sweeps, as often, the connections of servers not
  heard from for ``module_replica_timeout_s`` (a restarted server is a new one).

HTTP reducer calls do not run them (SpacetimeDB runs them around each HTTP call): an
HTTP call is no connection, and the bar would be three transactions per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from millpond.module._def import ModuleDef

from ...models.modules import Connection
from ..accounts.service import Principal
from ..databases.service import Access, resolve
from ..errors import ServiceError
from . import pool
from .publishing import ready_modules
from .schema import CONNECTIONS

if TYPE_CHECKING:
    from .service import ModuleService

_log = logging.getLogger("millpond.modules")
_SWEEP_BATCH = 1000
_MAX_REASON_BYTES = 120  # a WebSocket close reason is at most 123 bytes
_MOVE_WAIT_S = 600.0  # ten minutes: a move of a large database takes a while
_MOVE_POLL_S = 0.25


class Lifecycle:
    def __init__(self, service: ModuleService) -> None:
        self.service = service
        self.replica = f"r_{uuid.uuid4().hex}"
        self._task: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        self._tracking_of: dict[int, tuple[int, bool]] = {}

    # -- connections ---------------------------------------------------------------------------

    async def connected(
        self, access: Access, identity: str, connection_id: str
    ) -> tuple[bool, str | None]:
        """Run ``client_connected`` for a new realtime connection: (whether the module
        tracks it, so it needs its ``disconnected``; why it is refused, or None)."""
        if not await self._tracks(access):  # (no worker is started to learn that)
            return False, None
        try:
            outcome = await self._run(access, "client_connected", identity, connection_id)
        except ServiceError as exc:
            if exc.code == "module_not_found":
                return False, None
            raise
        if outcome is None:
            return False, None
        if outcome.get("status") == "committed":
            return True, None
        message = str(outcome.get("message") or outcome.get("status") or "refused")
        if outcome.get("status") != "failed":  # a bug, not the module's answer
            message = f"client_connected {outcome.get('status')}: {message}"
        return False, _clip(message)

    async def _tracks(self, access: Access) -> bool:
        """Whether the database's newest module has lifecycle reducers (kept until the
        next publish anywhere: the ``millpond_modules`` notification)."""
        changes = self.service.changes
        cached = self._tracking_of.get(access.id)
        if changes.live and cached is not None and cached[0] == changes.generation:
            return cached[1]
        generation = changes.generation
        row = await self.service.store.fetchone(
            "SELECT EXISTS (SELECT FROM jsonb_array_elements(definition->'reducers') r"
            " WHERE r->>'lifecycle' IS NOT NULL) AS tracks FROM module_versions"
            " WHERE database_id = %s AND state = 'ready' ORDER BY version DESC LIMIT 1",
            (access.id,),
        )
        tracks = bool(row is not None and row["tracks"])
        if changes.live:
            if len(self._tracking_of) > 10_000:
                self._tracking_of.clear()
            self._tracking_of[access.id] = (generation, tracks)
        return tracks

    def disconnected(self, access: Access, identity: str, connection_id: str) -> None:
        """Run ``client_disconnected`` for a connection that ended (in the background: it
        must not wait for the socket; the sweep runs it if this one cannot)."""
        task = asyncio.create_task(self._disconnect(access, identity, connection_id))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _disconnect(self, access: Access, identity: str, connection_id: str) -> None:
        try:
            access = await self._settled(access)
            await self._run(access, "client_disconnected", identity, connection_id)
        except Exception:  # the sweep will find its row
            _log.warning(
                "client_disconnected of %s on %s left to the sweep",
                connection_id,
                access.full_name,
                exc_info=True,
            )

    async def _settled(self, access: Access) -> Access:
        """``access`` once its database is not being moved: a move cuts every connection
        of the database, whose disconnects run on the cluster it moved to."""
        deadline = time.monotonic() + _MOVE_WAIT_S
        while True:
            row = await self.service.store.fetchone(
                "SELECT state, cluster_id FROM databases WHERE id = %s", (access.id,)
            )
            if row is None or row["state"] != "moving" or time.monotonic() > deadline:
                break
            await asyncio.sleep(_MOVE_POLL_S)
        if row is not None and row["cluster_id"] != access.cluster:
            return dataclasses.replace(access, cluster=row["cluster_id"])
        return access

    async def _run(
        self, access: Access, kind: str, identity: str, connection_id: str
    ) -> dict[str, Any] | None:
        service = self.service
        for _ in range(3):  # a publish may swap the pool between lookup and call
            active = await service._active_for(access)
            module: ModuleDef = active.definition
            if not module.tracks_connections:
                return None
            reducer = module.lifecycle(kind)
            request_id = uuid.uuid4().hex
            ctx = {
                "sender": identity,
                "connection_id": connection_id,
                "sender_auth": None,
                "timestamp": datetime.now(UTC).isoformat(),
                "seed": secrets.randbits(63),
                "request_id": request_id,
                "lifecycle": {"kind": kind, "replica": self.replica},
            }
            active.last_used = time.monotonic()
            try:
                name = reducer.name if reducer is not None else None
                outcome = await active.pool.call(name, [], ctx)
            except pool.PoolClosed:
                continue
            if reducer is not None:
                await service._keep_logs(access, active.version, reducer.name, request_id, outcome)
            return outcome
        raise RuntimeError(f"the module of {access.full_name} is being replaced")

    # -- servers that died ----------------------------------------------------------------------

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._loop(), name="modules-lifecycle")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
        with contextlib.suppress(Exception):  # gone: others sweep its connections at once
            await self.service.store.execute(
                "DELETE FROM module_replicas WHERE id = %s", (self.replica,)
            )

    async def _beat(self) -> None:
        await self.service.store.execute(
            "INSERT INTO module_replicas (id) VALUES (%s)"
            " ON CONFLICT (id) DO UPDATE SET seen_at = now()",
            (self.replica,),
        )

    async def _loop(self) -> None:
        every = self.service.settings.module_replica_heartbeat_s
        while True:
            await asyncio.sleep(every)
            try:
                await self._beat()
                await self.sweep()
            except (ServiceError, psycopg.Error) as exc:  # Postgres down or restarting
                _log.warning("the lifecycle sweep waits for Postgres: %s", exc)
            except Exception:
                _log.warning("the lifecycle sweep failed; trying again", exc_info=True)

    async def sweep(self) -> int:
        """Run ``client_disconnected`` for the connections of servers that are gone; how
        many ran."""
        store, timeout = self.service.store, self.service.settings.module_replica_timeout_s
        live = [
            row["id"]
            for row in await store.fetchall(
                "SELECT id FROM module_replicas WHERE seen_at > now() - make_interval(secs => %s)",
                (timeout,),
            )
        ]
        ran = 0
        for access in await self._tracking():
            for identity, connection_id in await self._stale(access, live):
                outcome = await self._run(access, "client_disconnected", identity, connection_id)
                ran += outcome is not None and outcome.get("status") == "committed"
        return ran

    async def end_all(self, access: Access) -> int:
        """Run ``client_disconnected`` for every connection the database records: a move
        (``clusters/move.py``) cut them all, and runs this on the copy before it serves the
        database again, so that each disconnect comes before any reconnection's connect.
        How many ran; one that fails leaves its row (and is not tried again here)."""
        if not await self._tracks(access):
            return 0
        seen: set[str] = set()
        while fresh := [r for r in await self._stale(access, []) if r[1] not in seen]:
            for identity, connection_id in fresh:
                seen.add(connection_id)
                await self._run(access, "client_disconnected", identity, connection_id)
        return len(seen)

    async def _tracking(self) -> list[Access]:
        """The databases whose newest ready module tracks connections."""
        return [
            access
            for access, definition in await ready_modules(self.service.store)
            if any(r.get("lifecycle") for r in definition.get("reducers") or [])
        ]

    async def connections(self, principal: Principal, full_name: str) -> list[Connection]:
        """The database's open realtime connections (of a module with lifecycle
        reducers), oldest first: owner and admins."""
        access = await resolve(self.service.store, principal, full_name, need="admin")
        conninfo = await self.service.publisher.conninfo(access, "reducer", "millpond-connections")
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                cur = await conn.execute(
                    f"SELECT connection_id::text, identity::text, connected_at, replica::text"
                    f" FROM public.{CONNECTIONS} ORDER BY connected_at, connection_id LIMIT 10000"
                )
                rows = await cur.fetchall()
        except psycopg.errors.UndefinedTable:
            raise ServiceError(
                409,
                "connections_not_tracked",
                f"the module of {access.full_name} has no @client_connected or"
                " @client_disconnected reducer, so its connections are not recorded",
            ) from None
        return [
            Connection(connection_id=a, identity=b, connected_at=c, server=d) for a, b, c, d in rows
        ]

    async def _stale(self, access: Access, live: list[str]) -> list[tuple[str, str]]:
        conninfo = await self.service.publisher.conninfo(access, "reducer", "millpond-sweep")
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                cur = await conn.execute(
                    f"SELECT identity::text, connection_id::text FROM public.{CONNECTIONS}"
                    " WHERE NOT (replica = ANY(%s)) LIMIT %s",
                    (live, _SWEEP_BATCH),
                )
                return [(str(a), str(b)) for a, b in await cur.fetchall()]
        except psycopg.Error:  # not there (a module from before), or the database is busy
            return []


def _clip(message: str) -> str:
    data = message.encode()
    if len(data) <= _MAX_REASON_BYTES:
        return message
    return data[: _MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."
