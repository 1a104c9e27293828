"""Realtime: one :class:`Hub` per database with subscribers, created on the first
subscribe and stopped (its temporary replication slot goes with it) once it has had no
client for ``idle_seconds``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ..modules import row_visibility
from ..postgres import privileged, provision
from ..postgres.cluster import HOME, Cluster
from ..query.adapters import register_json_loaders
from ..query.service import QueryService
from .hub import Hub, TableInfo, qualified
from .pgoutput import parse_lsn
from .replication import PUBLICATION
from .snapshot import Snapshot
from .visibility import RowFilter

_log = logging.getLogger("millpond.realtime")

# the statements below run in sessions of a tenant's role, whose search_path is the
# tenant's (it may put its own objects before pg_catalog): every name and operator is
# schema-qualified
_SNAPSHOT_SQL = """
SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text,
       pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) AS x
               WHERE pg_catalog.pg_xact_status(x) OPERATOR(pg_catalog.=) 'committed')
"""

CONTROL_HUB = "control"
"""The control database's hub, by the name user databases' hubs are keyed by (theirs are
``mp_db_…``)."""
CONTROL_PUBLICATION = "millpond_flags"

_TABLE_SQL = """
SELECT a.attname,
       CASE WHEN t.typcategory OPERATOR(pg_catalog.=) 'A' AND e.oid IS NOT NULL
            THEN pg_catalog.textcat(e.typname::pg_catalog.text, '[]')
            ELSE t.typname::pg_catalog.text END AS type_name,
       coalesce(a.attnum OPERATOR(pg_catalog.=) ANY(i.indkey), false) AS is_key
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
LEFT JOIN pg_catalog.pg_type e ON e.oid OPERATOR(pg_catalog.=) t.typelem
LEFT JOIN pg_catalog.pg_index i
       ON i.indrelid OPERATOR(pg_catalog.=) a.attrelid AND i.indisprimary
WHERE a.attrelid OPERATOR(pg_catalog.=) %s AND a.attnum OPERATOR(pg_catalog.>) 0
  AND NOT a.attisdropped
ORDER BY a.attnum
"""
_RELATION_SQL = """
SELECT c.oid, c.relreplident FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE n.nspname OPERATOR(pg_catalog.=) %s AND c.relname OPERATOR(pg_catalog.=) %s
  AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::pg_catalog."char"[])
"""


PoolSource = Callable[[], Awaitable[AsyncConnectionPool[Any]]]


class PoolSnapshotReader:
    """Reads table structure and initial rows on the connections of a pool (a user
    database's read-only role; the control database's store), and makes sure subscribed
    tables log whole old rows (``REPLICA IDENTITY FULL``) — on ``owner_pool``, the
    database owner's own role (it owns every table its users made), not a privileged
    session."""

    def __init__(self, pool: PoolSource, owner_pool: PoolSource, proof: str | None = None) -> None:
        self.pool = pool
        self.owner_pool = owner_pool
        self.proof = proof
        """Set (``millpond.identity``) while the initial rows are read: row visibility
        rules see the subscriber's identity."""
        self._full: set[int] = set()

    async def table_info(self, schema: str, name: str) -> TableInfo | None:
        pool = await self.pool()
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
            await cur.execute(_RELATION_SQL, (schema, name))
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
        pool = await self.owner_pool()
        async with pool.connection() as conn:
            await conn.execute(
                sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(qualified(schema, name))
            )

    async def read(
        self, queries: list[tuple[TableInfo, str | None]]
    ) -> tuple[Snapshot, list[list[dict[str, Any]]]]:
        """One try (the hub reads again when the snapshot cannot be used)."""
        pool = await self.pool()
        async with pool.connection() as conn:
            return await self._read_once(conn, queries)

    async def _read_once(
        self, conn: Any, queries: list[tuple[TableInfo, str | None]]
    ) -> tuple[Snapshot, list[list[dict[str, Any]]]]:
        """In one REPEATABLE READ transaction. When the snapshot missed a transaction
        that had already committed (between writing its commit record — so the WAL stream
        may already have delivered it, before this subscription listened — and leaving the
        running set, a transaction is committed yet invisible), no rows are read and the
        snapshot says so (``committed_unseen``): the hub reads again."""
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            # the text forms the WAL decoder sees (its session's, pinned), whatever the
            # pool's or the database's; and names resolved as the engine's SQL means them
            await conn.execute(
                "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO';"
                " SET LOCAL IntervalStyle = 'iso_8601'; SET LOCAL extra_float_digits = 1;"
                " SET LOCAL bytea_output = 'hex'; SET LOCAL search_path = pg_catalog, pg_temp"
            )
            if self.proof is not None:  # a parameter: never in the statement's text
                await conn.execute(row_visibility.SET_LOCAL_PROOF_SQL, (self.proof,))
            cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
            await cur.execute(_SNAPSHOT_SQL)
            snap_text, lsn_text, torn = (await cur.fetchone()) or ("", "0/0", False)
            if torn:
                return Snapshot.parse(snap_text, parse_lsn(lsn_text), committed_unseen=True), []
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


class StreamLimit(Exception):
    """This replica already streams ``realtime_max_streams`` databases, none idle."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"this server already streams the changes of {limit} databases")
        self.limit = limit


class RealtimeService:
    def __init__(self, query: QueryService, idle_seconds: float = 30.0) -> None:
        self.query = query
        self.clusters = query.clusters
        self.cluster = query.clusters.home
        self.idle_seconds = idle_seconds
        self.hubs: dict[str, Hub] = {}
        self.max_streams = 1 << 30
        """User databases streamed at once (each hub holds a replication connection, its
        slot and a privileged connection); idle hubs are stopped early to make room."""
        self._reapers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    async def hub(self, pg_name: str, cluster: str = HOME) -> Hub:
        """The hub of a user database on ``cluster`` (its rows read on its read-only
        role)."""
        where = await self.clusters.cluster_of(cluster)

        async def pool() -> AsyncConnectionPool[Any]:
            return await self.query.pool_for(pg_name, "ro", cluster)

        async def owner_pool() -> AsyncConnectionPool[Any]:
            return await self.query.pool_for(pg_name, "owner", cluster)

        known = self.hubs.get(pg_name)
        if known is not None and known.cluster != cluster:
            await self.moving(pg_name)  # it moved: the old cluster's stream is no more
        hub = await self._hub(pg_name, lambda: self._new_hub(pg_name, pool, owner_pool, where))
        if hub.row_filter is None:  # changes to tables under row-level security: judged
            hub.row_filter = RowFilter(lambda role: self._role_pool(pg_name, role, cluster))
        return hub

    def reader(
        self,
        pg_name: str,
        role: provision.SqlRole,
        identity: str | None = None,
        cluster: str = HOME,
    ) -> PoolSnapshotReader:
        """Reads a subscriber's initial rows as its own role (so row-level security
        applies to them as to its ``SELECT``), as ``identity`` for row visibility rules."""

        async def pool() -> AsyncConnectionPool[Any]:
            return await self.query.pool_for(pg_name, role, cluster)

        async def owner_pool() -> AsyncConnectionPool[Any]:
            return await self.query.pool_for(pg_name, "owner", cluster)

        proof = None
        if identity is not None:
            proof = row_visibility.proof(self.query.secret, pg_name, identity)
        return PoolSnapshotReader(pool, owner_pool, proof)

    async def _role_pool(
        self, pg_name: str, role: str, cluster: str = HOME
    ) -> AsyncConnectionPool[Any]:
        if role not in ("owner", "rw", "ro"):
            raise ValueError(f"not a database role: {role!r}")
        return await self.query.pool_for(pg_name, cast(provision.SqlRole, role), cluster)

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
                source,  # the control database's tables are the server's own
                self.cluster,
                conninfo=self.cluster.control_conninfo,
                publication=CONTROL_PUBLICATION,
                tables=tables,
            ),
        )

    def _new_hub(
        self,
        name: str,
        pool: PoolSource,
        owner_pool: PoolSource,
        cluster: Cluster,
        *,
        conninfo: str | None = None,
        publication: str = PUBLICATION,
        tables: Sequence[str] | None = None,
    ) -> Hub:
        admin = conninfo or privileged.conninfo(cluster, name)
        dbname = cluster.settings.control_database if name == CONTROL_HUB else name
        reader = PoolSnapshotReader(pool, owner_pool)
        return Hub(
            name,
            admin,
            reader,
            self._ended,
            publication=publication,
            publication_tables=tables,
            replication_conninfo=privileged.replication_conninfo(cluster, dbname),
            cluster=cluster.name,
        )

    async def _hub(self, name: str, make: Callable[[], Hub]) -> Hub:
        async with self._lock:
            reaper = self._reapers.pop(name, None)
            if reaper is not None:
                reaper.cancel()
            hub = self.hubs.get(name)
            if hub is None:
                if name != CONTROL_HUB:
                    await self._make_room()
                hub = make()
                self.hubs[name] = hub
            return hub

    async def _make_room(self) -> None:
        """Under the lock, before a new user database's hub: with ``max_streams`` of them
        already, stop one that is idle; :class:`StreamLimit` if none is."""
        streams = [h for n, h in self.hubs.items() if n != CONTROL_HUB]
        if len(streams) < self.max_streams:
            return
        idle = next((h for h in streams if h.idle), None)
        if idle is None:
            raise StreamLimit(self.max_streams)
        reaper = self._reapers.pop(idle.pg_name, None)
        if reaper is not None:
            reaper.cancel()
        del self.hubs[idle.pg_name]
        await idle.stop()

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
        await self._close(pg_name, 4004, "database_not_found")

    async def moving(self, pg_name: str) -> None:
        """The database is moving to another cluster: its clients come back (1013, try
        again later) and resubscribe once it is served from there."""
        await self._close(pg_name, 1013, "database_moving")

    async def _close(self, pg_name: str, code: int, reason: str) -> None:
        hub = self.hubs.pop(pg_name, None)
        if hub is not None:
            for client in list(hub.clients.values()):
                client.outbox.close(code, reason)
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
