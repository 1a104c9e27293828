"""The exports' COPY reader (``transfer/copy_out.py``) on a real Postgres: the same bytes
as psycopg's ``Copy``, errors as psycopg's classes, and a connection usable again after
an error or an early stop — without ever blocking inside libpq."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from millpond.server.transfer.copy_out import CopyOut

Connect = Callable[[str], psycopg.Connection[Any]]

ROWS = (
    "SELECT i, 'line ' || i || E'\\nsecond \"line\", with comma' AS t, i * 0.5 AS half"
    " FROM generate_series(1, 20000) i"
)


@pytest.fixture
def conn(superuser: Connect) -> Iterator[psycopg.Connection[Any]]:
    with superuser("millpond") as c:
        yield c


def psycopg_copy(conn: psycopg.Connection[Any], statement: str) -> bytes:
    with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
        return b"".join(bytes(data) for data in copy)


@pytest.mark.parametrize("fmt", ["csv, HEADER", "text"])
def test_blocks_are_the_copy_output(conn: psycopg.Connection[Any], fmt: str) -> None:
    statement = f"COPY ({ROWS}) TO STDOUT (FORMAT {fmt})"
    copy = CopyOut(conn, statement.encode(), block=4096)
    blocks = list(copy)
    assert b"".join(blocks) == psycopg_copy(conn, statement)
    assert len(blocks) > 100  # many blocks: the small block size is used
    assert all(len(b) >= 4096 for b in blocks[:-1])
    # each block ends at the end of a row: its last line is whole
    assert all(b.endswith(b"\n") for b in blocks)
    assert copy.rows == 20000
    assert copy.messages == 20000 + (fmt != "text")  # a CSV header is one more message
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is idle again


def test_an_empty_result(conn: psycopg.Connection[Any]) -> None:
    copy = CopyOut(conn, b"COPY (SELECT 1 WHERE false) TO STDOUT")
    assert list(copy) == []
    assert copy.rows == 0


def test_an_error_half_way_is_psycopgs_class(conn: psycopg.Connection[Any]) -> None:
    statement = b"COPY (SELECT 1 / (10000 - i) FROM generate_series(1, 20000) i) TO STDOUT"
    got: list[bytearray] = []
    with pytest.raises(errors.DivisionByZero), conn.transaction():
        got.extend(CopyOut(conn, statement, block=1024))
    assert got  # rows came before the error
    assert conn.execute("SELECT 2").fetchone() == (2,)


def test_an_error_before_any_row(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.UndefinedTable):
        list(CopyOut(conn, b"COPY (SELECT * FROM no_such_table) TO STDOUT"))
    with pytest.raises(errors.SyntaxError):
        list(CopyOut(conn, b"COPY (SELEC 1) TO STDOUT"))
    assert conn.execute("SELECT 3").fetchone() == (3,)


def test_a_statement_that_is_not_copy_out(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.ProgrammingError, match="not a COPY"):
        list(CopyOut(conn, b"SELECT 1"))
    assert conn.execute("SELECT 4").fetchone() == (4,)


def test_stopping_early_cancels_the_copy(conn: psycopg.Connection[Any]) -> None:
    """A job cancelled mid-export: the rest is never produced, the transaction rolls back."""
    statement = b"COPY (SELECT i FROM generate_series(1, 100000000) i) TO STDOUT"
    with pytest.raises(RuntimeError, match="stop"), conn.transaction():
        for _ in CopyOut(conn, statement, block=1024):
            raise RuntimeError("stop")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT 5").fetchone() == (5,)


def test_a_silent_copy_is_stopped_by_its_check(conn: psycopg.Connection[Any]) -> None:
    """A cancelled job whose query sends nothing for minutes: its check runs while the
    reader waits (every CHECK_EVERY_S), what it raises ends the COPY, and the connection
    is usable again."""
    calls: list[float] = []

    def check() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("the job was stopped")

    started = time.monotonic()
    statement = b"COPY (SELECT pg_sleep(60), 1) TO STDOUT"
    with pytest.raises(RuntimeError, match="stopped"), conn.transaction():
        list(CopyOut(conn, statement, check=check))
    assert len(calls) == 2 and time.monotonic() - started < 30
    assert conn.execute("SELECT 6").fetchone() == (6,)


def test_waiting_for_rows_leaves_the_gil(conn: psycopg.Connection[Any], superuser: Connect) -> None:
    """While Postgres has nothing to send, the reading thread waits outside the
    interpreter: this thread runs Python meanwhile (were the reader blocked inside libpq,
    it could not, and would never release the lock the COPY waits for)."""
    conn.execute("SET lock_timeout = '20s'")  # a reader stuck in libpq: a failure, not a hang
    with superuser("millpond") as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        blocked = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        result: list[bytes] = []
        reader = threading.Thread(
            target=lambda: result.extend(
                CopyOut(conn, b"COPY (SELECT pg_advisory_lock(4242), 7) TO STDOUT")
            )
        )
        reader.start()
        while holder.execute(blocked).fetchone() != (1,):  # the COPY waits for the lock
            pass
        spins = sum(1 for _ in range(200_000))  # Python work while the reader waits
        holder.execute("SELECT pg_advisory_unlock(4242)")
        reader.join(timeout=60)
    assert spins == 200_000
    assert b"".join(result) == b"\t7\n"


def test_linger_sends_what_came_before_a_pause(conn: psycopg.Connection[Any]) -> None:
    """With ``linger`` (streamed exports), a partial block goes once Postgres pauses: the
    rows before a slow one arrive before it (Postgres itself sends 8 KB at a time)."""
    statement = (
        b"COPY (SELECT i, repeat('x', 1000), CASE WHEN i = 101 THEN"
        b" (SELECT 1 FROM pg_sleep(1)) END FROM generate_series(1, 200) i) TO STDOUT"
    )
    whole = psycopg_copy(conn, statement.decode())
    assert len(list(CopyOut(conn, statement))) == 1  # without: one block, at the end
    blocks = list(CopyOut(conn, statement, linger=0.2))
    assert len(blocks) == 2 and b"".join(blocks) == whole
    assert 90 <= blocks[0].count(b"\n") <= 100  # what Postgres had sent before row 101
