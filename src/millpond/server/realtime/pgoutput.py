"""Decode the ``pgoutput`` logical replication protocol (version 1), sans I/O.

:func:`parse` turns one XLogData payload into a message; :class:`Assembler` turns the
message stream into whole committed :class:`Transaction` objects with their row changes,
keeping the relation (table) descriptions the stream announces. Column values stay in
Postgres' text form here (``str``, or ``None`` for NULL, or :data:`UNCHANGED` for a
TOASTed value an UPDATE did not touch); decoding them to Python values is the caller's
business, since only it knows which loaders to use.

Message formats: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
Value = str | None | _Unchanged


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d(efault) n(othing) f(ull) i(ndex)
    columns: tuple[Column, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_key)


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class RowMessage:
    kind: Literal["insert", "update", "delete"]
    relation_oid: int
    old: tuple[Value, ...] | None
    new: tuple[Value, ...] | None
    old_is_key_only: bool = False


@dataclass(frozen=True)
class Truncate:
    relation_oids: tuple[int, ...]


@dataclass(frozen=True)
class LogicalMessage:
    """A ``pg_logical_emit_message`` (streamed with ``messages 'true'``); a
    transactional one arrives between its transaction's BEGIN and COMMIT, never if the
    transaction rolled back."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True)
class Ignored:
    tag: str


Message = Begin | Commit | Relation | RowMessage | Truncate | LogicalMessage | Ignored


@dataclass(frozen=True)
class Change:
    kind: Literal["insert", "update", "delete", "truncate"]
    relation: Relation
    old: dict[str, Value] | None = None
    new: dict[str, Value] | None = None


@dataclass
class Transaction:
    xid: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime
    changes: list[Change] = field(default_factory=list)
    messages: list[LogicalMessage] = field(default_factory=list)
    """The transaction's transactional logical messages, in stream order."""
    row_security: object = field(default=None, compare=False, repr=False)
    """The realtime hub's row-level security verdict on the changes (its business)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def byte(self) -> str:
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def tuple_data(self) -> tuple[Value, ...]:
        values: list[Value] = []
        for _ in range(self.take("!h")):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind == "t":
                length = self.take("!i")
                values.append(self.data[self.pos : self.pos + length].decode())
                self.pos += length
            else:
                raise ValueError(f"unexpected tuple value kind {kind!r}")
        return tuple(values)


def _time(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


def parse(data: bytes) -> Message:
    """Parse one pgoutput message (the payload of an XLogData)."""
    r = _Reader(data)
    tag = r.byte()
    if tag == "B":
        return Begin(final_lsn=r.take("!Q"), commit_time=_time(r.take("!q")), xid=r.take("!I"))
    if tag == "C":
        r.byte()  # flags
        return Commit(
            commit_lsn=r.take("!Q"), end_lsn=r.take("!Q"), commit_time=_time(r.take("!q"))
        )
    if tag == "R":
        return _relation(r)
    if tag == "I":
        oid = r.take("!I")
        r.byte()  # 'N'
        return RowMessage("insert", oid, None, r.tuple_data())
    if tag == "U":
        return _update(r)
    if tag == "D":
        oid = r.take("!I")
        kind = r.byte()  # 'K' (key only) or 'O' (old row)
        return RowMessage("delete", oid, r.tuple_data(), None, old_is_key_only=kind == "K")
    if tag == "M":
        flags = r.take("!B")
        lsn = r.take("!Q")
        prefix = r.string()
        length = r.take("!i")
        return LogicalMessage(bool(flags & 1), lsn, prefix, data[r.pos : r.pos + length])
    if tag == "T":
        count = r.take("!i")
        r.byte()  # options
        return Truncate(tuple(r.take("!I") for _ in range(count)))
    return Ignored(tag)


def _relation(r: _Reader) -> Relation:
    oid = r.take("!I")
    schema = r.string()
    name = r.string()
    identity = r.byte()
    columns = []
    for _ in range(r.take("!h")):
        flags = r.take("!b")
        col_name = r.string()
        type_oid = r.take("!I")
        r.take("!i")  # typmod
        columns.append(Column(col_name, type_oid, bool(flags & 1)))
    return Relation(oid, schema, name, identity, tuple(columns))


def _update(r: _Reader) -> RowMessage:
    oid = r.take("!I")
    kind = r.byte()
    old = None
    key_only = False
    if kind in ("K", "O"):
        key_only = kind == "K"
        old = r.tuple_data()
        kind = r.byte()
    if kind != "N":
        raise ValueError(f"unexpected update tuple kind {kind!r}")
    return RowMessage("update", oid, old, r.tuple_data(), old_is_key_only=key_only)


class Assembler:
    """Feed messages in stream order; get each transaction back when it commits."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._current: Transaction | None = None

    @property
    def idle(self) -> bool:
        """No transaction is half-received (a keepalive's LSN may be acknowledged)."""
        return self._current is None

    def feed(self, message: Message) -> Transaction | None:
        if isinstance(message, Relation):
            self.relations[message.oid] = message
        elif isinstance(message, Begin):
            self._current = Transaction(message.xid, message.final_lsn, 0, message.commit_time)
        elif isinstance(message, Commit):
            done, self._current = self._current, None
            if done is not None:
                done.commit_lsn = message.commit_lsn
                done.end_lsn = message.end_lsn
                return done
        elif isinstance(message, RowMessage) and self._current is not None:
            self._current.changes.append(self._row_change(message))
        elif isinstance(message, LogicalMessage) and self._current is not None:
            if message.transactional:
                self._current.messages.append(message)
        elif isinstance(message, Truncate) and self._current is not None:
            for oid in message.relation_oids:
                self._current.changes.append(Change("truncate", self.relations[oid]))
        return None

    def _row_change(self, message: RowMessage) -> Change:
        rel = self.relations[message.relation_oid]
        names = [c.name for c in rel.columns]
        old = dict(zip(names, message.old, strict=True)) if message.old is not None else None
        new = dict(zip(names, message.new, strict=True)) if message.new is not None else None
        if new is not None and old is not None:
            for name, value in new.items():
                if value is UNCHANGED and old.get(name) is not UNCHANGED:
                    new[name] = old[name]
        return Change(message.kind, rel, old, new)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
