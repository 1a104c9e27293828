"""The sans-I/O core of the realtime client, shared by :class:`AsyncRealtime` and
:class:`Realtime` (protocol: ``docs/realtime-protocol.md``).

Two state machines, no I/O, no clock, no threads of their own:

- :class:`Session` speaks the protocol. It consumes decoded server messages
  (:meth:`Session.receive`) and connection changes (:meth:`Session.connected`,
  :meth:`Session.disconnected`), and returns an :class:`Output`: messages to send, inputs
  for the cache, finished requests. It keeps the subscribed queries under stable ids
  (the server's ids change with each connection), sends one request at a time, and after
  a reconnect resubscribes everything (one request; one per query if that one fails).
- :class:`Cache` is the client cache and the callback registry. It consumes the
  session's inputs (:meth:`Cache.process`): it applies each one to its tables — all of a
  transaction before any callback — and then runs the callbacks it concerns.

The drivers move messages between the socket and the session, and decide on which
thread the cache processes its inputs (inline, or queued for ``Realtime.update()``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

from .. import faults
from ..engine import predicates
from ..errors import MillpondError

__all__ = [
    "CLOSE_CODES",
    "FATAL_CLOSE_CODES",
    "Cache",
    "CallbackHandle",
    "ConnectInfo",
    "DisconnectInfo",
    "Event",
    "RealtimeError",
    "Row",
    "RowChange",
    "ScheduledCall",
    "Session",
    "SubscriptionError",
    "TableView",
    "Tables",
    "parse_lsn",
]

_log = logging.getLogger("millpond.realtime")

SUBPROTOCOL = "millpond.v1.json"

CLOSE_CODES = {
    4000: "environment_required",
    4001: "unauthorized",
    4003: "forbidden",
    4004: "database_not_found",
    4008: "slow_consumer",
    4009: "heartbeat_timeout",
    4010: "server_shutdown",
    4011: "stream_failed",
    4012: "realtime_unavailable",
    4013: "access_changed",
    4014: "visibility_changed",
    4015: "visibility_failed",
    4016: "connection_rejected",
    4029: "limit_exceeded",
}
"""The server's close codes (protocol doc)."""

FATAL_CLOSE_CODES = frozenset({4000, 4001, 4003, 4004, 4012, 4016})
"""Close codes after which reconnecting cannot help: the client stops for good."""


# -- errors ------------------------------------------------------------------------------


class RealtimeError(MillpondError):
    """The realtime connection failed for good (a fatal close code such as 4001
    ``unauthorized`` or 4004 ``database_not_found``, or reconnects exhausted), it was
    closed, or the server reported a problem with the connection."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        close_code: int | None = None,
        close_reason: str | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.close_reason = close_reason
        """The server's reason with its close code (``key_revoked``, ``access_revoked``…)."""


class SubscriptionError(RealtimeError):
    """The server refused a subscribe or unsubscribe (nothing changed): ``code`` is the
    protocol's (``unsupported_query``, ``unknown_table``, ``unknown_query``,
    ``permission_denied``, ``bad_message``), ``queries`` what was asked for."""

    def __init__(self, code: str, message: str, *, queries: Sequence[str] = ()) -> None:
        super().__init__(f"{code}: {message}", code=code)
        self.message = message
        self.queries = tuple(queries)


# -- rows and events ---------------------------------------------------------------------


class Row(Mapping[str, Any]):
    """A read-only row of the client cache: ``row["id"]`` or ``row.id``.

    Values are the wire's (the HTTP query API's JSON encoding: int8 as int, numeric as
    str, timestamps as ISO-8601 str, bytea as base64 str, json as JSON). Rows compare
    equal to rows and mappings with the same items. ``to_dict()`` gives a plain copy.
    A column named like a mapping method (``keys``, ``items``, ``get``…) is read with
    ``row["keys"]``.
    """

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, column: str) -> Any:
        return self._data[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, column: str) -> Any:
        if column.startswith("_"):
            raise AttributeError(column)
        try:
            return self._data[column]
        except KeyError:
            raise AttributeError(f"row has no column {column!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("rows of the client cache are read-only")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Row({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


Op: TypeAlias = Literal["insert", "update", "delete"]
EventKind: TypeAlias = Literal["subscribe", "resubscribe", "transaction", "unsubscribe"]


@dataclass(frozen=True)
class RowChange:
    """One row's change in an :class:`Event`: ``old`` is None for an insert, ``new``
    for a delete."""

    table: str
    op: Op
    old: Row | None
    new: Row | None


def parse_lsn(lsn: str) -> int:
    """A Postgres LSN ``"0/1D525B0"`` as an int (they compare in WAL order)."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class ReducerEvent:
    """Which reducer call made a transaction (``Event.reducer``): its ``name``, its
    arguments as called (None when the reducer is private), the caller's ``sender``
    identity and realtime ``connection_id`` (None for an HTTP call), the call's
    ``request_id`` and ``timestamp``, and its ``status`` (``"committed"``: a failed call
    reaches only its caller)."""

    name: str
    args: list[Any] | dict[str, Any] | None
    sender: str
    connection_id: str | None
    request_id: str
    timestamp: datetime | None
    status: str

    @classmethod
    def from_wire(cls, data: Any) -> ReducerEvent | None:
        if not isinstance(data, Mapping) or not isinstance(data.get("reducer"), str):
            return None
        timestamp = None
        if isinstance(data.get("timestamp"), str):
            try:
                timestamp = datetime.fromisoformat(data["timestamp"])
            except ValueError:
                timestamp = None
        args = data.get("args")
        connection_id = data.get("connection_id")
        return cls(
            name=data["reducer"],
            args=args if isinstance(args, list | dict) else None,
            sender=str(data.get("sender", "")),
            connection_id=connection_id if isinstance(connection_id, str) else None,
            request_id=str(data.get("request_id", "")),
            timestamp=timestamp,
            status=str(data.get("status", "committed")),
        )


@dataclass(frozen=True)
class Event:
    """What changed the cache: a committed ``"transaction"`` (with its ``lsn``, ``xid``
    and ``commit_time``), the initial rows of a ``"subscribe"``, the reconciliation after
    a reconnect (``"resubscribe"``: rows gone while offline are deletes, new ones
    inserts, changed ones updates), or rows dropped by an ``"unsubscribe"``.

    ``changes`` has one entry per row and transaction: a row changed several times in
    one transaction appears once, with its net change."""

    kind: EventKind
    changes: tuple[RowChange, ...] = ()
    lsn: str | None = None
    xid: int | None = None
    commit_time: datetime | None = None
    query_ids: tuple[str, ...] = ()
    """The queries a subscribe, resubscribe or unsubscribe concerned."""
    reducer: ReducerEvent | None = None
    """For a transaction a module's reducer made: which call (None for any other write:
    SQL over HTTP, the gateway, an import, another client of Postgres)."""

    @property
    def lsn_int(self) -> int | None:
        """``lsn`` as an int (:func:`parse_lsn`), for comparisons."""
        return None if self.lsn is None else parse_lsn(self.lsn)


@dataclass(frozen=True)
class ConnectInfo:
    """Given to ``on_connect``: the server's ``hello``."""

    connection_id: str
    server_version: str
    heartbeat_interval: float
    """Seconds between the server's pings."""
    reconnect: bool
    """False for the first connection, True after a reconnect."""
    hello: Mapping[str, Any] = field(default_factory=dict)
    """The whole ``hello`` (endpoints may add fields: the flags stream names its
    ``environment_id``)."""


@dataclass(frozen=True)
class DisconnectInfo:
    """Given to ``on_disconnect``: the close code (1006: the connection was lost
    without one) and reason, and whether the client will reconnect."""

    code: int
    reason: str
    reconnecting: bool


# -- the session's inputs for the cache ------------------------------------------------------


@dataclass(frozen=True)
class AppliedQuery:
    query_id: str
    sql: str
    table: str
    new: bool
    """Whether the server sent its rows (false for a query the connection already had)."""


@dataclass(frozen=True)
class Applied:
    kind: Literal["subscribe", "resubscribe"]
    queries: tuple[AppliedQuery, ...]
    tables: Mapping[str, Any]
    final: bool = False
    """For a resubscribe: the last one, after which rows no query sent again go."""


@dataclass(frozen=True)
class TransactionInput:
    message: Mapping[str, Any]


@dataclass(frozen=True)
class Unsubscribed:
    query_ids: tuple[str, ...]


@dataclass(frozen=True)
class ResyncBegin:
    pass


@dataclass(frozen=True)
class ResyncEnd:
    pass


@dataclass(frozen=True)
class Connected:
    info: ConnectInfo


@dataclass(frozen=True)
class Disconnected:
    info: DisconnectInfo


@dataclass(frozen=True)
class Failed:
    error: BaseException


class ScheduledCall:
    """A callback scheduled with ``schedule()``; ``cancel()`` it before it runs."""

    __slots__ = ("_on_cancel", "args", "callback", "cancelled")

    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._on_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self._on_cancel is not None:
                self._on_cancel()


@dataclass(frozen=True)
class Scheduled:
    call: ScheduledCall


Input: TypeAlias = (
    Applied
    | TransactionInput
    | Unsubscribed
    | ResyncBegin
    | ResyncEnd
    | Connected
    | Disconnected
    | Failed
    | Scheduled
)


# -- the session: the protocol state machine -------------------------------------------------


@dataclass(eq=False)
class Job:
    """A request of the session: a subscribe, an unsubscribe, (after a reconnect) a
    resubscribe, or a reducer call. Done once ``done``: then ``result`` (query ids),
    ``answer`` (a call's ``call_result`` message) or ``error``. ``waiter`` is the
    driver's (a future)."""

    kind: Literal["subscribe", "unsubscribe", "resync", "call"]
    sqls: tuple[str, ...] = ()
    query_ids: tuple[str, ...] = ()
    final: bool = True
    request_id: str | None = None
    result: list[str] | None = None
    error: BaseException | None = None
    done: bool = False
    waiter: Any = None
    answer: dict[str, Any] | None = None


@dataclass
class Output:
    """What the driver does after a session step, in this order: feed ``inputs`` to the
    cache, finish ``completed`` jobs, ``send`` the messages. ``fatal``: stop for good."""

    send: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    completed: list[Job] = field(default_factory=list)
    fatal: RealtimeError | None = None


@dataclass
class QueryEntry:
    query_id: str
    sql: str
    """As subscribed (sent again after a reconnect)."""
    canonical: str
    table: str
    server_id: str | None
    """Its id on the current connection (None while disconnected)."""


class Session:
    """The realtime protocol, sans I/O. States: ``idle`` (not connected), ``open``
    (``hello`` received), ``closed`` (for good)."""

    def __init__(self) -> None:
        self.state: Literal["idle", "open", "closed"] = "idle"
        self.queries: dict[str, QueryEntry] = {}
        """Subscribed queries by their stable id (the server's id when first applied)."""
        self.connections = 0
        self.connection_id: str | None = None
        self.identity: str | None = None
        self.heartbeat_interval: float | None = None
        self.last_lsn: str | None = None
        self._by_server: dict[str, str] = {}
        self._jobs: deque[Job] = deque()
        self._inflight: Job | None = None
        self._requests = itertools.count(1)
        self._pings = itertools.count(1)
        self._resync_open = False
        self._calls: dict[str, Job] = {}
        """Reducer calls sent on this connection, by request id, until answered."""
        self._call_numbers = itertools.count(1)

    # -- connection changes ----------------------------------------------------------------

    def connected(self, hello: Mapping[str, Any]) -> Output:
        """The server's ``hello`` arrived: resubscribe, then send what waited."""
        out = Output()
        if self.state == "closed":
            return out
        self.state = "open"
        self.connections += 1
        self._by_server = {}
        self.connection_id = str(hello.get("connection_id", ""))
        identity = hello.get("identity")
        self.identity = identity if isinstance(identity, str) else None
        interval = hello.get("heartbeat_interval_ms")
        self.heartbeat_interval = interval / 1000 if isinstance(interval, int | float) else None
        info = ConnectInfo(
            self.connection_id,
            str(hello.get("server_version", "")),
            self.heartbeat_interval or 0.0,
            reconnect=self.connections > 1,
            hello=dict(hello),
        )
        out.inputs.append(Connected(info))
        if self.queries:
            ids = tuple(self.queries)
            sqls = tuple(self.queries[q].sql for q in ids)
            out.inputs.append(ResyncBegin())
            self._resync_open = True
            self._jobs.appendleft(Job("resync", sqls=sqls, query_ids=ids))
        elif self._resync_open:  # a resubscription cut short, and nothing left to resubscribe
            out.inputs.append(ResyncEnd())
            self._resync_open = False
        self._pump(out)
        return out

    def disconnected(self, code: int, reason: str = "") -> Output:
        """The connection ended (after ``hello`` or before it). Requests in flight are
        sent again on the next connection; unsubscribes are done (nothing to unsubscribe
        from). A fatal close code closes the session: pending requests fail."""
        out = Output()
        if self.state == "closed":
            return out
        was_open = self.state == "open"
        self.state = "idle"
        self.connection_id = None
        self._by_server = {}
        for entry in self.queries.values():
            entry.server_id = None
        self._fail_calls(
            RealtimeError(
                "the connection was lost before the call's outcome arrived: it may have "
                "committed (look for its effect before calling again)",
                code="call_outcome_unknown",
            ),
            out,
        )
        inflight, self._inflight = self._inflight, None
        if inflight is not None and inflight.kind != "resync":
            self._jobs.appendleft(inflight)
            inflight.request_id = None
        self._jobs = deque(job for job in self._jobs if job.kind != "resync")
        for job in [job for job in self._jobs if job.kind == "unsubscribe"]:
            self._jobs.remove(job)
            self._unsubscribe_locally(job, out)
        fatal = code in FATAL_CLOSE_CODES
        if was_open:
            out.inputs.append(Disconnected(DisconnectInfo(code, reason, reconnecting=not fatal)))
        if fatal:
            name = CLOSE_CODES.get(code, "closed")
            error = RealtimeError(
                f"the server closed the realtime connection: {code} {reason or name}",
                code=name,
                close_code=code,
                close_reason=reason or None,
            )
            self._fail(error, out)
        return out

    def fail(self, error: RealtimeError) -> Output:
        """Stop for good (e.g. reconnects exhausted): pending requests fail with ``error``."""
        out = Output()
        if self.state != "closed":
            self._fail(error, out)
        return out

    def close(self) -> Output:
        """The user closed the client: pending requests fail."""
        out = Output()
        if self.state != "closed":
            self.state = "closed"
            self._fail_jobs(RealtimeError("the realtime client is closed", code="closed"), out)
        return out

    def _fail(self, error: RealtimeError, out: Output) -> None:
        self.state = "closed"
        out.fatal = error
        out.inputs.append(Failed(error))
        self._fail_jobs(error, out)

    def _fail_calls(self, error: BaseException, out: Output) -> None:
        calls, self._calls = list(self._calls.values()), {}
        for job in calls:
            job.error = error
            self._complete(job, out)

    def _fail_jobs(self, error: BaseException, out: Output) -> None:
        self._fail_calls(error, out)
        jobs = list(self._jobs)
        if self._inflight is not None:
            jobs.insert(0, self._inflight)
        self._jobs.clear()
        self._inflight = None
        for job in jobs:
            if job.kind != "resync":
                job.error = error
                self._complete(job, out)

    # -- requests from the user --------------------------------------------------------------

    def subscribe(self, sqls: Iterable[str]) -> tuple[Job, Output]:
        """Subscribe to ``sqls``; the job's result is their query ids."""
        queries = tuple(sqls)
        if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
            raise ValueError("subscribe takes a non-empty list of SQL strings")
        self._check_open()
        job = Job("subscribe", sqls=queries)
        self._jobs.append(job)
        out = Output()
        self._pump(out)
        return job, out

    def call(self, reducer: str, args: list[Any] | dict[str, Any]) -> tuple[Job, Output]:
        """Call a reducer on this connection; the job's ``answer`` is the server's
        ``call_result``. Not queued while disconnected (a call is not safe to send twice):
        then the job fails at once with ``not_connected``."""
        self._check_open()
        if not isinstance(reducer, str) or not reducer:
            raise ValueError("call takes the reducer's name")
        job = Job("call", request_id=f"call-{next(self._call_numbers)}")
        out = Output()
        if self.state != "open":
            job.error = RealtimeError(
                "not connected: a reducer call is not queued while the connection is down; "
                "call again once it is back (on_connect)",
                code="not_connected",
            )
            self._complete(job, out)
            return job, out
        assert job.request_id is not None
        self._calls[job.request_id] = job
        out.send.append(
            {"type": "call", "request_id": job.request_id, "reducer": reducer, "args": args}
        )
        return job, out

    def unsubscribe(self, refs: Iterable[str]) -> tuple[Job, Output]:
        """Unsubscribe from queries given by id or by SQL text (as subscribed, or the
        server's canonical text). ``ValueError`` for one that is not subscribed."""
        self._check_open()
        ids: list[str] = []
        for ref in refs:
            query_id = self.resolve(ref)
            if query_id not in ids:
                ids.append(query_id)
        if not ids:
            raise ValueError("unsubscribe takes one or more query ids or SQL strings")
        job = Job("unsubscribe", query_ids=tuple(ids))
        out = Output()
        if self.state == "open":
            self._jobs.append(job)
            self._pump(out)
        else:
            self._unsubscribe_locally(job, out)
        return job, out

    def resolve(self, ref: str) -> str:
        """The id of a subscribed query given by id or SQL text."""
        if ref in self.queries:
            return ref
        for entry in self.queries.values():
            if ref in (entry.sql, entry.canonical):
                return entry.query_id
        text = _canonical(ref)
        if text is not None:
            for entry in self.queries.values():
                if text in (_canonical(entry.sql), _canonical(entry.canonical)):
                    return entry.query_id
        raise ValueError(f"not subscribed: {ref!r}")

    def ping(self) -> dict[str, Any]:
        return {"type": "ping", "request_id": f"p{next(self._pings)}"}

    def _check_open(self) -> None:
        if self.state == "closed":
            raise RealtimeError("the realtime client is closed", code="closed")

    # -- server messages -----------------------------------------------------------------

    def receive(self, message: Mapping[str, Any]) -> Output:
        """One decoded server message."""
        out = Output()
        if self.state != "open":
            return out
        kind = message.get("type")
        if kind == "transaction":
            lsn = message.get("lsn")
            if isinstance(lsn, str):
                self.last_lsn = lsn
            out.inputs.append(TransactionInput(message))
        elif kind == "ping":
            out.send.append({"type": "pong"})
        elif kind == "call_result":
            job = self._calls.pop(str(message.get("request_id")), None)
            if job is not None:
                job.answer = dict(message)
                self._complete(job, out)
        elif kind == "subscription_applied":
            self._applied(message, out)
        elif kind == "unsubscribed":
            self._unsubscribed(message, out)
        elif kind == "error":
            self._error(message, out)
        # hello (again), pong and types from newer servers: nothing to do
        self._pump(out)
        return out

    def _answers(self, message: Mapping[str, Any], *kinds: str) -> Job | None:
        job = self._inflight
        if job is None or job.kind not in kinds or message.get("request_id") != job.request_id:
            return None
        self._inflight = None
        return job

    def _applied(self, message: Mapping[str, Any], out: Output) -> None:
        job = self._answers(message, "subscribe", "resync")
        if job is None:
            return
        listed = [q for q in message.get("queries") or [] if isinstance(q, Mapping)]
        tables = message.get("tables") or {}
        applied: list[AppliedQuery] = []
        if job.kind == "subscribe":
            ids = []
            for sql, query in zip(job.sqls, listed, strict=False):
                server_id = str(query.get("query_id"))
                query_id = self._by_server.get(server_id)
                new = query_id is None
                if query_id is None:
                    query_id = server_id
                    if query_id in self.queries:  # another query had this id on an old connection
                        query_id = f"{server_id}.{self.connections}"
                    self.queries[query_id] = QueryEntry(
                        query_id,
                        sql,
                        str(query.get("sql", sql)),
                        str(query.get("table")),
                        server_id,
                    )
                    self._by_server[server_id] = query_id
                ids.append(query_id)
                applied.append(_applied_query(query_id, query, sql, new))
            job.result = ids
            out.inputs.append(Applied("subscribe", tuple(applied), tables))
        else:
            for query_id, query in zip(job.query_ids, listed, strict=False):
                entry = self.queries.get(query_id)
                if entry is None:
                    continue
                server_id = str(query.get("query_id"))
                new = server_id not in self._by_server
                self._by_server.setdefault(server_id, query_id)
                entry.server_id = server_id
                entry.canonical = str(query.get("sql", entry.canonical))
                applied.append(_applied_query(query_id, query, entry.sql, new))
            out.inputs.append(Applied("resubscribe", tuple(applied), tables, final=job.final))
            if job.final:
                self._resync_open = False
            job.result = list(job.query_ids)
        self._complete(job, out)

    def _unsubscribed(self, message: Mapping[str, Any], out: Output) -> None:
        job = self._answers(message, "unsubscribe")
        if job is not None:
            self._unsubscribe_locally(job, out)

    def _unsubscribe_locally(self, job: Job, out: Output) -> None:
        gone = []
        for query_id in job.query_ids:
            entry = self.queries.pop(query_id, None)
            if entry is not None:
                gone.append(query_id)
                if entry.server_id is not None:
                    self._by_server.pop(entry.server_id, None)
        if gone:
            out.inputs.append(Unsubscribed(tuple(gone)))
        job.result = gone
        self._complete(job, out)

    def _error(self, message: Mapping[str, Any], out: Output) -> None:
        code = str(message.get("code") or "error")
        text = str(message.get("message") or "")
        job = None if message.get("request_id") is None else self._answers(message, *_KINDS)
        if job is None:
            out.inputs.append(Failed(RealtimeError(f"{code}: {text}", code=code)))
        elif job.kind == "subscribe":
            job.error = SubscriptionError(code, text, queries=job.sqls)
            self._complete(job, out)
        elif job.kind == "unsubscribe":
            job.error = SubscriptionError(code, text, queries=job.query_ids)
            self._complete(job, out)
        elif len(job.query_ids) > 1:  # the resubscription failed: one query at a time
            last = len(job.query_ids) - 1
            for i in range(last, -1, -1):
                one = Job(
                    "resync",
                    sqls=(job.sqls[i],),
                    query_ids=(job.query_ids[i],),
                    final=job.final and i == last,
                )
                self._jobs.appendleft(one)
        else:  # this query cannot be resubscribed: drop it
            entry = self.queries.pop(job.query_ids[0], None)
            sql = entry.sql if entry is not None else job.sqls[0]
            out.inputs.append(
                Failed(
                    SubscriptionError(
                        code, f"resubscribing {sql!r} after a reconnect: {text}", queries=(sql,)
                    )
                )
            )
            if job.final:
                out.inputs.append(ResyncEnd())
                self._resync_open = False

    # -- sending ---------------------------------------------------------------------------

    def _pump(self, out: Output) -> None:
        """Send the next request if none is in flight (the server answers in order; one
        at a time keeps resubscriptions and user requests apart)."""
        while self.state == "open" and self._inflight is None and self._jobs:
            job = self._jobs.popleft()
            job.request_id = f"r{next(self._requests)}"
            if job.kind == "unsubscribe":
                server_ids = [
                    entry.server_id
                    for entry in (self.queries.get(q) for q in job.query_ids)
                    if entry is not None and entry.server_id is not None
                ]
                if not server_ids:
                    self._unsubscribe_locally(job, out)
                    continue
                message: dict[str, Any] = {"query_ids": server_ids}
            else:
                message = {"queries": list(job.sqls)}
            kind = "unsubscribe" if job.kind == "unsubscribe" else "subscribe"
            out.send.append({"type": kind, "request_id": job.request_id, **message})
            self._inflight = job

    def _complete(self, job: Job, out: Output) -> None:
        job.done = True
        out.completed.append(job)


_KINDS = ("subscribe", "unsubscribe", "resync")


def _canonical(sql: str) -> str | None:
    """The engine's canonical text of a query (None if it does not parse)."""
    try:
        query = predicates.parse_query(sql)
    except Exception:
        return None
    if query.schema == "public":
        query = dataclasses.replace(query, schema=None)
    return query.to_sql()


def _applied_query(query_id: str, query: Mapping[str, Any], sql: str, new: bool) -> AppliedQuery:
    return AppliedQuery(query_id, str(query.get("sql", sql)), str(query.get("table")), new)


# -- the cache ---------------------------------------------------------------------------


def _freeze(value: Any) -> Hashable:
    """A JSON value as something hashable (for keys of rows without a primary key)."""
    if isinstance(value, dict):
        return ("{}", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("[]", tuple(_freeze(v) for v in value))
    return value  # type: ignore[no-any-return]


def _python(type_name: str | None, value: Any) -> Any:
    """A wire value as the engine compares it (the raw value if Python cannot hold it)."""
    if type_name is None or value is None:
        return value
    try:
        return predicates.python_value(type_name, value)
    except (ValueError, TypeError, ArithmeticError):
        return value


def _normal(type_name: str | None, value: Any) -> Hashable:
    """A value (wire or Python) as an index key: equal exactly when Postgres' ``=`` says
    so (``"1.50"`` and ``Decimal("1.5")`` for numeric, both ISO forms of an instant…)."""
    if value is None:
        return None
    if type_name is not None:
        try:
            key = predicates.value_key(type_name, predicates.python_value(type_name, value))
            hash(key)
            return key  # type: ignore[no-any-return]
        except (ValueError, TypeError, ArithmeticError):
            pass
    return _freeze(value)


class _Table:
    """One table of the cache: rows by primary key (the tuple of the key's values) or,
    without a key, by the whole row with a count of identical rows; secondary indexes
    on the equality columns of the current subscriptions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.columns: dict[str, str] = {}
        self.key: tuple[str, ...] = ()
        self.rows: dict[Hashable, Row] = {}
        self.counts: dict[Hashable, int] = {}
        self.indexes: dict[str, dict[Hashable, set[Hashable]]] = {}
        self.stale: set[Hashable] = set()
        self.scans = 0
        """Full scans made by ``filter_by`` (for tests: an indexed column makes none)."""

    def row_key(self, row: Mapping[str, Any]) -> Hashable:
        if self.key:
            return tuple(_normal(self.columns.get(c), row.get(c)) for c in self.key)
        return _freeze(dict(row))

    def reshape(self, columns: dict[str, str], key: tuple[str, ...]) -> None:
        """Columns and key from a ``subscription_applied`` (re-keying rows if the key
        changed, which only an ALTER TABLE does)."""
        changed = key != self.key and (self.rows or self.counts)
        self.columns, self.key = columns, key
        if changed:
            rows = [(row, self.counts.get(k, 1)) for k, row in self.rows.items()]
            self.rows, self.counts, self.stale = {}, {}, set()
            indexed = list(self.indexes)
            self.indexes = {}
            for row, count in rows:
                self.put(self.row_key(row), row, count)
            self.set_indexes(indexed)

    def put(self, key: Hashable, row: Row, count: int = 1) -> None:
        old = self.rows.get(key)
        if old is not None:
            self._unindex(key, old)
        self.rows[key] = row
        if not self.key:
            self.counts[key] = count
        self._index(key, row)

    def remove(self, key: Hashable) -> None:
        old = self.rows.pop(key, None)
        self.counts.pop(key, None)
        if old is not None:
            self._unindex(key, old)

    def set_indexes(self, columns: Iterable[str]) -> None:
        wanted = set(columns)
        for column in list(self.indexes):
            if column not in wanted:
                del self.indexes[column]
        for column in wanted - set(self.indexes):
            index: dict[Hashable, set[Hashable]] = {}
            for key, row in self.rows.items():
                index.setdefault(_normal(self.columns.get(column), row.get(column)), set()).add(key)
            self.indexes[column] = index

    def _index(self, key: Hashable, row: Row) -> None:
        for column, index in self.indexes.items():
            index.setdefault(_normal(self.columns.get(column), row.get(column)), set()).add(key)

    def _unindex(self, key: Hashable, row: Row) -> None:
        for column, index in self.indexes.items():
            value = _normal(self.columns.get(column), row.get(column))
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    def all_rows(self) -> list[Row]:
        if self.key:
            return list(self.rows.values())
        return [row for key, row in self.rows.items() for _ in range(self.counts.get(key, 1))]

    def count(self) -> int:
        return len(self.rows) if self.key else sum(self.counts.values())

    def filter_by(self, values: Mapping[str, Any]) -> list[Row]:
        wanted = {c: _normal(self.columns.get(c), v) for c, v in values.items()}
        indexed = [c for c in wanted if c in self.indexes]
        if indexed:
            keys: set[Hashable] | None = None
            for column in indexed:
                found = self.indexes[column].get(wanted[column], set())
                keys = set(found) if keys is None else keys & found
            candidates = [(k, self.rows[k]) for k in keys or ()]
        else:
            self.scans += 1
            candidates = list(self.rows.items())
        rest = [c for c in wanted if c not in self.indexes]
        result = []
        for key, row in candidates:
            if all(_normal(self.columns.get(c), row.get(c)) == wanted[c] for c in rest):
                result.extend([row] * (1 if self.key else self.counts.get(key, 1)))
        return result


@dataclass
class _Query:
    query_id: str
    sql: str
    table: str
    bound: predicates.BoundQuery | None


def _net(base: Row | None, events: list[tuple[Row | None, Row | None]]) -> Row | None:
    """A row's state after a transaction's changes to it, from its state before
    (``base``). The wire groups a transaction's changes by kind, so their order within
    the transaction is lost; chaining them does not need it: every change consumes its
    old row and produces its new one, and what is left is the row after."""
    if len(events) == 1:
        return events[0][1]
    produced = [] if base is None else [base]
    produced += [new for _, new in events if new is not None]
    consistent = True
    for old, _ in events:
        if old is not None:
            try:
                produced.remove(old)
            except ValueError:
                consistent = False
    if consistent and len(produced) <= 1:
        return produced[0] if produced else None
    # the cache disagreed with the server (it should not): trust the count of changes
    inserts = sum(1 for old, _ in events if old is None)
    deletes = sum(1 for _, new in events if new is None)
    if (base is not None) + inserts - deletes <= 0:
        return None
    news = [new for _, new in events if new is not None]
    return news[-1] if news else base


class CallbackHandle:
    """Returned by every callback registration: ``remove()`` unregisters it."""

    __slots__ = ("_lock", "_registry", "active", "callback")

    def __init__(
        self, registry: list[CallbackHandle], callback: Callable[..., Any], lock: threading.RLock
    ) -> None:
        self._registry = registry
        self._lock = lock
        self.callback = callback
        self.active = True

    def remove(self) -> None:
        with self._lock:
            self.active = False
            if self in self._registry:
                self._registry.remove(self)


_TABLE_CALLBACKS = ("insert", "update", "delete", "row_update")
_CONNECTION_CALLBACKS = ("subscription_applied", "transaction", "connect", "disconnect", "error")


class Cache:
    """The client cache and its callbacks. :meth:`process` applies one input of the
    session under ``lock`` and then runs the callbacks (without the lock, so callbacks
    may read the cache and other threads may too)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, _Table] = {}
        self.queries: dict[str, _Query] = {}
        self.last_lsn: str | None = None
        """The lsn of the last transaction applied."""
        self._index = predicates.SubscriptionIndex()
        self._qualified: dict[str, str] = {}
        self._resynced: set[str] | None = None
        self._table_callbacks: dict[str, dict[str, list[CallbackHandle]]] = {}
        self._callbacks: dict[str, list[CallbackHandle]] = {k: [] for k in _CONNECTION_CALLBACKS}
        self._reducer_callbacks: dict[str, list[CallbackHandle]] = {}

    # -- registration --------------------------------------------------------------------

    def add_callback(self, kind: str, callback: Callable[..., Any]) -> CallbackHandle:
        if not callable(callback):
            raise TypeError(f"callbacks must be callable, not {type(callback).__name__}")
        with self.lock:
            registry = self._callbacks[kind]
            handle = CallbackHandle(registry, callback, self.lock)
            registry.append(handle)
            return handle

    def add_reducer_callback(self, reducer: str, callback: Callable[..., Any]) -> CallbackHandle:
        if not callable(callback):
            raise TypeError(f"callbacks must be callable, not {type(callback).__name__}")
        with self.lock:
            registry = self._reducer_callbacks.setdefault(reducer, [])
            handle = CallbackHandle(registry, callback, self.lock)
            registry.append(handle)
            return handle

    def add_table_callback(
        self, table: str, kind: str, callback: Callable[..., Any]
    ) -> CallbackHandle:
        if not callable(callback):
            raise TypeError(f"callbacks must be callable, not {type(callback).__name__}")
        with self.lock:
            by_kind = self._table_callbacks.setdefault(table, {k: [] for k in _TABLE_CALLBACKS})
            handle = CallbackHandle(by_kind[kind], callback, self.lock)
            by_kind[kind].append(handle)
            return handle

    # -- processing ------------------------------------------------------------------------

    def process(self, item: Input) -> None:
        """Apply one input to the cache, then run its callbacks."""
        faults.hit_sync("client.before_input", self, item)
        event: Event | None = None
        with self.lock:
            if isinstance(item, Applied):
                event = self._applied(item)
            elif isinstance(item, TransactionInput):
                event = self._transaction(item.message)
            elif isinstance(item, Unsubscribed):
                event = self._unsubscribed(item.query_ids)
            elif isinstance(item, ResyncBegin):
                self._begin_resync()
            elif isinstance(item, ResyncEnd):
                changes: list[RowChange] = []
                self._end_resync(changes)
                event = Event("resubscribe", tuple(changes)) if changes else None
        if isinstance(item, Connected):
            self._run(self._callbacks["connect"], item.info)
        elif isinstance(item, Disconnected):
            self._run(self._callbacks["disconnect"], item.info)
        elif isinstance(item, Failed):
            self.report(item.error)
        elif isinstance(item, Scheduled):
            if not item.call.cancelled:
                item.call.cancelled = True  # it ran: cancel() is now a no-op
                try:
                    item.call.callback(*item.call.args)
                except Exception as exc:
                    self.report(exc)
        elif event is not None:
            self._fire(event, applied=isinstance(item, Applied))

    def _fire(self, event: Event, applied: bool) -> None:
        for change in event.changes:
            by_kind = self._table_callbacks.get(change.table)
            if by_kind is None:
                continue
            if change.op == "update":
                self._run(by_kind["update"], change.old, change.new)
            else:
                self._run(by_kind[change.op], change.new if change.op == "insert" else change.old)
            self._run(by_kind["row_update"], change.op, change.old, change.new, event)
        if applied:
            self._run(self._callbacks["subscription_applied"], event)
        elif event.kind == "transaction":
            if event.reducer is not None:
                self._run(self._reducer_callbacks.get(event.reducer.name, []), event)
            self._run(self._callbacks["transaction"], event)

    def _run(self, registry: list[CallbackHandle], *args: Any) -> None:
        if not registry:
            return
        for handle in tuple(registry):
            if handle.active:
                try:
                    handle.callback(*args)
                except Exception as exc:
                    self.report(exc)

    def report(self, error: BaseException) -> None:
        """Give ``error`` to the ``on_error`` callbacks (logged if there are none)."""
        handlers = [h for h in tuple(self._callbacks["error"]) if h.active]
        if not handlers:
            _log.error("realtime: %s", error, exc_info=error)
        for handle in handlers:
            try:
                handle.callback(error)
            except Exception:
                _log.exception("realtime: an on_error callback failed")

    # -- applying inputs ---------------------------------------------------------------------

    def table(self, name: str) -> _Table:
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = _Table(name)
        return table

    def _applied(self, item: Applied) -> Event:
        changes: list[RowChange] = []
        for name, spec in item.tables.items():
            columns = {
                str(c["name"]): str(c["type"]) for c in spec.get("columns") or [] if "name" in c
            }
            self.table(name).reshape(columns, tuple(spec.get("key") or ()))
        for query in item.queries:
            self._register(query)
            if self._resynced is not None:
                self._resynced.add(query.query_id)
        self._refresh_indexes({q.table for q in item.queries})
        for name, spec in item.tables.items():
            table = self.tables[name]
            rows = [Row(r) for r in spec.get("rows") or []]
            if table.key:
                for row in rows:
                    self._set(table, table.row_key(row), row, changes, report_equal=False)
                continue
            grouped: dict[Hashable, list[Row]] = {}
            for row in rows:
                grouped.setdefault(table.row_key(row), []).append(row)
            new = [self.queries[q.query_id] for q in item.queries if q.new and q.table == name]
            for key, same in grouped.items():
                # each new query on the table sent its own copy of a row it matches
                senders = sum(1 for q in new if self._matches(q, table, same[0])) or 1
                self._set_count(table, key, same[0], max(1, len(same) // senders), changes)
        if item.final:
            self._end_resync(changes)
        ids = tuple(q.query_id for q in item.queries)
        return Event(item.kind, tuple(changes), query_ids=ids)

    def _transaction(self, message: Mapping[str, Any]) -> Event:
        changes: list[RowChange] = []
        for name, entry in (message.get("tables") or {}).items():
            table = self.tables.get(name)
            if table is None or not isinstance(entry, Mapping):
                continue
            if entry.get("truncated"):
                for key in list(table.rows):
                    self._drop(table, key, changes)
            if table.key:
                self._keyed_changes(table, entry, changes)
            else:
                self._keyless_changes(table, entry, changes)
        lsn = message.get("lsn")
        if isinstance(lsn, str):
            self.last_lsn = lsn
        commit_time = None
        if isinstance(message.get("commit_time"), str):
            try:
                commit_time = datetime.fromisoformat(message["commit_time"])
            except ValueError:
                commit_time = None
        xid = message.get("xid")
        return Event(
            "transaction",
            tuple(changes),
            lsn=lsn if isinstance(lsn, str) else None,
            xid=xid if isinstance(xid, int) else None,
            commit_time=commit_time,
            reducer=ReducerEvent.from_wire(message.get("reducer")),
        )

    def _keyed_changes(
        self, table: _Table, entry: Mapping[str, Any], changes: list[RowChange]
    ) -> None:
        by_key: dict[Hashable, list[tuple[Row | None, Row | None]]] = {}

        def add(old: Row | None, new: Row | None) -> None:
            row = new if new is not None else old
            assert row is not None
            by_key.setdefault(table.row_key(row), []).append((old, new))

        for row in entry.get("deletes") or []:
            add(Row(row), None)
        for update in entry.get("updates") or []:
            old, new = Row(update["old"]), Row(update["new"])
            if table.row_key(old) == table.row_key(new):
                add(old, new)
            else:
                add(old, None)
                add(None, new)
        for row in entry.get("inserts") or []:
            add(None, Row(row))
        for key, events in by_key.items():
            stale = key in table.stale
            final = _net(None if stale else table.rows.get(key), events)
            self._set(table, key, final, changes, report_equal=not stale)

    def _keyless_changes(
        self, table: _Table, entry: Mapping[str, Any], changes: list[RowChange]
    ) -> None:
        deltas: dict[Hashable, tuple[Row, int]] = {}

        def add(row: Row, delta: int) -> None:
            key = table.row_key(row)
            previous = deltas.get(key)
            deltas[key] = (row, delta + (previous[1] if previous else 0))

        for row in entry.get("deletes") or []:
            add(Row(row), -1)
        for update in entry.get("updates") or []:
            add(Row(update["old"]), -1)
            add(Row(update["new"]), +1)
        for row in entry.get("inserts") or []:
            add(Row(row), +1)
        for key, (row, delta) in deltas.items():
            base = 0 if key in table.stale else table.counts.get(key, 0)
            self._set_count(table, key, row, max(0, base + delta), changes)

    def _set(
        self,
        table: _Table,
        key: Hashable,
        new: Row | None,
        changes: list[RowChange],
        *,
        report_equal: bool,
    ) -> None:
        old = table.rows.get(key)
        table.stale.discard(key)
        if new is None:
            if old is not None:
                table.remove(key)
                changes.append(RowChange(table.name, "delete", old, None))
            return
        table.put(key, new)
        if old is None:
            changes.append(RowChange(table.name, "insert", None, new))
        elif report_equal or old != new:
            changes.append(RowChange(table.name, "update", old, new))

    def _set_count(
        self, table: _Table, key: Hashable, row: Row, count: int, changes: list[RowChange]
    ) -> None:
        old = table.counts.get(key, 0)
        table.stale.discard(key)
        if count == old:
            return
        if count > old:
            changes.extend(RowChange(table.name, "insert", None, row) for _ in range(count - old))
            table.put(key, row, count)
        else:
            gone = table.rows[key]
            changes.extend(RowChange(table.name, "delete", gone, None) for _ in range(old - count))
            if count:
                table.counts[key] = count
            else:
                table.remove(key)

    def _drop(self, table: _Table, key: Hashable, changes: list[RowChange]) -> None:
        if table.key:
            self._set(table, key, None, changes, report_equal=False)
        else:
            self._set_count(table, key, table.rows[key], 0, changes)

    # -- queries ---------------------------------------------------------------------------

    def _register(self, query: AppliedQuery) -> None:
        self._unregister(query.query_id)
        table = self.tables.get(query.table)
        bound: predicates.BoundQuery | None = None
        try:
            bound = predicates.bind(
                predicates.parse_query(query.sql), table.columns if table is not None else {}
            )
        except Exception:  # the server bound it; if we cannot, keep its rows (see _matches)
            _log.warning("realtime: cannot evaluate %r in the client", query.sql, exc_info=True)
        if bound is not None and bound.join is None:
            self._index.add(query.query_id, bound)
            self._qualified[query.table] = bound.table
        else:
            bound = None
        self.queries[query.query_id] = _Query(query.query_id, query.sql, query.table, bound)

    def _unregister(self, query_id: str) -> None:
        if self.queries.pop(query_id, None) is not None:
            self._index.remove(query_id)

    def _matches(self, query: _Query, table: _Table, row: Row) -> bool:
        """Whether ``row`` is in ``query``'s result; True when the client cannot tell
        (a query or value the engine cannot evaluate: keeping a row is the safe side)."""
        if query.bound is None:
            return True
        values = {c: _python(table.columns.get(c), v) for c, v in row.items()}
        try:
            return query.bound.matches(values)
        except Exception:
            return True

    def _refresh_indexes(self, names: Iterable[str]) -> None:
        for name in names:
            table = self.tables.get(name)
            qualified = self._qualified.get(name)
            if table is None:
                continue
            if qualified is None or not self._index.has_table(qualified):
                table.set_indexes(())
            else:
                columns = self._index.equality_columns(qualified)
                table.set_indexes(c for c in columns if c in table.columns)

    def _unsubscribed(self, query_ids: Sequence[str]) -> Event:
        names = {self.queries[q].table for q in query_ids if q in self.queries}
        for query_id in query_ids:
            self._unregister(query_id)
        changes: list[RowChange] = []
        for name in names:
            table = self.tables.get(name)
            if table is None:
                continue
            remaining = [q for q in self.queries.values() if q.table == name]
            for key, row in list(table.rows.items()):
                if not any(self._matches(q, table, row) for q in remaining):
                    self._drop(table, key, changes)
        self._refresh_indexes(names)
        return Event("unsubscribe", tuple(changes), query_ids=tuple(query_ids))

    # -- reconciliation after a reconnect ---------------------------------------------------

    def _begin_resync(self) -> None:
        """Every row is stale until the resubscription sends it again (or a transaction
        changes it); rows still stale at the end were deleted while we were away."""
        for table in self.tables.values():
            table.stale = set(table.rows)
        self._resynced = set()

    def _end_resync(self, changes: list[RowChange]) -> None:
        for table in self.tables.values():
            for key in list(table.stale):
                if key in table.rows:
                    self._drop(table, key, changes)
            table.stale.clear()
        if self._resynced is not None:
            for query_id in [q for q in self.queries if q not in self._resynced]:
                self._unregister(query_id)
            self._resynced = None
        self._refresh_indexes(list(self.tables))


# -- the user-facing views of the cache ------------------------------------------------------


def table_name(name: str) -> str:
    """The cache's (and the wire's) name of a table: ``public.msgs`` is ``msgs``."""
    return name[len("public.") :] if name.startswith("public.") else name


class TableView:
    """One table of the client cache and its callbacks: ``rt.table("msgs")`` or
    ``rt.db.msgs``. Reads return snapshots (safe while the cache changes on another
    thread). Key and filter values are the wire's or the matching Python values
    (``Decimal`` for numeric, ``datetime``…): they compare as Postgres' ``=`` does."""

    __slots__ = ("_cache", "name")

    def __init__(self, cache: Cache, name: str) -> None:
        self._cache = cache
        self.name = table_name(name)

    def __repr__(self) -> str:
        return f"<TableView {self.name!r} rows={self.count()}>"

    def _table(self) -> _Table | None:
        return self._cache.tables.get(self.name)

    @property
    def columns(self) -> dict[str, str]:
        """Column name → Postgres type name (empty until a subscription covers it)."""
        with self._cache.lock:
            table = self._table()
            return dict(table.columns) if table else {}

    @property
    def key(self) -> tuple[str, ...]:
        """The primary-key columns (empty for a table without one)."""
        with self._cache.lock:
            table = self._table()
            return table.key if table else ()

    @property
    def indexed_columns(self) -> frozenset[str]:
        """Columns ``filter_by`` finds rows by without a scan: those the current
        subscriptions test for equality (``col = 5``, ``col IN (…)``)."""
        with self._cache.lock:
            table = self._table()
            return frozenset(table.indexes) if table else frozenset()

    def iter(self) -> Iterator[Row]:
        """The rows (a snapshot; identical rows of a keyless table once per copy)."""
        with self._cache.lock:
            table = self._table()
            return iter(table.all_rows() if table else [])

    def __iter__(self) -> Iterator[Row]:
        return self.iter()

    def count(self) -> int:
        with self._cache.lock:
            table = self._table()
            return table.count() if table else 0

    def __len__(self) -> int:
        return self.count()

    def find(self, *key: Any) -> Row | None:
        """The row with this primary key: ``find(5)``, ``find(1, "a")`` or
        ``find((1, "a"))`` for a two-column key; None if absent."""
        with self._cache.lock:
            table = self._table()
            if table is None:
                return None
            if not table.key:
                raise TypeError(f"table {self.name!r} has no primary key: use filter_by()")
            if len(key) == 1 and isinstance(key[0], tuple) and len(table.key) > 1:
                key = key[0]
            if len(key) != len(table.key):
                raise TypeError(f"the key of {self.name!r} is {table.key}, got {key!r}")
            normal = tuple(
                _normal(table.columns.get(c), v) for c, v in zip(table.key, key, strict=True)
            )
            return table.rows.get(normal)

    def filter_by(self, **values: Any) -> list[Row]:
        """The rows whose columns equal ``values`` (``None`` finds NULLs), through an
        index when a column has one (see ``indexed_columns``), else by a scan."""
        if not values:
            return list(self.iter())
        with self._cache.lock:
            table = self._table()
            return table.filter_by(values) if table else []

    # -- callbacks ------------------------------------------------------------------------

    def on_insert(self, callback: Callable[[Row], Any]) -> CallbackHandle:
        """``callback(row)`` for each row that enters the cache."""
        return self._cache.add_table_callback(self.name, "insert", callback)

    def on_update(self, callback: Callable[[Row, Row], Any]) -> CallbackHandle:
        """``callback(old, new)`` for each row that changes (same primary key)."""
        return self._cache.add_table_callback(self.name, "update", callback)

    def on_delete(self, callback: Callable[[Row], Any]) -> CallbackHandle:
        """``callback(row)`` for each row that leaves the cache."""
        return self._cache.add_table_callback(self.name, "delete", callback)

    def on_row_update(
        self, callback: Callable[[Op, Row | None, Row | None, Event], Any]
    ) -> CallbackHandle:
        """``callback(op, old, new, event)`` for every change (``op``: ``"insert"``,
        ``"update"`` or ``"delete"``), after the specific callback."""
        return self._cache.add_table_callback(self.name, "row_update", callback)


class Tables:
    """``rt.db``: the cache's tables as attributes (``rt.db.msgs``) or items
    (``rt.db["other.msgs"]``); iterating gives the names of the tables cached."""

    __slots__ = ("_cache",)

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def __getattr__(self, name: str) -> TableView:
        if name.startswith("_"):
            raise AttributeError(name)
        return TableView(self._cache, name)

    def __getitem__(self, name: str) -> TableView:
        return TableView(self._cache, name)

    def __iter__(self) -> Iterator[str]:
        with self._cache.lock:
            return iter(sorted(self._cache.tables))

    def __repr__(self) -> str:
        return f"<Tables {list(self)}>"
