"""Realtime: one :class:`Hub` per database with subscribers, created on the first
subscribe and stopped (its temporary replication slot goes with it) once it has had no
client for ``idle_seconds``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ..postgres.cluster import Cluster
from ..query.adapters import register_json_loaders
from ..query.service import QueryService
from .hub import Hub, TableInfo, qualified
from .pgoutput import parse_lsn
from .replication import PUBLICATION
from .snapshot import Snapshot

_log = logging.getLogger("millpond.realtime")

_SNAPSHOT_SQL = """
SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text,
       EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot()) AS x
               WHERE pg_xact_status(x) = 'committed')
"""
_SNAPSHOT_ATTEMPTS = 100

CONTROL_HUB = "control"
"""The control database's hub, by the name user databases' hubs are keyed by (theirs are
``mp_db_…``)."""
CONTROL_PUBLICATION = "millpond_flags"

_TABLE_SQL = """
SELECT a.attname,
       CASE WHEN t.typcategory = 'A' AND e.oid IS NOT NULL THEN e.typname || '[]'
            ELSE t.typname END AS type_name,
       coalesce(a.attnum = ANY(i.indkey), false) AS is_key
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON e.oid = t.typelem
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


PoolSource = Callable[[], Awaitable[AsyncConnectionPool[Any]]]


class PoolSnapshotReader:
    """Reads table structure and initial rows on the connections of a pool (a user
    database's read-only role; the control database's store), and makes sure subscribed
    tables log whole old rows (``REPLICA IDENTITY FULL``)."""

    def __init__(self, pool: PoolSource, admin_conninfo: str) -> None:
        self.pool = pool
        self.admin_conninfo = admin_conninfo
        self._full: set[int] = set()

    async def table_info(self, schema: str, name: str) -> TableInfo | None:
        pool = await self.pool()
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
            await cur.execute(
                "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
                " AND c.relkind IN ('r', 'p')",
                (schema, name),
            )
            found = await cur.fetchone()
            if found is None:
                return None
            oid, identity = found
            await cur.execute(_TABLE_SQL, (oid,))
            rows = await cur.fetchall()
        if identity != "f" and oid not in self._full:
            await self._replica_identity_full(schema, name)
            self._full.add(oid)
        columns = {r[0]: r[1] for r in rows}
        key = tuple(r[0] for r in rows if r[2])
        return TableInfo(schema, name, columns, key)

    async def _replica_identity_full(self, schema: str, name: str) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.admin_conninfo, autocommit=True
        ) as conn:
            await conn.execute(
                sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(qualified(schema, name))
            )

    async def read(
        self, queries: list[tuple[TableInfo, str | None]]
    ) -> tuple[Snapshot, list[list[dict[str, Any]]]]:
        pool = await self.pool()
        async with pool.connection() as conn:
            for attempt in itertools.count():
                found = await self._read_once(conn, queries)
                if found is not None or attempt >= _SNAPSHOT_ATTEMPTS:
                    break
                await asyncio.sleep(0.001 * (attempt + 1))
        if found is None:
            raise RuntimeError("no consistent snapshot: transactions kept committing unseen")
        return found

    async def _read_once(
        self, conn: Any, queries: list[tuple[TableInfo, str | None]]
    ) -> tuple[Snapshot, list[list[dict[str, Any]]]] | None:
        """One try, in one REPEATABLE READ transaction; None when the snapshot missed a
        transaction that had already committed: between writing its commit record (so the
        WAL stream may already have delivered it, before this subscription listened) and
        leaving the running set, a transaction is committed yet invisible — its rows would
        be in neither the initial rows nor the stream."""
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            # the text forms the WAL decoder sees (its session's), whatever the pool's
            await conn.execute(
                "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO';"
                " SET LOCAL IntervalStyle = 'iso_8601'"
            )
            cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
            await cur.execute(_SNAPSHOT_SQL)
            snap_text, lsn_text, torn = (await cur.fetchone()) or ("", "0/0", False)
            if torn:
                return None
            results = []
            for info, where in queries:
                stmt = sql.SQL("SELECT * FROM {}").format(qualified(info.schema, info.name))
                if where is not None:  # the engine's canonical SQL: it parsed and bound it
                    stmt = sql.SQL("{} WHERE {}").format(stmt, sql.SQL(where))
                rows = conn.cursor(row_factory=psycopg.rows.dict_row)
                register_json_loaders(rows.adapters)
                await rows.execute(stmt)
                results.append(await rows.fetchall())
        finally:
            await conn.execute("COMMIT")
        return Snapshot.parse(snap_text, parse_lsn(lsn_text)), results


class RealtimeService:
    def __init__(self, cluster: Cluster, query: QueryService, idle_seconds: float = 30.0) -> None:
        self.cluster = cluster
        self.query = query
        self.idle_seconds = idle_seconds
        self.hubs: dict[str, Hub] = {}
        self._reapers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    async def hub(self, pg_name: str) -> Hub:
        """The hub of a user database (its rows read on its read-only role)."""

        async def pool() -> AsyncConnectionPool[Any]:
            return await self.query.pool_for(pg_name, "ro")

        return await self._hub(pg_name, lambda: self._new_hub(pg_name, pool))

    async def control_hub(self, pool: AsyncConnectionPool[Any], tables: Sequence[str]) -> Hub:
        """The hub of the control database, streaming only ``tables`` (the flags stream):
        a publication of its own, so the rest of the control database's writes (events,
        keys, jobs) never reach the decoder."""

        async def source() -> AsyncConnectionPool[Any]:
            return pool

        return await self._hub(
            CONTROL_HUB,
            lambda: self._new_hub(
                CONTROL_HUB,
                source,
                conninfo=self.cluster.control_conninfo,
                publication=CONTROL_PUBLICATION,
                tables=tables,
            ),
        )

    def _new_hub(
        self,
        name: str,
        pool: PoolSource,
        *,
        conninfo: str | None = None,
        publication: str = PUBLICATION,
        tables: Sequence[str] | None = None,
    ) -> Hub:
        admin = conninfo or self.cluster.admin_conninfo(name)
        reader = PoolSnapshotReader(pool, admin)
        return Hub(
            name,
            admin,
            reader,
            self._ended,
            publication=publication,
            publication_tables=tables,
        )

    async def _hub(self, name: str, make: Callable[[], Hub]) -> Hub:
        async with self._lock:
            reaper = self._reapers.pop(name, None)
            if reaper is not None:
                reaper.cancel()
            hub = self.hubs.get(name)
            if hub is None:
                hub = make()
                self.hubs[name] = hub
            return hub

    def release(self, hub: Hub) -> None:
        """A client left: stop the hub after a while if nobody else comes."""
        if hub.idle and hub.pg_name not in self._reapers:
            self._reapers[hub.pg_name] = asyncio.create_task(self._reap(hub))

    async def _reap(self, hub: Hub) -> None:
        await asyncio.sleep(self.idle_seconds)
        async with self._lock:
            if hub.idle and self.hubs.get(hub.pg_name) is hub:
                del self.hubs[hub.pg_name]
                self._reapers.pop(hub.pg_name, None)
        if hub.idle:
            await hub.stop()

    def _ended(self, hub: Hub) -> None:
        """The hub's stream ended: its clients must reconnect (and resubscribe)."""
        if self.hubs.get(hub.pg_name) is hub:
            del self.hubs[hub.pg_name]
        for client in list(hub.clients.values()):
            client.outbox.close(4011, "stream_failed")

    async def drop(self, pg_name: str) -> None:
        hub = self.hubs.pop(pg_name, None)
        if hub is not None:
            for client in list(hub.clients.values()):
                client.outbox.close(4004, "database_not_found")
            await hub.stop()

    async def close(self) -> None:
        for task in self._reapers.values():
            task.cancel()
        for hub in list(self.hubs.values()):
            for client in list(hub.clients.values()):
                client.outbox.close(4010, "server_shutdown")
            with contextlib.suppress(Exception):
                await hub.stop()
        self.hubs.clear()
