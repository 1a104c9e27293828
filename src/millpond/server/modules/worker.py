"""A module worker: ``python -I -m millpond.server.modules.worker FD SCRATCH``.

It talks to the server on the socket ``FD`` (never stdin/stdout: module code may print),
in frames of :mod:`.protocol`. The first message is ``start``: the worker connects to
Postgres (``conninfo``, when given), confines itself (:mod:`.sandbox`), writes the module's
files into ``SCRATCH``, imports the entry and answers with the module definition. Then it
serves ``call`` (one reducer call, one transaction), ``calls`` (several, one after the
other, each its own transaction, one answer frame each: due scheduled runs) and
``apply`` (the publish transaction: DDL statements and maybe ``@init``) until the socket
closes or ``stop``.

Outcomes are JSON: ``status`` (committed, failed, error, timeout), ``message``,
``traceback`` (errors), ``return``, ``retries``, ``duration_us``, ``logs``; ``recycle``
tells the server this worker exits after answering (its state may be broken).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import random
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from millpond.module import _declare
from millpond.module._context import SenderError
from millpond.module._def import ModuleDef
from millpond.module._types import Identity
from millpond.module._values import bind_args, schedule_json, to_json

from . import sandbox
from .protocol import Decoder, FrameError, encode
from .runtime import Capture, Context, Logs, Tables, module_logger, table_handles
from .schema import NEXT_TICK
from .statements import connect, simple

RETRY_SQLSTATES = ("40001", "40P01")
APPLY_LOCK_TIMEOUT = "5s"
MAX_REPLY = 8 * 1024 * 1024
_ISOLATION = {"serializable": "SERIALIZABLE", "read_committed": "READ COMMITTED"}
_BEGIN = {level: f"BEGIN ISOLATION LEVEL {level};".encode() for level in _ISOLATION.values()}
_SET_CONTEXT = (
    b"SELECT set_config('millpond.sender', %s, true),"
    b" set_config('millpond.connection_id', %s, true),"
    b" set_config('millpond.request_id', %s, true)"
)
# the claim reads the queue by its key, never whole, even when the planner would scan a
# small queue: a serializable run's scan takes a predicate lock on all of the queue and
# conflicts with every other run's write to it (the module's own setting is put back)
_NO_SEQSCAN = (
    b"SELECT set_config('millpond.enable_seqscan', current_setting('enable_seqscan'), true),"
    b" set_config('enable_seqscan', 'off', true)"
)
_SEQSCAN_AGAIN = (
    b"SELECT set_config('enable_seqscan', current_setting('millpond.enable_seqscan'), true)"
)
_EMIT = b"SELECT pg_catalog.pg_logical_emit_message(true, 'millpond.reducer', "
_EMIT_END = b"::text), pg_catalog.pg_current_xact_id()::text; COMMIT"


class _AlreadyDone(Exception):
    """A ``client_disconnected`` whose connection another server has seen to."""


class _NotDue(Exception):
    """A scheduled run another server claimed already, or whose row was cancelled or
    rescheduled meanwhile."""


# the scheduled run's claim, in one statement: the queue row as the scheduler saw it,
# locked (c); a one-shot's schedule row deleted (d: its trigger deletes the queue row at
# the statement's end), an interval's queue row moved to its next intended time after now
# (u: anchored on the first, so no drift; missed ticks are skipped); and the schedule row
# as it was (all parts see the statement's snapshot), with the interval's next time. No
# row: not due any more (claimed, cancelled or moved), or its schedule row is gone.
_CLAIM = (
    "WITH c AS (SELECT every_us FROM public.millpond_schedules"
    " WHERE tbl = %(tbl)s AND id = %(id)s AND due = %(due)s::timestamptz FOR UPDATE),"
    " d AS (DELETE FROM {t} WHERE scheduled_id = %(id)s"
    " AND EXISTS (SELECT FROM c WHERE every_us IS NULL)),"
    " u AS (UPDATE public.millpond_schedules SET attempts = 0, last_error = NULL,"
    " last_run = now(), due = " + NEXT_TICK + " WHERE tbl = %(tbl)s AND id = %(id)s"
    " AND EXISTS (SELECT FROM c WHERE every_us IS NOT NULL) RETURNING due)"
    " SELECT (SELECT due FROM u), {cols} FROM {t} WHERE scheduled_id = %(id)s"
    " AND EXISTS (SELECT FROM c)"
)


class CpuTimeExceeded(BaseException):
    """Raised by SIGXCPU: the call used its CPU budget (a BaseException, so that a
    module's ``except Exception`` does not swallow it)."""


class Channel:
    """Blocking frames over the worker's socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._decoder = Decoder()
        self._ready: list[dict[str, Any]] = []

    def receive(self) -> dict[str, Any] | None:
        while not self._ready:
            data = self._sock.recv(1 << 16)
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    def send(self, message: dict[str, Any]) -> None:
        try:
            frame = encode(message, MAX_REPLY)
        except FrameError as exc:
            frame = encode(_too_large(message, str(exc)))
        self._sock.sendall(frame)


def _too_large(message: dict[str, Any], problem: str) -> dict[str, Any]:
    reply = {k: message.get(k) for k in ("id", "retries", "duration_us")}
    reply.update(status="error", message=f"the outcome is too large ({problem})", logs=[])
    reply["return"] = None
    reply["recycle"] = False
    return reply


class Worker:
    """One imported module and its Postgres connection."""

    def __init__(self, conn: psycopg.Connection[Any] | None, limits: dict[str, Any]) -> None:
        self.conn = conn
        self.limits = limits
        self.logs = Logs()
        self.log = module_logger(self.logs)
        self.module = ModuleDef()
        self.registry = _declare.Registry()
        self.records: dict[str, type] = {}
        self.db = Tables({})
        self._jitter = random.Random()
        self._in_call = False
        self._next_due: str | None = None
        self._claims: dict[str, bytes] = {}
        self._first: tuple[bytes, dict[str, Any]] | None = None  # sent with BEGIN
        self._opened: psycopg.Cursor[Any] | None = None  # its answer

    # -- start ------------------------------------------------------------------------

    def load(self, scratch: Path, files: dict[str, str], entry: str) -> ModuleDef:
        root = scratch / "module"
        for name, source in files.items():
            path = root / _relative(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        sys.path.insert(0, str(root))
        self.logs.root = f"{root}/"
        _declare.reset()
        self._in_call = True
        try:
            importlib.import_module(entry)
        finally:
            self._in_call = False
        self.registry = _declare.reset()
        self.module = _declare.collect(self.registry)
        self.records = {cls.__name__: cls for cls in self.registry.records}
        if self.conn is not None:
            self.db = table_handles(self.conn, self.registry.tables, self.records)
        return self.module

    # -- calls ------------------------------------------------------------------------

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        name = message.get("reducer")
        lifecycle = message["ctx"].get("lifecycle")
        if name is None and lifecycle is not None:  # only the bookkeeping: no such reducer
            return self._track_only(lifecycle, message["ctx"])
        if not isinstance(name, str) or name not in self.registry.reducers:
            return _outcome("error", f"the module has no reducer {name!r}")
        definition, function = self.registry.reducers[name]
        args = message.get("args", [])
        ctx = message["ctx"]

        def body(context: Context) -> Any:
            if lifecycle is not None and not self._track(lifecycle, ctx):
                raise _AlreadyDone
            if definition.scheduled is not None:
                row = self._claimed(definition.scheduled)
                if not definition.private:
                    shown = to_json(row)
                    shown["scheduled_at"] = schedule_json(row.scheduled_at)
                    event["args"] = [shown]
                return function(context, row)
            return function(context, **bind_args(definition, args, self.module, self.records))

        event = {
            "reducer": name,
            "args": None if definition.private else args,
            "sender": ctx["sender"],
            "connection_id": ctx.get("connection_id"),
            "request_id": ctx.get("request_id"),
            "timestamp": ctx["timestamp"],
            "status": "committed",
        }
        self._next_due = None
        if definition.scheduled is not None:
            self._first = self._claim_statement(definition.scheduled, ctx)
        try:
            outcome = self.transaction(_ISOLATION[definition.isolation], ctx, body, event)
        finally:
            self._first = self._opened = None
        if self._next_due is not None and outcome["status"] == "committed":
            outcome["next_due"] = self._next_due  # an interval's next tick (scheduler.py)
        return outcome

    def _track_only(self, lifecycle: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        def body(context: Context) -> None:
            if not self._track(lifecycle, ctx):
                raise _AlreadyDone

        return self.transaction("READ COMMITTED", ctx, body, None)

    def _track(self, lifecycle: dict[str, Any], ctx: dict[str, Any]) -> bool:
        """Record a connection opening, or remove it as it ends: False if it was gone
        already (another server ran its ``client_disconnected``)."""
        conn = self._connection()
        connection_id = str(ctx.get("connection_id") or "")
        if lifecycle.get("kind") == "client_connected":
            conn.execute(
                "INSERT INTO public.millpond_connections (connection_id, identity, replica)"
                " VALUES (%s, %s, %s)",
                (connection_id, str(ctx["sender"]), str(lifecycle.get("replica") or "")),
            )
            return True
        cur = conn.execute(
            "DELETE FROM public.millpond_connections WHERE connection_id = %s RETURNING 1",
            (connection_id,),
        )
        return cur.fetchone() is not None

    def _claim_statement(self, table: str, ctx: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The claim of the due run ``ctx["schedule"]`` names, sent with the run's BEGIN
        (one round trip: :meth:`_begin`)."""
        schedule = ctx.get("schedule") or {}
        key, due = int(schedule.get("id", 0)), str(schedule.get("due", ""))
        query = self._claims.get(table)
        if query is None:
            query = self._claims[table] = getattr(self.db, table).statement(_CLAIM)
        if schedule.get("table") != table or not due:
            key = -1  # claims nothing: not a run of this table
        return query, {"tbl": table, "id": key, "due": due or "-infinity"}

    def _claimed(self, table: str) -> Any:
        """The claimed run's row (``_NotDue`` when it is not due any more)."""
        claimed = self._opened.fetchone() if self._opened is not None else None
        if claimed is None:
            raise _NotDue
        following, *values = claimed
        self._next_due = following.isoformat() if following is not None else None
        return getattr(self.db, table).row(values)

    def apply(self, message: dict[str, Any]) -> dict[str, Any]:
        statements = [str(s) for s in message.get("statements", [])]
        init = self.registry.init if message.get("run_init") else None
        conn = self._connection()

        def body(context: Context) -> Any:
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(APPLY_LOCK_TIMEOUT))
            )
            for statement in statements:
                conn.execute(statement.encode())
            return init(context) if init is not None else None

        return self.transaction("READ COMMITTED", message["ctx"], body, None)

    def transaction(
        self,
        isolation: str,
        ctx: dict[str, Any],
        body: Callable[[Context], Any],
        event: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Run ``body`` in one transaction, again (same context) after a serialization
        failure; the outcome."""
        started = time.perf_counter_ns()
        sandbox.set_cpu_budget(int(self.limits.get("cpu_s", 5)))
        retries, budget = 0, int(self.limits.get("retries", 20))
        while True:
            outcome = self._attempt(isolation, ctx, body, event)
            if outcome is not None or retries >= budget:
                break
            retries += 1
            time.sleep(self._jitter.uniform(0, min(0.05, 0.0005 * 2**retries)))
        if outcome is None:
            outcome = _outcome("error", f"still a serialization failure after {retries} retries")
        outcome.update(
            retries=retries,
            duration_us=(time.perf_counter_ns() - started) // 1000,
            logs=self._logs(),
        )
        return outcome

    def _attempt(
        self,
        isolation: str,
        ctx: dict[str, Any],
        body: Callable[[Context], Any],
        event: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """One run: its outcome, or None to run it again."""
        self.logs.take()
        try:
            self._begin(isolation, ctx)
            self._in_call = True
            try:
                value = to_json(body(self._context(ctx)))
            finally:
                self._in_call = False
            xid = self._commit(event)
        except CpuTimeExceeded:
            return self._failed("timeout", f"the call used more than {self._cpu()} s of CPU")
        except _AlreadyDone:
            self._rollback()
            return _outcome("skipped", "the connection's client_disconnected already ran")
        except _NotDue:
            self._rollback()
            return _outcome("skipped", "the scheduled run is not due any more")
        except SenderError as exc:
            return self._failed("failed", str(exc))
        except MemoryError:
            limit = self.limits.get("memory_mb")
            return self._failed("error", f"MemoryError: the worker's limit is {limit} MB", True)
        except BaseException as exc:
            if _retryable(exc) and self._rollback():
                return None
            failed = self._failed("error", _describe(exc), traceback=self.traceback())
            sqlstate = _sqlstate(exc)
            if sqlstate is not None:
                failed["sqlstate"] = sqlstate
            return failed
        outcome = _outcome("committed", None, value)
        if xid is not None:
            outcome["xid"] = xid
        return outcome

    def _failed(
        self, status: str, message: str, recycle: bool = False, traceback: str | None = None
    ) -> dict[str, Any]:
        self._flush()
        rolled_back = self._rollback()
        outcome = _outcome(status, message, traceback=traceback)
        outcome["recycle"] = recycle or status == "timeout" or not rolled_back
        return outcome

    def _begin(self, isolation: str, ctx: dict[str, Any]) -> None:
        """BEGIN, and the call's context for Postgres (``millpond.sender``…); with the
        statement :attr:`_first` names, in the same round trip (its cursor:
        :attr:`_opened`)."""
        conn = self._connection()
        if self._first is not None:
            query, params = self._first
            context = (
                str(ctx["sender"]),
                str(ctx.get("connection_id") or ""),
                str(ctx.get("request_id") or ""),
            )
            with conn.pipeline():
                # (not prepared: psycopg prepares nothing on a worker's connection)
                conn.execute(_BEGIN[isolation], prepare=False)
                conn.execute(_SET_CONTEXT, context, prepare=False)
                conn.execute(_NO_SEQSCAN, prepare=False)
                self._opened = conn.execute(query, params, prepare=False)
                conn.execute(_SEQSCAN_AGAIN, prepare=False)
            return
        literal = self._literal
        simple(
            conn,
            b"".join(
                (
                    _BEGIN[isolation],
                    b" SELECT set_config('millpond.sender', ",
                    literal(str(ctx["sender"])),
                    b", true), set_config('millpond.connection_id', ",
                    literal(str(ctx.get("connection_id") or "")),
                    b", true), set_config('millpond.request_id', ",
                    literal(str(ctx.get("request_id") or "")),
                    b", true)",
                )
            ),
        )

    def _literal(self, value: str) -> bytes:
        """``value`` as an SQL string literal, quoted by libpq for the connection's
        encoding and ``standard_conforming_strings`` as they are now: what ``sql.Literal``
        makes, at a tenth of its cost (a call sends four)."""
        if "\x00" in value:
            raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
        conn = self._connection()
        return psycopg.pq.Escaping(conn.pgconn).escape_literal(value.encode(conn.info.encoding))

    def _commit(self, event: dict[str, Any] | None) -> int | None:
        """Commit; the transaction's xid (32 bits, as the WAL stream names it) when it
        wrote its event."""
        conn = self._connection()
        status = conn.info.transaction_status
        if status != psycopg.pq.TransactionStatus.INTRANS:
            raise RuntimeError(
                "the call's transaction was ended or failed inside the module "
                f"(status {status.name}): a caught SQL error, or COMMIT/ROLLBACK in ctx.sql"
            )
        if event is None:
            conn.execute("COMMIT")
            return None
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        emitted = simple(conn, _EMIT + self._literal(text) + _EMIT_END)[0]
        xid = emitted.get_value(0, 1) if emitted.ntuples else None
        return int(xid) % 2**32 if xid is not None else None

    def _rollback(self) -> bool:
        """Roll back what is open; whether the connection is still usable."""
        conn = self.conn
        if conn is None or conn.closed:
            return False
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            return False
        return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def _context(self, ctx: dict[str, Any]) -> Context:
        return Context(
            sender=Identity(ctx["sender"]),
            connection_id=ctx.get("connection_id"),
            sender_auth=ctx.get("sender_auth"),
            timestamp=datetime.datetime.fromisoformat(ctx["timestamp"]),
            rng=random.Random(int(ctx.get("seed", 0))),
            db=self.db,
            log=self.log,
            _conn=self._connection(),
            due=_due(ctx),
        )

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None:
            raise RuntimeError("this worker has no database connection")
        return self.conn

    def _cpu(self) -> int:
        return int(self.limits.get("cpu_s", 5))

    def _flush(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a module may have replaced sys.stdout
                stream.flush()

    def _logs(self) -> list[dict[str, Any]]:
        self._flush()
        return self.logs.take()

    def traceback(self) -> str:
        """The traceback being handled, with the module's files named relative to it."""
        text = traceback.format_exc()
        return text.replace(self.logs.root, "") if self.logs.root else text

    def on_sigxcpu(self, _signum: int, _frame: FrameType | None) -> None:
        if self._in_call:
            raise CpuTimeExceeded()


def _outcome(
    status: str, message: str | None, value: Any = None, traceback: str | None = None
) -> dict[str, Any]:
    outcome: dict[str, Any] = {"status": status, "message": message, "return": value}
    if status == "error":
        outcome["traceback"] = traceback
    return outcome


def _due(ctx: dict[str, Any]) -> datetime.datetime | None:
    schedule = ctx.get("schedule")
    if not isinstance(schedule, dict) or not isinstance(schedule.get("due"), str):
        return None
    return datetime.datetime.fromisoformat(schedule["due"])


def _retryable(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, psycopg.Error) and seen.sqlstate in RETRY_SQLSTATES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a Postgres error behind ``exc`` (the reducer may have wrapped it)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str):
            return code
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\x00" in name:
        raise ValueError(f"a module file's path must be relative and inside it: {name!r}")
    return path


# -- the process ------------------------------------------------------------------------


def start(
    channel: Channel, scratch: Path, message: dict[str, Any]
) -> tuple[Worker | None, dict[str, Any]]:
    """Connect, confine, import: the worker and the answer to ``start``."""
    limits = dict(message.get("limits") or {})
    conn = None
    try:
        conninfo = message.pop("conninfo", None)  # not left lying around for the module
        if conninfo:
            conn = connect(str(conninfo))
            del conninfo
            timeout_ms = int(float(limits.get("call_timeout_s", 10)) * 1000)
            conn.execute(f"SET statement_timeout = {timeout_ms}")
    except psycopg.Error as exc:
        return None, _start_error(f"cannot connect to the database: {exc}", "")
    layers = sandbox.apply(scratch, limits)
    worker = Worker(conn, limits)
    signal.signal(signal.SIGXCPU, worker.on_sigxcpu)
    sys.stdout = Capture(worker.logs, "info")
    sys.stderr = Capture(worker.logs, "warning")
    reply: dict[str, Any] = {"sandbox": [layer.to_json() for layer in layers]}
    try:
        module = worker.load(scratch, dict(message.get("files") or {}), str(message["entry"]))
        definition = to_json(module.to_json())  # defaults may be dates, Decimals...
    except CpuTimeExceeded:
        return None, {**reply, **_start_error("the module used its CPU budget on import", "")}
    except BaseException as exc:
        return None, {**reply, **_start_error(_describe(exc), worker.traceback())}
    reply.update(ok=True, logs=worker._logs())
    reply["def"] = definition
    return worker, reply


def _start_error(message: str, trace: str) -> dict[str, Any]:
    return {"ok": False, "error": {"message": message, "traceback": trace}}


def dispatch(worker: Worker, message: dict[str, Any]) -> dict[str, Any]:
    op = message.get("op")
    if op == "call":
        return worker.call(message)
    if op == "apply":
        return worker.apply(message)
    return _outcome("error", f"unknown op {op!r}")


def serve(channel: Channel, worker: Worker) -> None:
    while True:
        message = channel.receive()
        if message is None or message.get("op") == "stop":
            return
        if message.get("op") == "calls":
            if not _serve_calls(channel, worker, message):
                return
            continue
        try:
            outcome = dispatch(worker, message)
        except Exception as exc:  # a malformed message: say so, keep serving
            outcome = _outcome("error", _describe(exc), traceback=traceback.format_exc())
        recycle = bool(outcome.get("recycle"))
        outcome.setdefault("recycle", False)
        channel.send({"id": message.get("id"), **outcome})
        if recycle:
            return


def _serve_calls(channel: Channel, worker: Worker, message: dict[str, Any]) -> bool:
    """``calls``: each call in its own transaction, one answer frame per call (with its
    ``index``); False when the worker must exit (an outcome said ``recycle``)."""
    for index, call in enumerate(message.get("calls") or []):
        try:
            outcome = worker.call({"op": "call", **call})
        except Exception as exc:
            outcome = _outcome("error", _describe(exc), traceback=traceback.format_exc())
        recycle = bool(outcome.get("recycle"))
        outcome.setdefault("recycle", False)
        channel.send({"id": message.get("id"), "index": index, **outcome})
        if recycle:
            return False
    return True


def main(argv: list[str]) -> int:
    fd, scratch = int(argv[1]), Path(argv[2])
    channel = Channel(socket.socket(fileno=fd))
    message = channel.receive()
    if message is None or message.get("op") != "start":
        return 2
    worker, reply = start(channel, scratch, message)
    channel.send(reply)
    if worker is not None:
        serve(channel, worker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
