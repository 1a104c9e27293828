"""One database's realtime hub: its WAL stream, its subscriptions, and the fan-out of
every committed transaction to the connections whose queries it touches.

Exactly once, in order
----------------------
A subscribe registers its queries at once (so the hub starts collecting their changes
for the connection, without sending them), then reads the initial rows in one
``REPEATABLE READ`` snapshot S, with the WAL insert position taken after it (every
transaction S sees committed at or before that position). It then waits until the
stream has dispatched everything up to that position (a barrier transaction written
after it makes the stream pass it even when nothing else commits), so every transaction
S sees is either already sent or collected. S is used only if (1) no transaction the
hub streamed *before* the registration is invisible to it (committed in the WAL but not
yet visible: it would be in neither the rows nor the stream), nor one that committed
before the hub's slot became consistent (never streamed: the snapshot exported with the
slot sees exactly those), and (2) the collected transactions S sees are a prefix of the
collected ones in commit order (otherwise the snapshot saw a later commit and not an
earlier one); else it is read again. Then: the
collected transactions S sees, for the connection's older queries only; the initial
rows; the other collected transactions and everything later, for all the queries.
That is commit order, and each change reaches the client exactly once
(``docs/realtime-protocol.md`` has the whole argument).

Fan-out cost
------------
Matching goes through the engine's subscription index (equality predicates indexed),
so a change costs what the subscriptions it can match cost. Queries are shared between
connections (one matcher per distinct query text), and a transaction's message is
encoded once per distinct set of queries, then queued to every connection holding that
set.

Row-level security
------------------
Each connection acts as its SQL role: its initial rows are read as that role, and the
images of a transaction's changes to tables under row-level security are judged for
each role before the fan-out (``visibility.RowFilter``); a connection gets only the
images its role may see. Policies bound to the caller's identity (row visibility
rules) are judged per viewer, its role and identity (``Client.viewer``), and its
initial rows are read with the proof of its identity set. Tables without row-level
security take the path above unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg import sql

from ... import faults
from ...engine import predicates
from ..modules import events
from .outbox import Outbox
from .pgoutput import Change, Relation, Transaction, format_lsn
from .replication import (
    PUBLICATION,
    Barrier,
    ReplicationStream,
    StreamStopped,
    ensure_publication,
)
from .snapshot import Snapshot, newer_xid
from .values import ValueDecoder
from .visibility import (
    CODE_FAILED,
    REASON_FAILED,
    Closing,
    RowFilter,
    RowSecurityError,
    Viewer,
    Visibility,
)

_log = logging.getLogger("millpond.realtime")

_SNAPSHOT_ATTEMPTS = 200
_REACH_TIMEOUT_S = 30.0
_RECENT_XIDS = 16384
"""How many streamed transactions' xids the hub remembers (to recognize one a snapshot
does not see although it was already streamed)."""


class SubscribeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Client:
    """What the hub knows of one WebSocket connection."""

    id: str
    outbox: Outbox
    identity: Any = None
    """Who the connection acts for: the API key's or end user's principal (access to the
    whole database is checked at connect)."""
    queries: dict[str, str] = field(default_factory=dict)  # query_id -> query key
    keys: frozenset[str] = frozenset()
    syncing: list[tuple[Transaction, list[_Matched]]] | None = None
    """While a subscribe reads its snapshot: the transactions streamed meanwhile that
    concern the connection, each with its changes matched at dispatch (held in order)."""
    guard: Callable[[predicates.BoundQuery], None] | None = None
    """Checks each query before it is subscribed (raising :class:`SubscribeError` to
    refuse it): the flags stream confines a connection to its environment's rows."""
    role: str | None = None
    """The SQL role its own ``SELECT`` runs as (row-level security is judged for it)."""
    reader: SnapshotReader | None = None
    """Reads its initial rows (as ``role``, with the proof of ``sender``); None: the hub's
    reader."""
    sender: str | None = None
    """Its identity, as row visibility rules judge it (``ctx.sender`` of its calls)."""

    @property
    def viewer(self) -> Viewer | None:
        """Who row-level security judges it as; None: no role (the hub's own reads)."""
        return None if self.role is None else (self.role, self.sender)

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put(json.dumps(message, separators=(",", ":")))


@dataclass
class SharedQuery:
    key: str
    sql: str
    table: str  # schema-qualified
    bound: predicates.BoundQuery
    clients: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: dict[str, str]  # name -> type name
    key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def wire_name(self) -> str:
        return self.name if self.schema == "public" else self.qualified


class SnapshotReader(Protocol):
    """Reads tables' structure and initial rows as the subscriber's role."""

    async def table_info(self, schema: str, name: str) -> TableInfo | None: ...

    async def read(
        self, queries: list[tuple[TableInfo, str | None]]
    ) -> tuple[Snapshot, list[list[dict[str, Any]]]]:
        """In one snapshot, the rows of each table matching its WHERE condition (the
        engine's canonical SQL; None: every row)."""
        ...


class Hub:
    def __init__(
        self,
        pg_name: str,
        admin_conninfo: str,
        reader: SnapshotReader,
        on_stream_end: Callable[[Hub], None] | None = None,
        *,
        publication: str = PUBLICATION,
        publication_tables: Sequence[str] | None = None,
        row_filter: RowFilter | None = None,
        replication_conninfo: str | None = None,
        cluster: str = "default",
    ) -> None:
        self.pg_name = pg_name
        self.cluster = cluster
        """The name of the Postgres cluster it streams from (``server/clusters/``)."""
        self.replication_conninfo = replication_conninfo or admin_conninfo
        self.publication = publication
        self.publication_tables = publication_tables
        self.admin_conninfo = admin_conninfo
        self.reader = reader
        self.on_stream_end = on_stream_end
        self.clients: dict[str, Client] = {}
        self.queries: dict[str, SharedQuery] = {}
        self.index = predicates.SubscriptionIndex()
        self.decoder = ValueDecoder()
        self.tables: dict[str, TableInfo] = {}
        self.stream_lsn = 0
        self._stream: ReplicationStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()
        self._finished = False
        """stopped, or its stream ended: a hub is not started twice (the service makes a
        new one), so nothing opens a session for it after it closed its own"""
        self._barrier = Barrier(admin_conninfo)
        self._dispatched = 0
        self._origin: Snapshot | None = None
        """The slot's snapshot: what committed before the stream's first transaction
        (``ReplicationStream.origin``); a subscribe's snapshot must see all of it."""
        self._newest_xid: int | None = None
        self._recent: OrderedDict[int, int] = OrderedDict()
        """xid -> the dispatch number of the streamed transaction"""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._xid_waiters: dict[int, list[asyncio.Future[None]]] = {}
        self.row_filter = row_filter

    # -- lifecycle ----------------------------------------------------------------------

    async def ensure_started(self) -> None:
        async with self._started:
            if self._finished:
                raise StreamStopped(f"the change stream of {self.pg_name} has ended")
            if self._task is not None and not self._task.done():
                return
            await ensure_publication(self.admin_conninfo, self.publication, self.publication_tables)
            slot = f"millpond_{self.pg_name}_{secrets.token_hex(4)}"
            self._stream = ReplicationStream(
                self.replication_conninfo,
                slot,
                self.publication,
                origin_conninfo=self.admin_conninfo,
            )
            self.stream_lsn = await self._stream.open()
            self._origin = self._stream.origin
            self._task = asyncio.create_task(self._run(), name=f"realtime-{self.pg_name}")

    async def stop(self) -> None:
        self._finished = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                pass
        await self._close_sessions()

    async def _close_sessions(self) -> None:
        """The stream's, the barrier's and the row filter's (each may be closed twice)."""
        if self._stream is not None:
            await self._stream.close()
        await self._barrier.close()
        if self.row_filter is not None:
            await self.row_filter.close()

    @property
    def idle(self) -> bool:
        return not self.clients

    @property
    def received_lsn(self) -> int:
        """How far the hub has the WAL (0: its stream has not started): ``/metrics``
        reports the distance to Postgres' current WAL position as its lag."""
        if self._stream is None:
            return 0
        return max(self.stream_lsn, self._stream.received_lsn)

    async def _run(self) -> None:
        assert self._stream is not None
        self._stream.waited = lambda: bool(self._waiters or self._xid_waiters)
        try:
            async for tx in self._stream.transactions():
                if self.row_filter is not None:
                    await self._check_rows(tx, self.row_filter)
                await faults.hit("hub.before_dispatch", self, tx)
                self.dispatch(tx)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("realtime stream for %s failed", self.pg_name)
        finally:
            self._finished = True
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(
                        StreamStopped(f"the change stream of {self.pg_name} ended")
                    )
            if self.on_stream_end is not None:
                self.on_stream_end(self)
            await self._close_sessions()  # nobody else would: the service has let go of it

    # -- clients ------------------------------------------------------------------------

    def connect(self, client: Client) -> None:
        self.clients[client.id] = client

    def disconnect(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self._release(client, list(client.queries.values()))
        client.outbox.close()

    async def subscribe(self, client: Client, request_id: str | None, sqls: list[str]) -> None:
        """Bind the queries, read their rows in a snapshot, then go live, exactly once."""
        if client.syncing is not None:
            raise SubscribeError("bad_message", "wait for the previous subscribe to finish")
        prepared = await self._prepare(sqls)
        if client.guard is not None:
            for bound, _ in prepared:
                client.guard(bound)
        await self.ensure_started()
        new = [(q, info) for q, info in prepared if q.key() not in client.keys]
        new_keys = {q.key() for q, _ in new}
        await self._refresh_rules(client, {info.qualified: info for _, info in new})
        client.syncing = []
        mark = (self._dispatched, self._newest_xid)
        self._register(client, new)
        reader = client.reader or self.reader
        try:
            queries = [(info, q.where_sql()) for q, info in new]
            snapshot, rows = await self._read_consistent(client, reader, queries, mark)
        except BaseException:
            self._release(client, list(new_keys))
            self._flush_sync(client, client.keys, None)
            raise
        applied = self._applied_message(request_id, client, prepared, new, rows)
        self._flush_sync(client, client.keys | new_keys, snapshot, applied)

    async def _read_consistent(
        self,
        client: Client,
        reader: SnapshotReader,
        queries: list[tuple[TableInfo, str | None]],
        mark: tuple[int, int | None],
    ) -> tuple[Snapshot, list[list[dict[str, Any]]]]:
        """The initial rows in a snapshot every transaction is positioned against: read,
        wait for the stream to reach the snapshot's WAL position, check, else again."""
        for attempt in itertools.count():
            await faults.hit("hub.before_snapshot", self, client)
            snapshot, rows = await reader.read(queries)
            await faults.hit("hub.after_snapshot", self, client, snapshot)
            if not snapshot.committed_unseen:  # (it read no rows: no need to wait)
                await self._reach(snapshot.lsn)
            reason = self._unusable(snapshot, mark, client.syncing or [])
            if reason is None:
                return snapshot, rows
            if attempt + 1 >= _SNAPSHOT_ATTEMPTS:
                raise RuntimeError(f"no consistent snapshot after {attempt + 1} tries: {reason}")
            _log.debug("subscribe snapshot of %s read again: %s", self.pg_name, reason)
            await faults.hit("hub.snapshot_retry", self, client, snapshot, reason)
            await asyncio.sleep(0.001 * min(attempt + 1, 20))
        raise AssertionError("unreachable")

    def _unusable(
        self,
        snapshot: Snapshot,
        mark: tuple[int, int | None],
        held: list[tuple[Transaction, list[_Matched]]],
    ) -> str | None:
        """Why the transactions cannot be positioned against ``snapshot`` (None: they can).
        ``mark``: the dispatch count and the newest xid dispatched when the subscription
        started collecting. A transaction streamed before that is committed; if the
        snapshot does not see it, it is listed as running (``xip``) or, when no later xid
        had completed, at or above ``xmax``: both are checked."""
        if snapshot.committed_unseen:
            return "a transaction it lists as running had already committed"
        missed = None if self._origin is None else snapshot.misses(self._origin)
        if missed is not None:
            return f"transaction {missed} committed before the stream started but is not visible"
        count, newest = mark
        unseen = [x for x in snapshot.xip if self._recent.get(x, count + 1) <= count]
        if newest is not None and not snapshot.sees(newest):
            unseen.append(newest)
        if unseen:
            return f"transaction {unseen[0]} was streamed before the subscribe but is not visible"
        first: Transaction | None = None
        for tx, _ in held:
            if not snapshot.sees(tx.xid):
                first = first or tx
            elif first is not None:
                return f"the snapshot sees {tx.xid} but not {first.xid}, which committed first"
        return None

    async def wait_dispatched(self, xid: int, timeout: float) -> bool:
        """Wait until the stream has dispatched transaction ``xid`` (its messages are in
        the outboxes of the connections it concerns); False if not within ``timeout``
        or the stream is not running."""
        if xid in self._recent:
            return True
        if self._task is None or self._task.done():
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._xid_waiters.setdefault(xid, []).append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._xid_waiters.get(xid, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self._xid_waiters.pop(xid, None)

    async def _reach(self, lsn: int) -> None:
        """Wait until the stream has dispatched every transaction that committed at or
        before ``lsn``."""
        if self.stream_lsn >= lsn:
            return
        entry = (lsn, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await self._barrier.emit()  # a commit after lsn: the stream will pass it
            await asyncio.wait_for(asyncio.shield(entry[1]), _REACH_TIMEOUT_S)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def _refresh_rules(self, client: Client, tables: dict[str, TableInfo]) -> None:
        """Row-level security as the initial rows will be read under (see visibility)."""
        if self.row_filter is None or client.role is None:
            return
        for info in tables.values():
            try:
                closing = await self.row_filter.refresh(info.schema, info.name, client.role)
            except RowSecurityError as exc:
                raise SubscribeError(REASON_FAILED, str(exc)) from None
            self._close(closing)

    async def _check_rows(self, tx: Transaction, row_filter: RowFilter) -> None:
        """Judge ``tx``'s row images for each role (before it is fanned out)."""
        try:
            verdict, closing = await row_filter.check(tx, self.index.has_table, self._viewers)
        except Exception:  # fail closed: nobody gets rows no check passed
            _log.exception("row-level security check failed on %s", self.pg_name)
            verdict, closing = Visibility(), []
            verdict.checked.update(id(c) for c in tx.changes if c.kind != "truncate")
            roles = {role for role, _ in self._viewers()}
            closing = [
                Closing(f"{c.relation.schema}.{c.relation.name}", r, CODE_FAILED, REASON_FAILED)
                for c in tx.changes
                for r in roles
            ]
        tx.row_security = verdict
        self._close(closing)

    def _viewers(self) -> set[Viewer]:
        return {c.viewer for c in self.clients.values() if c.viewer is not None}

    def _close(self, closing: list[Closing]) -> None:
        """Disconnect the subscribers of each (role, table) named."""
        for item in closing:
            for client in list(self.clients.values()):
                if client.role == item.role and any(
                    self.queries[k].table == item.table
                    for k in client.queries.values()
                    if k in self.queries
                ):
                    client.outbox.close(item.code, item.reason)

    def unsubscribe(self, client: Client, request_id: str | None, query_ids: list[str]) -> None:
        unknown = [qid for qid in query_ids if qid not in client.queries]
        if unknown:
            raise SubscribeError("unknown_query", f"no query {unknown[0]!r} on this connection")
        keys = [client.queries.pop(qid) for qid in query_ids]
        client.keys = frozenset(client.queries.values())
        self._release(client, keys)
        client.send({"type": "unsubscribed", "request_id": request_id, "query_ids": query_ids})

    # -- subscribe steps ------------------------------------------------------------------

    async def _prepare(self, sqls: Iterable[str]) -> list[tuple[predicates.BoundQuery, TableInfo]]:
        prepared = []
        for text in sqls:
            try:
                query = predicates.parse_query(text)
            except predicates.UnsupportedQuery as exc:
                raise SubscribeError("unsupported_query", str(exc)) from None
            schema = query.schema or "public"
            info = await self.reader.table_info(schema, query.table)
            if info is None:
                raise SubscribeError(
                    "unknown_table", f'table "{schema}.{query.table}" does not exist'
                )
            if query.join is not None:
                raise SubscribeError(
                    "unsupported_query", "joins are not supported in subscriptions yet"
                )
            try:
                bound = predicates.bind(query, info.columns)
            except predicates.UnsupportedQuery as exc:
                raise SubscribeError("unsupported_query", str(exc)) from None
            self.tables[info.qualified] = info
            prepared.append((bound, info))
        return prepared

    def _register(self, client: Client, new: list[tuple[predicates.BoundQuery, TableInfo]]) -> None:
        for bound, info in new:
            key = bound.key()
            shared = self.queries.get(key)
            if shared is None:
                shared = SharedQuery(key, bound.to_sql(), info.qualified, bound)
                self.queries[key] = shared
                self.index.add(key, bound)
            shared.clients.add(client.id)

    def _release(self, client: Client, keys: list[str]) -> None:
        for key in keys:
            shared = self.queries.get(key)
            if shared is None:
                continue
            shared.clients.discard(client.id)
            if not shared.clients:
                del self.queries[key]
                self.index.remove(key)

    def _applied_message(
        self,
        request_id: str | None,
        client: Client,
        prepared: list[tuple[predicates.BoundQuery, TableInfo]],
        new: list[tuple[predicates.BoundQuery, TableInfo]],
        rows: list[list[dict[str, Any]]],
    ) -> dict[str, Any]:
        by_key = {v: k for k, v in client.queries.items()}
        listed = []
        for bound, info in prepared:
            key = bound.key()
            query_id = by_key.get(key)
            if query_id is None:
                query_id = f"q{secrets.token_hex(6)}"
                client.queries[query_id] = key
                by_key[key] = query_id
            listed.append({"query_id": query_id, "sql": bound.to_sql(), "table": info.wire_name})
        tables: dict[str, Any] = {}
        for (_, info), table_rows in zip(new, rows, strict=True):
            entry = tables.setdefault(
                info.wire_name,
                {
                    "columns": [{"name": n, "type": t} for n, t in info.columns.items()],
                    "key": list(info.key),
                    "rows": [],
                },
            )
            entry["rows"].extend(table_rows)
        return {
            "type": "subscription_applied",
            "request_id": request_id,
            "queries": listed,
            "tables": tables,
        }

    def _flush_sync(
        self,
        client: Client,
        keys: frozenset[str],
        snapshot: Snapshot | None,
        applied: dict[str, Any] | None = None,
    ) -> None:
        """Go live: the collected transactions the snapshot saw, for the older queries
        (their effect on the new ones is in the initial rows); the initial rows; the
        other collected transactions, for all of ``keys``. The ones the snapshot saw are
        the first ones (``_unusable``), so this is commit order."""
        held = client.syncing or []
        client.syncing = None
        cut = 0
        if snapshot is not None:
            while cut < len(held) and snapshot.sees(held[cut][0].xid):
                tx, matched = held[cut]
                self._deliver_one(client, tx, client.keys, matched)
                cut += 1
        if applied is not None:
            client.send(applied)
        client.keys = keys
        for tx, matched in held[cut:]:  # matched at dispatch: the new queries were in
            self._deliver_one(client, tx, keys, matched)

    # -- dispatch -------------------------------------------------------------------------

    def dispatch(self, tx: Transaction) -> None:
        """Fan one committed transaction out to the connections it concerns."""
        self.stream_lsn = max(self.stream_lsn, tx.end_lsn)
        self._dispatched += 1
        self._recent[tx.xid] = self._dispatched
        if self._newest_xid is None or newer_xid(tx.xid, self._newest_xid):
            self._newest_xid = tx.xid
        if len(self._recent) > _RECENT_XIDS:
            self._recent.popitem(last=False)
        for waiter in self._xid_waiters.pop(tx.xid, ()):
            if not waiter.done():  # it runs after this dispatch: the rows are queued first
                waiter.set_result(None)
        if self._waiters:
            for lsn, waiter in self._waiters:
                if lsn <= self.stream_lsn and not waiter.done():
                    waiter.set_result(None)
        matched = self._match(tx)
        if not matched:
            return
        touched: set[str] = set()
        for m in matched:
            for key in m.old_keys | m.new_keys:
                touched.update(self.queries[key].clients)
        groups: dict[tuple[frozenset[str], Viewer | None], list[Client]] = defaultdict(list)
        for client_id in touched:
            client = self.clients.get(client_id)
            if client is None:
                continue
            if client.syncing is not None:
                client.syncing.append((tx, matched))
            else:
                groups[(client.keys, _seen_as(tx, client))].append(client)
        for (keys, viewer), clients in groups.items():
            message = self._encode(tx, matched, keys, viewer)
            if message is not None:
                for client in clients:
                    client.outbox.put(message)

    def _deliver_one(
        self,
        client: Client,
        tx: Transaction,
        keys: frozenset[str],
        matched: list[_Matched] | None = None,
    ) -> None:
        found = matched if matched is not None else self._match(tx)
        message = self._encode(tx, found, keys, _seen_as(tx, client))
        if message is not None:
            client.outbox.put(message)

    def _match(self, tx: Transaction) -> list[_Matched]:
        """Each change of ``tx`` with the queries its old and its new row match."""
        result: list[_Matched] = []
        for change in tx.changes:
            table = f"{change.relation.schema}.{change.relation.name}"
            if not self.index.has_table(table):
                continue
            if change.kind == "truncate":
                keys = {k for k, q in self.queries.items() if q.table == table}
                result.append(_Matched(change, frozenset(keys), frozenset(), self.decoder))
                continue
            old = self._python(change.relation, change.old)
            new = self._python(change.relation, change.new)
            old_keys = self._matching(table, old)
            new_keys = self._matching(table, new)
            if old_keys or new_keys:
                result.append(_Matched(change, old_keys, new_keys, self.decoder))
        return result

    def _matching(self, table: str, row: dict[str, Any] | None) -> frozenset[str]:
        if row is None:
            return frozenset()
        return frozenset(str(key) for key in self.index.matching(table, row))

    def _python(self, relation: Relation, row: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else self.decoder.decode(relation, row, as_json=False)

    def _encode(
        self,
        tx: Transaction,
        matched: list[_Matched],
        keys: frozenset[str],
        viewer: Viewer | None = None,
    ) -> str | None:
        """The message for connections with queries ``keys`` (seen as ``viewer``)."""
        tables: dict[str, dict[str, Any]] = {}
        verdict = tx.row_security if isinstance(tx.row_security, Visibility) else None
        for m in matched:
            change = m.change
            before, after = bool(m.old_keys & keys), bool(m.new_keys & keys)
            if verdict is not None and (before or after):
                seen_old, seen_new = verdict.allows(viewer, change)
                before, after = before and seen_old, after and seen_new
            if not (before or after):
                continue
            info = self.tables.get(f"{change.relation.schema}.{change.relation.name}")
            name = info.wire_name if info else change.relation.name
            entry = tables.setdefault(name, {})
            if change.kind == "truncate":
                entry["truncated"] = True
                continue
            old = m.old_json() if before else None
            new = m.new_json() if after else None
            if before and after and info is not None and info.key and _same_key(info, old, new):
                entry.setdefault("updates", []).append({"old": old, "new": new})
                continue
            if before:
                entry.setdefault("deletes", []).append(old)
            if after:
                entry.setdefault("inserts", []).append(new)
        if not tables:
            return None
        message: dict[str, Any] = {
            "type": "transaction",
            "lsn": format_lsn(tx.commit_lsn),
            "xid": tx.xid,
            "commit_time": tx.commit_time.isoformat(),
            "tables": tables,
        }
        event = reducer_event(tx)
        if event is not None:
            message["reducer"] = event
        return json.dumps(message, separators=(",", ":"))


class _Matched:
    """A change with the queries its old and new rows match; its rows' wire form is
    decoded once, on first use, however many messages it goes into."""

    __slots__ = ("_new", "_old", "change", "decoder", "new_keys", "old_keys")

    def __init__(
        self,
        change: Change,
        old_keys: frozenset[str],
        new_keys: frozenset[str],
        decoder: ValueDecoder,
    ) -> None:
        self.change = change
        self.old_keys = old_keys
        self.new_keys = new_keys
        self.decoder = decoder
        self._old: dict[str, Any] | None = None
        self._new: dict[str, Any] | None = None

    def old_json(self) -> dict[str, Any]:
        if self._old is None:
            self._old = self.decoder.decode(self.change.relation, self.change.old or {}, True)
        return self._old

    def new_json(self) -> dict[str, Any]:
        if self._new is None:
            self._new = self.decoder.decode(self.change.relation, self.change.new or {}, True)
        return self._new


def reducer_event(tx: Transaction) -> dict[str, Any] | None:
    """The event of the reducer whose call this transaction is, or None (a write that
    did not come from a reducer: SQL, the gateway, an import…)."""
    for message in tx.messages:
        if message.prefix == events.PREFIX:
            return events.decode(message.content)
    return None


def _seen_as(tx: Transaction, client: Client) -> Viewer | None:
    """Whose row-level security verdict on ``tx`` the client gets (None: no verdict)."""
    if isinstance(tx.row_security, Visibility):
        return tx.row_security.seen_as(client.role, client.sender)
    return None


def _same_key(info: TableInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    if old is None or new is None:
        return False
    return all(old.get(k) == new.get(k) for k in info.key)


def qualified(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
