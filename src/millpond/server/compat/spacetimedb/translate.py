"""One SpacetimeDB 0.7 connection's translation, both ways, without I/O.

The server speaks millpond's realtime protocol (docs/realtime-protocol.md) to its hub as
for any connection; a :class:`Translator` turns what the hub sends into what the 0.7 SDK
reads (``IdentityToken``, ``SubscriptionUpdate``, ``TransactionUpdate``) and what the SDK
sends (``subscribe``, ``call``) into millpond's requests. It keeps what the translation
needs: the module's definition (column order and types), the row ids sent per table
(a ``TRUNCATE`` deletes them all), the calls in flight, and the transactions delivered
(a committed call whose rows the connection saw gets no second update).
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from millpond.codegen.spacetimedb import cache_name
from millpond.module._def import ModuleDef, ReducerDef, TableDef, TypeRef

from . import sats

_RECENT_XIDS = 1024
_SELECT = re.compile(
    r"\s*SELECT\s+\*\s+FROM\s+(?P<table>\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_]*)"
    r"(?P<rest>(?:\s+WHERE\s.*?)?)\s*;?\s*",
    re.IGNORECASE | re.DOTALL,
)
PLAIN = TypeRef("jsonb")
"""The type of a column the module does not declare: its wire value as it is."""


class CompatError(ValueError):
    """A message of the client that 0.7 does not define (the connection is closed)."""


@dataclass
class _Table:
    wire: str
    """Its name in SpacetimeDB's messages (the module's class name)."""
    table_id: int
    columns: list[tuple[str, TypeRef]]
    key: list[int]
    row_ids: dict[str, None] = field(default_factory=dict)


@dataclass
class Call:
    reducer: str
    args: list[Any]


class Translator:
    def __init__(self, token: str) -> None:
        self.token = token
        self.module: ModuleDef | None = None
        self.identity = sats.NO_IDENTITY
        self.address = "00" * 16
        self.close: tuple[int, str] | None = None
        """Set when the connection must end (code, reason): 0.7 has no error message."""
        self._tables: dict[str, _Table] = {}
        self._calls: dict[str, Call] = {}
        self._delivered: OrderedDict[int, None] = OrderedDict()
        self._requests = 0

    # -- the client's messages ----------------------------------------------------------

    def request(self, text: str) -> dict[str, Any] | None:
        """The millpond request a 0.7 message stands for; :class:`CompatError` if none."""
        try:
            message = json.loads(text)
        except ValueError:
            raise CompatError("messages must be JSON") from None
        if not isinstance(message, dict) or len(message) != 1:
            raise CompatError("a message is an object with one of 'subscribe', 'call'")
        kind, body = next(iter(message.items()))
        if not isinstance(body, dict):
            raise CompatError(f"'{kind}' must be an object")
        self._requests += 1
        request_id = f"stdb{self._requests}"
        if kind == "subscribe":
            queries = body.get("query_strings")
            if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
                raise CompatError("'query_strings' must be a list of strings")
            if not queries:
                return None
            return {
                "type": "subscribe",
                "request_id": request_id,
                "queries": [self.query(q) for q in queries],
            }
        if kind == "call":
            reducer, args = body.get("fn"), body.get("args", [])
            if not isinstance(reducer, str) or not isinstance(args, list):
                raise CompatError("a call is {'fn': reducer name, 'args': [...]}")
            self._calls[request_id] = Call(reducer, args)
            return {
                "type": "call",
                "request_id": request_id,
                "reducer": reducer,
                "args": self._native_args(reducer, args),
            }
        raise CompatError(f"unsupported message {kind!r} (0.7 clients send subscribe, call)")

    def query(self, text: str) -> str:
        """A 0.7 query with its table named as the module names it: SpacetimeDB's SQL is
        case-sensitive (``SELECT * FROM User`` means table ``User``, which Postgres would
        read as ``user``, a keyword): the class name or table name, quoted."""
        found = _SELECT.fullmatch(text)
        if found is None or self.module is None:
            return text
        name = found["table"]
        for table in self.module.tables:
            if name in (table.class_name, table.name):
                return f'SELECT * FROM "{table.name}"{found["rest"]}'
        return text

    def _native_args(self, reducer: str, args: list[Any]) -> list[Any]:
        definition = self._reducer(reducer)
        if definition is None or self.module is None:
            return args
        try:
            return sats.args_from_sats(definition, args, self.module)
        except sats.SatsError:
            return args  # the call's own check refuses them, with its message

    def _reducer(self, name: str) -> ReducerDef | None:
        if self.module is None:
            return None
        try:
            return self.module.reducer(name)
        except KeyError:
            return None

    # -- the server's messages ----------------------------------------------------------

    def translate(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The 0.7 messages for one millpond message (none for heartbeats and answers
        0.7 does not have)."""
        kind = message.get("type")
        if kind == "hello":
            return [self._hello(message)]
        if kind == "subscription_applied":
            return [self._applied(message)]
        if kind == "transaction":
            return [self._transaction(message)]
        if kind == "call_result":
            return self._call_result(message)
        if kind == "error":
            code, text = str(message.get("code")), str(message.get("message"))
            self.close = (1008, _reason(f"{code}: {text}"))
        return []

    def _hello(self, message: dict[str, Any]) -> dict[str, Any]:
        self.identity = str(message.get("identity") or sats.NO_IDENTITY)
        self.address = sats.address_of(message.get("connection_id"))
        token = message.get("token") or self.token
        return {
            "IdentityToken": {"identity": self.identity, "token": token, "address": self.address}
        }

    def _applied(self, message: dict[str, Any]) -> dict[str, Any]:
        updates = []
        for wire, entry in (message.get("tables") or {}).items():
            table = self._table(wire, entry)
            ops = [self._op(table, "insert", row) for row in entry.get("rows", ())]
            updates.append(_update(table, ops))
        return {"SubscriptionUpdate": {"table_updates": updates}}

    def _table(self, wire: str, entry: dict[str, Any]) -> _Table:
        known = self._tables.get(wire)
        if known is not None:
            return known
        native = [c["name"] for c in entry.get("columns", ())]
        declared = self._declared(wire)
        if declared is not None:
            columns = [(c.name, c.type) for c in declared.columns]
            name = cache_name(declared.class_name)
        else:
            columns = [(c, PLAIN) for c in native]
            name = wire
        names = [c for c, _ in columns]
        key = [names.index(k) for k in entry.get("key", ()) if k in names]
        table = _Table(name, len(self._tables) + 1, columns, key)
        self._tables[wire] = table
        return table

    def _declared(self, wire: str) -> TableDef | None:
        if self.module is None:
            return None
        for table in self.module.tables:
            if table.name == wire:
                return table
        return None

    def _op(self, table: _Table, op: str, row: dict[str, Any]) -> dict[str, Any]:
        values = [sats.encode(row.get(name), kind, self.module) for name, kind in table.columns]
        key = [values[i] for i in table.key] if table.key else None
        row_id = sats.row_pk(table.wire, key, values)
        if op == "insert":
            table.row_ids[row_id] = None
            return {"op": "insert", "row_pk": row_id, "row": values}
        table.row_ids.pop(row_id, None)
        return {"op": "delete", "row_pk": row_id, "row": values}

    def _transaction(self, message: dict[str, Any]) -> dict[str, Any]:
        xid = message.get("xid")
        if isinstance(xid, int):
            self._delivered[xid] = None
            if len(self._delivered) > _RECENT_XIDS:
                self._delivered.popitem(last=False)
        updates = []
        for wire, entry in (message.get("tables") or {}).items():
            table = self._tables.get(wire) or self._table(wire, {})
            ops: list[dict[str, Any]] = []
            if entry.get("truncated"):
                ops += [{"op": "delete", "row_pk": r, "row": []} for r in table.row_ids]
                table.row_ids.clear()
            ops += [self._op(table, "delete", row) for row in entry.get("deletes", ())]
            for change in entry.get("updates", ()):
                ops.append(self._op(table, "delete", change["old"]))
                ops.append(self._op(table, "insert", change["new"]))
            ops += [self._op(table, "insert", row) for row in entry.get("inserts", ())]
            updates.append(_update(table, ops))
        event = message.get("reducer")
        if isinstance(event, dict):
            body = self._event(
                event.get("reducer", ""),
                sats.args_to_sats(
                    self._reducer(str(event.get("reducer"))), event.get("args"), self.module
                ),
                str(event.get("sender") or sats.NO_IDENTITY),
                sats.address_of(event.get("connection_id")),
                _micros(event.get("timestamp")),
            )
        else:  # a write no reducer made
            body = self._event(
                "", [], sats.NO_IDENTITY, "00" * 16, _micros(message.get("commit_time"))
            )
        return {
            "TransactionUpdate": {"event": body, "subscription_update": {"table_updates": updates}}
        }

    def _call_result(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        call = self._calls.pop(str(message.get("request_id")), None)
        if call is None:
            return []
        now = _micros(None)
        error = message.get("error")
        if isinstance(error, dict):
            body = self._event(call.reducer, call.args, self.identity, self.address, now)
            body["status"] = "failed"
            body["message"] = str(error.get("message") or error.get("code") or "failed")
        else:
            outcome = message.get("outcome") or {}
            if outcome.get("xid") in self._delivered:
                return []  # the caller saw the transaction, with its event
            body = self._event(call.reducer, call.args, self.identity, self.address, now)
        empty: dict[str, Any] = {"table_updates": []}
        return [{"TransactionUpdate": {"event": body, "subscription_update": empty}}]

    @staticmethod
    def _event(
        reducer: str, args: list[Any], caller: str, address: str, timestamp: int
    ) -> dict[str, Any]:
        return {
            "timestamp": timestamp,
            "status": "committed",
            "caller_identity": caller,
            "caller_address": address,
            "function_call": {"reducer": reducer, "args": json.dumps(args)},
            "energy_quanta_used": 0,
            "message": "",
        }


def _update(table: _Table, ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"table_id": table.table_id, "table_name": table.wire, "table_row_operations": ops}


def _micros(value: Any) -> int:
    """Microseconds since the epoch of an ISO timestamp; of now when there is none."""
    if isinstance(value, str):
        try:
            return sats.micros(value)
        except ValueError:
            pass
    return time.time_ns() // 1000


def _reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8."""
    data = text.encode()[:120]
    return data.decode(errors="ignore")
