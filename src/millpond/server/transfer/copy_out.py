"""Reading a ``COPY … TO STDOUT`` at the speed of libpq, for exports.

Postgres sends one message per row. psycopg's ``Copy`` hands them over one by one through
a generator, which costs more than the copy itself (about 1.4x the time of ``psql``'s loop
for a million rows); here each row is one C call appended to a buffer, and the caller gets
blocks of whole rows.

The loop runs in a worker thread of the server, so it never blocks inside libpq (which
would hold the GIL, and the event loop with it): libpq is only asked for what it already
read, and the thread waits for the socket in ``select``, calling ``check`` every second
(a cancelled job stops even while its query sends nothing). If the caller stops early (an
error, or the job was cancelled), the query is cancelled and its output drained, so the
connection is usable again (its transaction can roll back).

``linger`` (streamed exports): a block is also handed over, however small, once Postgres
has sent nothing for that long, so the rows of a slow query reach the client as they come.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import ExecStatus
from psycopg.pq.abc import PGconn, PGresult

BLOCK = 1 << 20
"""Bytes in a block (at least: a block ends at the end of a row)."""
CHECK_EVERY_S = 1.0


class CopyOut:
    """``for block in CopyOut(conn, statement)``: the output of ``statement`` (a ``COPY …
    TO STDOUT``) in blocks of whole rows, a new buffer every time. ``messages``: the rows
    read so far (a CSV header is one); ``rows``, once done: the COPY's row count. Raises
    the statement's error as psycopg's class."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        statement: bytes,
        block: int = BLOCK,
        check: Callable[[], None] | None = None,
        linger: float | None = None,
    ) -> None:
        self.conn = conn
        self.statement = statement
        self.block = block
        self.check = check
        """Called after each block and every ``CHECK_EVERY_S`` that Postgres sends nothing:
        what it raises stops the COPY (a job cancelled while its query runs silent)."""
        self.linger = linger
        """Seconds of silence from Postgres after which a block is handed over unfilled
        (None: blocks are always full, but the last)."""
        self.messages = 0
        self.rows = 0

    def __iter__(self) -> Iterator[bytearray]:
        conn, pgconn = self.conn, self.conn.pgconn
        pgconn.send_query(self.statement)
        try:
            while pgconn.flush():  # the connection is non-blocking
                select.select([], [pgconn.socket], [])
            first = _result(pgconn, self.check)
            if first is None or first.status != ExecStatus.COPY_OUT:
                _finish(pgconn, first, conn.info.encoding)
                raise psycopg.ProgrammingError("the statement is not a COPY … TO STDOUT")
            yield from self._blocks(pgconn)
        except BaseException:
            _abandon(conn)
            raise
        self.rows = _finish(pgconn, None, conn.info.encoding)

    def _blocks(self, pgconn: PGconn) -> Iterator[bytearray]:
        get, block, check = pgconn.get_copy_data, self.block, self.check
        buf = bytearray()
        while True:
            size, data = get(1)  # 1: only what libpq has read already
            if size > 0:
                buf += data
                self.messages += 1
                if len(buf) >= block:
                    if check is not None:
                        check()
                    yield buf
                    buf = bytearray()
            elif size == 0:
                if buf and self.linger is not None:
                    if _readable(pgconn, self.linger):
                        pgconn.consume_input()
                        continue
                    yield buf  # a pause: what was read goes now
                    buf = bytearray()
                _wait_readable(pgconn, check)
            else:  # -1: the end (an error is in the result that follows)
                break
        if buf:
            yield buf


def _readable(pgconn: PGconn, timeout: float) -> bool:
    return bool(select.select([pgconn.socket], [], [], timeout)[0])


def _wait_readable(pgconn: PGconn, check: Callable[[], None] | None = None) -> None:
    while not select.select([pgconn.socket], [], [], CHECK_EVERY_S)[0]:
        if check is not None:
            check()
    pgconn.consume_input()


def _result(pgconn: PGconn, check: Callable[[], None] | None = None) -> PGresult | None:
    """The next result, waiting for it outside libpq."""
    while pgconn.is_busy():
        _wait_readable(pgconn, check)
    return pgconn.get_result()


def _finish(pgconn: PGconn, result: PGresult | None, encoding: str) -> int:
    """Read the results left (``result`` first); raise the first error. Returns the row
    count of the COPY's command tag (0 if none)."""
    results = [] if result is None else [result]
    while (res := _result(pgconn)) is not None:
        results.append(res)
    rows = 0
    for res in results:
        if res.status == ExecStatus.FATAL_ERROR:
            raise errors.error_from_result(res, encoding=encoding)
        if res.status == ExecStatus.COMMAND_OK and res.command_tuples is not None:
            rows = res.command_tuples
    return rows


def _abandon(conn: psycopg.Connection[Any]) -> None:
    """Cancel the statement and read what is left of it (rows of a COPY under way
    included: libpq answers COPY_OUT again until they are read), so the connection is
    idle again (in a failed transaction)."""
    pgconn = conn.pgconn
    with contextlib.suppress(psycopg.Error, OSError):
        conn.cancel_safe(timeout=10)
        while (res := _result(pgconn)) is not None:
            if res.status == ExecStatus.COPY_OUT:
                while (size := pgconn.get_copy_data(1)[0]) != -1:
                    if size == 0:
                        _wait_readable(pgconn)
