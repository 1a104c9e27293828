"""Statements of a worker's calls run through libpq directly, on the psycopg connection's
``pgconn``: psycopg's cursor machinery costs some 35 µs of Python a statement, which was a
third of a worker's CPU per call (a ``transfer`` sends six). Values are still dumped and
loaded by psycopg's adapters (text format, the connection's adapters and encoding), and
errors raised as psycopg's exception classes (``SerializationFailure``…), so what a
reducer sees does not change.

The table handles' statements (:class:`Prepared`) are prepared once per connection with
their parameter types left to Postgres (inferred from the columns they are compared with
or stored in); :func:`simple` runs the worker's own few statements (``BEGIN`` with the
call's settings; the event with ``COMMIT``) in one simple query. A module that runs
``DEALLOCATE`` through ``ctx.sql`` makes the handles prepare anew (``Prepared.forget``);
one that deallocates some other way fails that statement, and the next is prepared
anew."""

from __future__ import annotations

import itertools
import select
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors
from psycopg._queries import PostgresQuery
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import ExecStatus
from psycopg.pq.abc import PGresult


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """A worker's connection. psycopg prepares nothing on it (``prepare_threshold=None``):
    on a ROLLBACK, DROP, ALTER or DISCARD it would clear its own prepared statements with
    ``DEALLOCATE ALL``, which drops :class:`Prepared`'s too."""
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)


_OK = (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK, ExecStatus.EMPTY_QUERY)
_UNKNOWN_STATEMENT = "26000"  # deallocated other than by DEALLOCATE through ctx.sql


class Prepared:
    """Statements with ``%s`` placeholders, each prepared on first use."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._names: dict[bytes, bytes] = {}
        self._serial = itertools.count()  # a name is never used twice

    def forget(self) -> None:
        """The module deallocated prepared statements (``DEALLOCATE``): prepare anew."""
        self._names.clear()

    def run(self, query: bytes, params: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], int]:
        """The rows and the row count of one execution."""
        pgconn = self._conn.pgconn
        name = self._names.get(query)
        if name is None:
            name = self._prepare(query, len(params))
        tx = Transformer(self._conn)  # dumps the values, then loads the rows (as a cursor's)
        values = tx.dump_sequence(params, [PyFormat.TEXT] * len(params))
        result = pgconn.exec_prepared(name, values)  # type: ignore[arg-type]  # None: NULL
        if result.status not in _OK:
            error = self._error(result)
            if error.sqlstate == _UNKNOWN_STATEMENT:
                self.forget()  # deallocated in a way ``forget`` was not told of
            raise error
        tx.set_pgresult(result)
        rows = tx.load_rows(0, result.ntuples, tuple)
        return rows, result.command_tuples or 0

    def _prepare(self, query: bytes, count: int) -> bytes:
        converted = PostgresQuery(Transformer(self._conn))
        converted.convert(query, [None] * count)  # %s → $n, as psycopg's cursors send it
        name = b"millpond_stmt_%d" % next(self._serial)
        result = self._conn.pgconn.prepare(name, converted.query)
        if result.status not in _OK:
            raise self._error(result)
        self._names[query] = name
        return name

    def _error(self, result: PGresult) -> psycopg.Error:
        return errors.error_from_result(result, encoding=self._conn.info.encoding)


def simple(conn: psycopg.Connection[Any], query: bytes) -> list[PGresult]:
    """The results of ``query`` (one or more statements, no parameters); the first error
    raised."""
    pgconn = conn.pgconn
    pgconn.send_query(query)  # (raises psycopg.OperationalError if it cannot)
    while pgconn.flush():  # the connection is non-blocking: wait until it is all sent
        select.select([], [pgconn.socket], [])
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    for result in results:
        if result.status not in _OK:
            raise errors.error_from_result(result, encoding=conn.info.encoding)
    return results
