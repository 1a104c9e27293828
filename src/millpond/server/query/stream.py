"""Run a query string and keep only what the HTTP API returns, in bounded memory.

The SQL of ``POST /v1/query`` may hold several statements, so it goes over the simple
query protocol (one implicit transaction). psycopg's cursors would buffer every row of
every statement; here libpq's chunked-rows mode hands results over a few hundred rows
at a time, rows are loaded (with the connection's JSON loaders) only up to the row and
byte limits, and the rest of a big result is counted and dropped. Memory stays bounded
by the limits whatever the query returns.

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

ExecStatus = pq.ExecStatus
_CHUNK_ROWS = 256


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


class _Collector:
    def __init__(self, max_rows: int, max_bytes: int, encoding: str) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.encoding = encoding
        self.current = StatementResult()
        self._open = False  # inside a row-returning statement
        self._bytes = 0

    def rows(self, tx: Any, res: pq.abc.PGresult) -> None:
        if not self._open:
            self._start(res)
        cur = self.current
        if res.command_status:  # the tag comes with the last chunk
            cur.command = res.command_status.decode(self.encoding)
        ntuples = res.ntuples
        cur.row_count += ntuples
        if cur.truncated or not ntuples:
            return
        tx.set_pgresult(res, set_loaders=True)
        for row in tx.load_rows(0, ntuples, tuple):
            size = sum(len(v) if isinstance(v, str) else 8 for v in row) + 2
            if len(cur.rows) >= self.max_rows or self._bytes + size > self.max_bytes:
                cur.truncated = True
                return
            self._bytes += size
            cur.rows.append(row)

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


async def run_bounded(
    conn: psycopg.AsyncConnection[Any], sql_text: str, max_rows: int, max_bytes: int
) -> StatementResult:
    """Run ``sql_text`` (one or more statements) and return its last statement's result,
    keeping at most ``max_rows`` rows / about ``max_bytes`` bytes of it. Raises the
    first statement error as a psycopg error (the rest of the string is not run)."""
    encoding = conn.info.encoding
    collector = _Collector(max_rows, max_bytes, encoding)
    error: pq.abc.PGresult | None = None
    copy_in = False
    pgconn = conn.pgconn
    async with conn.lock:
        pgconn.send_query(sql_text.encode(encoding))
        pgconn.set_chunked_rows_mode(_CHUNK_ROWS)
        await conn.wait(generators.send(pgconn))
        tx = Transformer(conn)
        while (res := await conn.wait(generators.fetch(pgconn))) is not None:
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
    return collector.current


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
