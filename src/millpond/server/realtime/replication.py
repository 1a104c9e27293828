"""Consume one database's WAL over a logical replication connection.

:class:`ReplicationStream` opens a ``replication=database`` connection, creates a
**temporary** logical slot (``pgoutput``) — Postgres drops it by itself when the
connection ends, however it ends, so slots never leak — and streams committed
transactions, acknowledging each one's end LSN so the server can recycle WAL.

psycopg has no replication API; the copy-both stream is driven with libpq calls through
psycopg's non-blocking generators, as psycopg itself does for COPY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
from psycopg import generators, pq, sql
from psycopg.abc import PQGen
from psycopg.waiting import Wait

from ..postgres import privileged
from ..waiting import wait_readable
from . import pgoutput
from .snapshot import Snapshot

_log = logging.getLogger("millpond.realtime")

PUBLICATION = "millpond_realtime"
_FEEDBACK_INTERVAL_S = 1.0
"""A standby status update at least this often. It also wakes the walsender: about one
commit in 1,800 on a quiet stream was measured arriving exactly when the next update went
out (then every 5 s), as if the walsender had slept through the commit's wakeup."""
_WAITED_FEEDBACK_S = 0.1
"""… and this often while someone waits for the stream (a subscribe for its snapshot's
position, a reducer call for its transaction), so such a sleep costs them 0.1 s at most."""
_PG_EPOCH_US = 946_684_800_000_000


class WalLevelError(RuntimeError):
    """The Postgres server is not configured for logical replication."""


class StreamStopped(RuntimeError):
    """A database's change stream has ended (its hub stopped, or the stream failed):
    whoever still waits on it must reconnect."""


def _now_pg_micros() -> int:
    return int(time.time() * 1_000_000) - _PG_EPOCH_US


_TIMED_OUT = b""


async def _read_copy(pgconn: pq.abc.PGconn, timeout: float) -> bytes | None:
    """Next CopyData payload; ``_TIMED_OUT`` after ``timeout`` s of silence; None at the
    end of the stream. (Not psycopg's ``wait``: cancelling it would cancel the stream.)"""
    while True:
        nbytes, data = pgconn.get_copy_data(1)
        if nbytes > 0:
            return bytes(data)
        if nbytes == -1:
            return None
        if not await wait_readable(pgconn.socket, timeout):
            return _TIMED_OUT
        pgconn.consume_input()


def _flush(pgconn: pq.abc.PGconn) -> PQGen[None]:
    while pgconn.flush() != 0:
        while not (yield Wait.W):
            continue


async def ensure_publication(
    admin_conninfo: str, name: str = PUBLICATION, tables: Sequence[str] | None = None
) -> None:
    """Create the publication in the database if missing — FOR ALL TABLES, or for the
    ``public`` tables named — and check wal_level. ``admin_conninfo`` is a pinned
    privileged session's (:mod:`..postgres.privileged`): the database is a tenant's, so
    every name below is schema-qualified."""
    async with await privileged.connect_async(admin_conninfo) as conn:
        level = await (await conn.execute("SHOW wal_level")).fetchone()
        if level is None or level[0] != "logical":
            raise WalLevelError(
                f"realtime needs wal_level=logical on the Postgres server (it is "
                f"{level[0] if level else 'unknown'}): set it in postgresql.conf "
                "(ALTER SYSTEM SET wal_level = logical) and restart Postgres"
            )
        exists = await (
            await conn.execute(
                "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", (name,)
            )
        ).fetchone()
        if exists is None:
            which: sql.Composable = sql.SQL("ALL TABLES")
            if tables is not None:
                which = sql.SQL("TABLE {}").format(
                    sql.SQL(", ").join(sql.Identifier("public", t) for t in tables)
                )
            # a replica raced us: it created it first (DuplicateObject), or at the same
            # time (the catalog's unique index: UniqueViolation)
            with contextlib.suppress(
                psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation
            ):
                await conn.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR {}").format(sql.Identifier(name), which)
                )


async def read_exported_snapshot(conninfo: str, name: str, lsn: int) -> Snapshot:
    """The ``xmin:xmax:xip`` of the snapshot exported as ``name`` (imported in a
    ``REPEATABLE READ`` transaction of a pinned privileged session on the database)."""
    async with await privileged.connect_async(conninfo) as conn:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(name)))
        cur = await conn.execute("SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text")
        row = await cur.fetchone()
        await conn.execute("COMMIT")
    assert row is not None
    return Snapshot.parse(row[0], lsn)


class Barrier:
    """Commits a transaction holding only a logical decoding message (which pgoutput
    streams with ``messages 'true'``) on demand: once the stream has delivered it, it has
    delivered every transaction that committed before it, even if nothing else commits.
    One privileged session, opened on first use; once closed (its hub stopped) it opens
    none again: a subscribe still reading when the hub stops gets an error, and no
    session is left open for nobody to close."""

    def __init__(self, admin_conninfo: str) -> None:
        self.admin_conninfo = admin_conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def emit(self) -> None:
        async with self._lock:
            if self._closed:
                raise StreamStopped("this database's change stream has stopped")
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await privileged.connect_async(self.admin_conninfo)
                    # flushed at commit without waiting for any standby
                    await self._conn.execute("SET synchronous_commit = local")
                await self._conn.execute(
                    "SELECT pg_catalog.pg_logical_emit_message(true, 'millpond.barrier', '')"
                )
            except psycopg.Error:
                await self._close()
                raise

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


class ReplicationStream:
    def __init__(
        self,
        admin_conninfo: str,
        slot_name: str,
        publication: str = PUBLICATION,
        *,
        origin_conninfo: str | None = None,
    ) -> None:
        # values are rendered by the walsender's session: their text forms are among
        # the settings the privileged module pins (TimeZone, DateStyle, bytea_output…)
        self.conninfo = privileged.replication_conninfo(admin_conninfo)
        self.origin_conninfo = origin_conninfo or admin_conninfo
        """A (non-replication) session's, to read the slot's snapshot in."""
        self.slot_name = slot_name
        self.publication = publication
        self.start_lsn = 0
        self.origin: Snapshot | None = None
        """The slot's snapshot: it sees exactly the transactions that committed before
        its consistent point, which the stream will not deliver (every later one, it
        will). Postgres computes it from the WAL it decoded, not from its running set."""
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._acked = 0
        self._last_feedback = 0.0
        self.waited: Callable[[], bool] = lambda: False
        """Whether someone waits for the stream now (see ``_WAITED_FEEDBACK_S``)."""

    async def open(self) -> int:
        """Connect and create the temporary slot; return its consistent-point LSN.
        Every transaction committed after that point will be streamed, and ``origin``
        sees every one committed before it."""
        self._conn = await privileged.connect_async(self.conninfo)
        pgconn = self._conn.pgconn
        query = sql.SQL(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        ).format(sql.Identifier(self.slot_name))
        cur = await self._conn.execute(query)
        row = await cur.fetchone()
        assert row is not None
        self.start_lsn = pgoutput.parse_lsn(row[1])
        # exported until this connection's next command: read it before START_REPLICATION
        self.origin = await read_exported_snapshot(self.origin_conninfo, row[2], self.start_lsn)
        start = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {}"
            " (proto_version '1', publication_names {}, messages 'true')"
        ).format(
            sql.Identifier(self.slot_name),
            sql.SQL(pgoutput.format_lsn(self.start_lsn)),
            sql.Literal(self.publication),
        )
        pgconn.send_query(start.as_bytes(self._conn))
        await self._conn.wait(generators.send(pgconn))
        result = await self._conn.wait(generators.fetch(pgconn))
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            raise RuntimeError(f"START_REPLICATION failed: {result and result.error_message}")
        return self.start_lsn

    @property
    def received_lsn(self) -> int:
        """How far the stream has received the WAL: the end of its last transaction, or
        the server's position while nothing was in flight (what it acknowledges)."""
        return self._acked

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def transactions(self) -> AsyncIterator[pgoutput.Transaction]:
        """Committed transactions, in commit order, until the connection ends."""
        assert self._conn is not None, "open() first"
        conn = self._conn
        assembler = pgoutput.Assembler()
        while True:
            silence = _WAITED_FEEDBACK_S if self.waited() else _FEEDBACK_INTERVAL_S
            data = await _read_copy(conn.pgconn, silence)
            if data is None:
                return
            if data is _TIMED_OUT:
                await self._feedback(reply=False)
                continue
            if data[:1] == b"w":
                done = assembler.feed(pgoutput.parse(data[25:]))
                if done is not None:
                    yield done
                    self._acked = max(self._acked, done.end_lsn)
            elif data[:1] == b"k":
                wal_end = struct.unpack_from("!Q", data, 1)[0]
                if assembler.idle:
                    self._acked = max(self._acked, wal_end)
                if data[17]:  # the server asks for a reply
                    await self._feedback(reply=False)
            if time.monotonic() - self._last_feedback > _FEEDBACK_INTERVAL_S:
                await self._feedback(reply=False)

    async def _feedback(self, reply: bool) -> None:
        assert self._conn is not None
        lsn = self._acked
        message = struct.pack("!cQQQqB", b"r", lsn, lsn, lsn, _now_pg_micros(), int(reply))
        pgconn = self._conn.pgconn
        pgconn.put_copy_data(message)
        await self._conn.wait(_flush(pgconn))
        self._last_feedback = time.monotonic()
