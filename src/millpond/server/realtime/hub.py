"""One database's realtime hub: its WAL stream, its subscriptions, and the fan-out of
every committed transaction to the connections whose queries it touches.

Exactly once, in order
----------------------
A subscribe registers its queries at once (so the hub starts collecting their changes
for the connection, without sending them), then reads the initial rows in one
``REPEATABLE READ`` snapshot and notes that snapshot. The initial rows go out, then the
collected transactions in commit order: those the snapshot already saw count only for
the connection's older queries, the others for all of them. Until the stream has passed
the snapshot's WAL position, later transactions are checked against it the same way, in
case the stream was behind. Every change after the snapshot reaches the client once, none before it.

Fan-out cost
------------
Matching goes through the engine's subscription index (equality predicates indexed),
so a change costs what the subscriptions it can match cost. Queries are shared between
connections (one matcher per distinct query text), and a transaction's message is
encoded once per distinct set of queries, then queued to every connection holding that
set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg import sql

from ...engine import predicates
from .outbox import Outbox
from .pgoutput import Change, Relation, Transaction, format_lsn
from .replication import PUBLICATION, ReplicationStream, ensure_publication
from .snapshot import Snapshot
from .values import ValueDecoder

_log = logging.getLogger("millpond.realtime")


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
    """Who the connection acts for: today the API key's principal (access to the whole
    database is checked at connect). The seam for end-user identities: a per-identity
    row filter would apply in ``Hub._encode`` and to the initial rows."""
    queries: dict[str, str] = field(default_factory=dict)  # query_id -> query key
    keys: frozenset[str] = frozenset()
    syncing: list[Transaction] | None = None
    filters: dict[str, Snapshot] = field(default_factory=dict)
    guard: Callable[[predicates.BoundQuery], None] | None = None
    """Checks each query before it is subscribed (raising :class:`SubscribeError` to
    refuse it): the flags stream confines a connection to its environment's rows."""

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
    ) -> None:
        self.pg_name = pg_name
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
        self._filtered_clients: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def ensure_started(self) -> None:
        async with self._started:
            if self._task is not None and not self._task.done():
                return
            await ensure_publication(self.admin_conninfo, self.publication, self.publication_tables)
            slot = f"millpond_{self.pg_name}_{secrets.token_hex(4)}"
            self._stream = ReplicationStream(self.admin_conninfo, slot, self.publication)
            self.stream_lsn = await self._stream.open()
            self._task = asyncio.create_task(self._run(), name=f"realtime-{self.pg_name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                pass
        if self._stream is not None:
            await self._stream.close()

    @property
    def idle(self) -> bool:
        return not self.clients

    async def _run(self) -> None:
        assert self._stream is not None
        try:
            async for tx in self._stream.transactions():
                self.dispatch(tx)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("realtime stream for %s failed", self.pg_name)
        finally:
            if self.on_stream_end is not None:
                self.on_stream_end(self)

    # -- clients ------------------------------------------------------------------------

    def connect(self, client: Client) -> None:
        self.clients[client.id] = client

    def disconnect(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self._filtered_clients.discard(client.id)
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
        client.syncing = []
        self._register(client, new)
        try:
            snapshot, rows = await self.reader.read([(info, q.where_sql()) for q, info in new])
        except BaseException:
            self._release(client, list(new_keys))
            self._flush_sync(client, client.keys, None, [])
            raise
        applied = self._applied_message(request_id, client, prepared, new, rows)
        self._flush_sync(client, client.keys | new_keys, snapshot, list(new_keys), applied)

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
        new_keys: list[str],
        applied: dict[str, Any] | None = None,
    ) -> None:
        """Go live: send the initial rows, then the transactions collected meanwhile,
        in commit order. The snapshot filter hides the new queries from the transactions
        it already saw (their effects are in the initial rows), so each change reaches
        the client once and the connection's transactions stay in commit order (Postgres
        may make transactions visible in another order than they commit, so the ones the
        snapshot saw are not simply the first ones)."""
        held = client.syncing or []
        client.syncing = None
        if snapshot is not None:
            for key in new_keys:
                client.filters[key] = snapshot
            self._filtered_clients.add(client.id)
        if applied is not None:
            client.send(applied)
        client.keys = keys
        for tx in held:
            self._deliver_one(client, tx, self._keys_for(client, tx))

    # -- dispatch -------------------------------------------------------------------------

    def dispatch(self, tx: Transaction) -> None:
        """Fan one committed transaction out to the connections it concerns."""
        self.stream_lsn = max(self.stream_lsn, tx.end_lsn)
        self._expire_filters()
        matched = self._match(tx)
        if not matched:
            return
        touched: set[str] = set()
        for m in matched:
            for key in m.old_keys | m.new_keys:
                touched.update(self.queries[key].clients)
        groups: dict[frozenset[str], list[Client]] = defaultdict(list)
        for client_id in touched:
            client = self.clients.get(client_id)
            if client is None:
                continue
            if client.syncing is not None:
                client.syncing.append(tx)
            elif client.id in self._filtered_clients:
                self._deliver_one(client, tx, self._keys_for(client, tx), matched)
            else:
                groups[client.keys].append(client)
        for keys, clients in groups.items():
            message = self._encode(tx, matched, keys)
            if message is not None:
                for client in clients:
                    client.outbox.put(message)

    def _keys_for(self, client: Client, tx: Transaction) -> frozenset[str]:
        hidden = {k for k, snap in client.filters.items() if snap.sees(tx.xid)}
        return client.keys - hidden if hidden else client.keys

    def _expire_filters(self) -> None:
        for client_id in list(self._filtered_clients):
            client = self.clients.get(client_id)
            if client is None:
                self._filtered_clients.discard(client_id)
                continue
            for key, snap in list(client.filters.items()):
                if self.stream_lsn >= snap.lsn:
                    del client.filters[key]
            if not client.filters:
                self._filtered_clients.discard(client_id)

    def _deliver_one(
        self,
        client: Client,
        tx: Transaction,
        keys: frozenset[str],
        matched: list[_Matched] | None = None,
    ) -> None:
        message = self._encode(tx, matched if matched is not None else self._match(tx), keys)
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

    def _encode(self, tx: Transaction, matched: list[_Matched], keys: frozenset[str]) -> str | None:
        tables: dict[str, dict[str, Any]] = {}
        for m in matched:
            change = m.change
            before, after = bool(m.old_keys & keys), bool(m.new_keys & keys)
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
        return json.dumps(
            {
                "type": "transaction",
                "lsn": format_lsn(tx.commit_lsn),
                "xid": tx.xid,
                "commit_time": tx.commit_time.isoformat(),
                "tables": tables,
            },
            separators=(",", ":"),
        )


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


def _same_key(info: TableInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    if old is None or new is None:
        return False
    return all(old.get(k) == new.get(k) for k in info.key)


def qualified(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
