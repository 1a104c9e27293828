"""Run a query string and keep only what the HTTP API returns, in bounded memory.

The SQL of ``POST /v1/query`` may hold several statements, so it goes over the simple
query protocol (one implicit transaction). psycopg's cursors would buffer every row of
every statement; here libpq's chunked-rows mode hands results over a few rows at a
time, and a row is kept only while the rows kept so far fit the row and byte limits.
A row's size is measured before it is loaded: the byte length of every value as
Postgres sent it (text, json/jsonb, arrays, bytea, composites alike) plus its column
names, so nothing past the limit is ever turned into Python objects. The first row
that does not fit ends what is kept (``truncated``), even a first row alone larger than
the limit (then no row is kept); the rest of a big result is counted and dropped.
Memory stays bounded by the limits plus a few rows, whatever the query returns.

json/jsonb values are kept as their text (:class:`~.adapters.RawJson`); one nested
deeper than ``max_json_depth`` in a kept row of the last statement answers
``json_too_deep`` (select a part of it, or its ``::text``).

``COPY … FROM STDIN`` has no data to read over HTTP: it is refused with
``copy_not_supported`` and the whole query string rolls back. ``COPY … TO STDOUT`` runs,
and its output is dropped. Import and export jobs move files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, generators, pq
from psycopg.abc import PQGen
from psycopg.adapt import Transformer
from psycopg.waiting import Wait

from ..errors import ServiceError
from ..limits import too_deep_error
from .adapters import JsonTooDeep, raw_json_adapters

ExecStatus = pq.ExecStatus
_CHUNK_ROWS = 8
"""Rows libpq gathers before handing them over: few, as rows may be large (a chunk is
in memory whole); more would barely be faster."""
_VALUE_OVERHEAD = 4  # quotes and a comma around a value in the JSON written


@dataclass
class StatementResult:
    """The outcome of the last statement of a query string."""

    names: list[str] = field(default_factory=list)
    type_oids: list[int] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False
    command: str | None = None
    returns_rows: bool = False
    error: ServiceError | None = None
    """Raised if this is the last statement's result."""


class _Collector:
    def __init__(self, max_rows: int, max_bytes: int, max_depth: int, encoding: str) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.encoding = encoding
        self.current = StatementResult()
        self._open = False  # inside a row-returning statement
        self._bytes = 0
        self._row_overhead = 0

    def rows(self, tx: Any, res: pq.abc.PGresult) -> None:
        if not self._open:
            self._start(res)
        cur = self.current
        if res.command_status:  # the tag comes with the last chunk
            cur.command = res.command_status.decode(self.encoding)
        ntuples = res.ntuples
        cur.row_count += ntuples
        if cur.truncated or cur.error or not ntuples:
            return
        keep = self._fitting(res, ntuples)
        if keep < ntuples:
            cur.truncated = True
        if not keep:
            return
        tx.set_pgresult(res, set_loaders=True)
        try:
            cur.rows.extend(tx.load_rows(0, keep, tuple))
        except JsonTooDeep:
            cur.error = too_deep_error(self.max_depth, "a json/jsonb value of the result")

    def _fitting(self, res: pq.abc.PGresult, ntuples: int) -> int:
        """How many of the chunk's rows still fit the limits (counting them in)."""
        room = min(ntuples, self.max_rows - len(self.current.rows))
        columns = range(res.nfields)
        for row in range(max(room, 0)):
            size = self._row_overhead + sum(_length(res.get_value(row, c)) for c in columns)
            if self._bytes + size > self.max_bytes:
                return row
            self._bytes += size
        return max(room, 0)

    def end_rows(self, res: pq.abc.PGresult) -> None:
        if not self._open:
            self._start(res)
        if res.command_status:
            self.current.command = res.command_status.decode(self.encoding)
        self._open = False

    def command(self, res: pq.abc.PGresult) -> None:
        self.current = StatementResult(
            row_count=res.command_tuples or 0,
            command=(res.command_status or b"").decode(self.encoding),
        )
        self._open = False
        self._bytes = 0

    def _start(self, res: pq.abc.PGresult) -> None:
        self.current = StatementResult(
            names=[(res.fname(i) or b"").decode(self.encoding) for i in range(res.nfields)],
            type_oids=[res.ftype(i) for i in range(res.nfields)],
            returns_rows=True,
        )
        self._open = True
        self._bytes = 0
        names = self.current.names  # objects repeat them in every row
        self._row_overhead = 2 + sum(len(n) + _VALUE_OVERHEAD for n in names)


def _length(value: bytes | None) -> int:
    return 0 if value is None else len(value)


class _Context:
    """What psycopg's Transformer adapts with: the connection, and its loaders but for
    json/jsonb (raw here, parsed for the connection's other users, e.g. realtime)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], max_depth: int) -> None:
        self.connection = conn
        self.adapters = raw_json_adapters(conn.adapters, max_depth)


async def run_bounded(
    conn: psycopg.AsyncConnection[Any],
    sql_text: str,
    max_rows: int,
    max_bytes: int,
    max_depth: int = 128,
) -> StatementResult:
    """Run ``sql_text`` (one or more statements) and return its last statement's result,
    keeping at most ``max_rows`` rows / about ``max_bytes`` bytes of it. Raises the
    first statement error as a psycopg error (the rest of the string is not run), and
    ``json_too_deep`` (after the whole string ran) for a kept value nested deeper than
    ``max_depth``."""
    encoding = conn.info.encoding
    collector = _Collector(max_rows, max_bytes, max_depth, encoding)
    error: pq.abc.PGresult | None = None
    copy_in = False
    pgconn = conn.pgconn
    async with conn.lock:
        pgconn.send_query(sql_text.encode(encoding))
        pgconn.set_chunked_rows_mode(_CHUNK_ROWS)
        await conn.wait(generators.send(pgconn))
        tx = Transformer(_Context(conn, max_depth))
        while (res := await _next_result(conn)) is not None:
            status = res.status
            if status == ExecStatus.TUPLES_CHUNK:
                collector.rows(tx, res)
            elif status == ExecStatus.TUPLES_OK:
                collector.end_rows(res)
            elif status in (ExecStatus.COMMAND_OK, ExecStatus.EMPTY_QUERY):
                collector.command(res)
            elif status == ExecStatus.COPY_OUT:
                await conn.wait(_drain_copy_out(pgconn))
            elif status == ExecStatus.COPY_IN:
                copy_in = True
                with contextlib.suppress(psycopg.Error):  # the server's answer: COPY failed
                    await conn.wait(generators.copy_end(pgconn, b"COPY FROM STDIN refused"))
            elif error is None:
                error = res
    if copy_in:
        raise ServiceError(
            400,
            "copy_not_supported",
            "COPY FROM STDIN has no data to read over HTTP; the query was rolled back."
            " Use an import job, or INSERT ... SELECT between tables",
        )
    if error is not None:
        raise errors.error_from_result(error, encoding=encoding)
    if collector.current.error is not None:
        raise collector.current.error
    return collector.current


RESET_SESSION = (
    b"CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *;"
    b" SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP;"
    b" DISCARD SEQUENCES"
)
"""The session reset between callers: what ``DISCARD ALL`` does, as the statements
Postgres documents it to equal, in its order. ``DISCARD ALL`` refuses to run in a query
string of several statements; these may follow the ``COMMIT`` in its round trip."""


async def end_and_reset(conn: psycopg.AsyncConnection[Any], *ending: bytes) -> bool:
    """Run ``ending`` (the statements that end the transaction, e.g. ``UNLISTEN *``,
    ``COMMIT``), then :data:`RESET_SESSION`, as one query string: one round trip, no
    cursor. Raises the first error of ``ending`` as a psycopg error (the reset did not
    run). Returns False when the reset failed after ``ending`` had run: the transaction
    ended as ``ending`` said, but the session must not serve another caller."""
    pgconn = conn.pgconn
    async with conn.lock:
        pgconn.send_query(b"; ".join((*ending, RESET_SESSION)))
        results = await conn.wait(generators.execute(pgconn))
    # one result a statement run; the string stops at the first that fails
    for index, res in enumerate(results):
        if res.status == ExecStatus.FATAL_ERROR:
            if index < len(ending):
                raise errors.error_from_result(res, encoding=conn.info.encoding)
            return False
    return True


async def _next_result(conn: psycopg.AsyncConnection[Any]) -> pq.abc.PGresult | None:
    """The next result; without a trip through the event loop when libpq has it already
    (small chunks make that the common case)."""
    pgconn = conn.pgconn
    if pgconn.is_busy():
        return await conn.wait(generators.fetch(pgconn))
    return pgconn.get_result()


def _drain_copy_out(pgconn: pq.abc.PGconn) -> PQGen[None]:
    """Read and drop the data of a ``COPY … TO STDOUT``."""
    while True:
        nbytes, _ = pgconn.get_copy_data(1)
        if nbytes == -1:
            return
        if nbytes == 0:
            while not (yield Wait.R):
                continue
            pgconn.consume_input()
