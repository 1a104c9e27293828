"""What a reducer sees inside a worker: :class:`Context` (``ReducerContext``), the table
handles on ``ctx.db`` (:class:`TableAccess`) over the worker's psycopg connection, and
:class:`Logs`, which collects ``ctx.log``, ``print`` and ``sys.stderr`` into the outcome.

Each table's SQL is composed once per worker and run as prepared statements, through
libpq directly (``statements.py``), so a call costs its own statements and little more."""

from __future__ import annotations

import dataclasses
import datetime
import io
import logging
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from millpond.module._def import ColumnDef, TableDef
from millpond.module._types import Identity
from millpond.module._values import from_db, to_db

from .statements import Prepared

SCHEMA = "public"
"""Module tables live in the database's ``public`` schema (see ``schema.py``)."""

MAX_LOG_LINES = 1000
MAX_LOG_LINE = 8192
MAX_LOG_BYTES = 512 * 1024


class TableAccess:
    """``ctx.db.<table>``: rows of one table as instances of its class."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        table: TableDef,
        row_class: type,
        records: Mapping[str, type],
        prepared: Prepared | None = None,
    ) -> None:
        self._conn = conn
        self._prepared = prepared or Prepared(conn)
        self._table = table
        self._class = row_class
        self._records = records
        self._name = sql.Identifier(SCHEMA, table.name)
        self._columns = table.columns
        self._key = [table.column(name) for name in table.primary_key]
        self._select = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        self._by_key = _equals(self._key)
        self._insert: dict[tuple[str, ...], bytes] = {}
        self._filter: dict[tuple[tuple[str, bool], ...], bytes] = {}
        self._find = self._sql("SELECT {cols} FROM {t} WHERE {key}")
        self._update = self._sql(
            "UPDATE {t} SET {set} WHERE {key} RETURNING {cols}",
            set=sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(c.name)) for c in self._columns
            ),
        )
        self._delete = self._sql("DELETE FROM {t} WHERE {key}")
        self._count = self._sql("SELECT count(*) FROM {t}")
        self._all = self._sql("SELECT {cols} FROM {t} ORDER BY {order}")

    @property
    def definition(self) -> TableDef:
        return self._table

    @property
    def row_class(self) -> type:
        return self._class

    def statement(self, template: str) -> bytes:
        """``template`` with ``{t}`` (this table) and ``{cols}`` (its columns, in order)
        filled in: for the server's own statements on the table (a scheduled run's claim)."""
        return self._sql(template)

    def row(self, values: Sequence[Any]) -> Any:
        """A row of this table from its columns' values, in order."""
        return self._row(values)

    def _sql(self, template: str, **parts: sql.Composable) -> bytes:
        order = sql.SQL(", ").join(sql.Identifier(c.name) for c in self._key)
        query = sql.SQL(template).format(
            t=self._name, cols=self._select, key=self._by_key, order=order, **parts
        )
        return query.as_bytes(self._conn)

    # -- TableHandle ------------------------------------------------------------------

    def insert(self, row: Any) -> Any:
        self._check(row)
        given = [c for c in self._columns if not (c.auto_inc and getattr(row, c.name) in (0, None))]
        query = self._insert_sql(tuple(c.name for c in given))
        return self._one(query, [to_db(getattr(row, c.name), c.type) for c in given])

    def update(self, row: Any) -> Any:
        self._check(row)
        params = [to_db(getattr(row, c.name), c.type) for c in self._columns]
        updated = self._one(self._update, params + self._key_of(row))
        if updated is None:
            raise LookupError(f"{self._table.name}: no row with key {self._show_key(row)}")
        return updated

    def delete(self, row: Any) -> bool:
        self._check(row)
        _, count = self._prepared.run(self._delete, self._key_of(row))
        return count > 0

    def find(self, *key: Any) -> Any:
        if len(key) != len(self._key):
            raise TypeError(
                f"{self._table.name}.find takes the primary key "
                f"({', '.join(c.name for c in self._key)}), got {len(key)} values"
            )
        return self._one(
            self._find, [to_db(v, c.type) for v, c in zip(key, self._key, strict=True)]
        )

    def filter_by(self, **columns: Any) -> list[Any]:
        chosen = []
        for name, value in columns.items():
            try:
                chosen.append((self._table.column(name), value))
            except KeyError:
                raise TypeError(f"{self._table.name} has no column {name!r}") from None
        shape = tuple((c.name, v is None) for c, v in chosen)
        query = self._filter.get(shape)
        if query is None:
            query = self._filter_sql(chosen)
            self._filter[shape] = query
        params = [to_db(v, c.type) for c, v in chosen if v is not None]
        return self._rows(self._prepared.run(query, params)[0])

    def count(self) -> int:
        rows, _ = self._prepared.run(self._count)
        return int(rows[0][0]) if rows else 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows(self._prepared.run(self._all)[0]))

    # -- helpers ----------------------------------------------------------------------

    def _check(self, row: Any) -> None:
        if not isinstance(row, self._class):
            raise TypeError(
                f"ctx.db.{self._table.name} takes {self._class.__name__} rows, "
                f"not {type(row).__name__}"
            )

    def _key_of(self, row: Any) -> list[Any]:
        return [to_db(getattr(row, c.name), c.type) for c in self._key]

    def _show_key(self, row: Any) -> str:
        return ", ".join(f"{c.name}={getattr(row, c.name)!r}" for c in self._key)

    def _insert_sql(self, names: tuple[str, ...]) -> bytes:
        query = self._insert.get(names)
        if query is None:
            values: sql.Composable
            if names:
                values = sql.SQL("({}) VALUES ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)),
                    sql.SQL(", ").join(sql.Placeholder() * len(names)),
                )
            else:
                values = sql.SQL("DEFAULT VALUES")
            query = self._sql("INSERT INTO {t} {values} RETURNING {cols}", values=values)
            self._insert[names] = query
        return query

    def _filter_sql(self, chosen: list[tuple[ColumnDef, Any]]) -> bytes:
        if not chosen:
            return self._all
        conditions = sql.SQL(" AND ").join(
            sql.SQL("{} IS NULL" if value is None else "{} = %s").format(
                sql.Identifier(column.name)
            )
            for column, value in chosen
        )
        return self._sql("SELECT {cols} FROM {t} WHERE {where} ORDER BY {order}", where=conditions)

    def _one(self, query: bytes, params: list[Any]) -> Any:
        rows, _ = self._prepared.run(query, params)
        return self._row(rows[0]) if rows else None

    def _rows(self, rows: list[Any]) -> list[Any]:
        return [self._row(row) for row in rows]

    def _row(self, values: Sequence[Any]) -> Any:
        fields = {
            c.name: from_db(v, c.type, self._records)
            for c, v in zip(self._columns, values, strict=True)
        }
        return self._class(**fields)


def _equals(columns: list[ColumnDef]) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c.name)) for c in columns)


class Tables:
    """``ctx.db``: one :class:`TableAccess` per table of the module."""

    def __init__(self, handles: dict[str, TableAccess], prepared: Prepared | None = None) -> None:
        self._handles = handles
        self._prepared = prepared

    def _forget_prepared(self) -> None:
        if self._prepared is not None:
            self._prepared.forget()

    def __getattr__(self, name: str) -> TableAccess:
        try:
            return self._handles[name]
        except KeyError:
            known = ", ".join(sorted(self._handles)) or "none"
            raise AttributeError(f"the module has no table {name!r} (tables: {known})") from None

    def __dir__(self) -> list[str]:
        return sorted(self._handles)

    def schedule_of(self, reducer: str) -> TableAccess:
        """The schedule table whose rows run ``reducer``."""
        for handle in self._handles.values():
            if handle.definition.scheduled == reducer:
                return handle
        raise ValueError(
            f"reducer {reducer!r} has no schedule table: declare one with"
            f" @table(scheduled={reducer!r}) (see docs/modules.md, Scheduled reducers)"
        )


def table_handles(
    conn: psycopg.Connection[Any], row_classes: list[type], records: Mapping[str, type]
) -> Tables:
    """The ``ctx.db`` of a module whose ``@table`` classes are ``row_classes``."""
    from millpond.module._declare import TABLE_MARK

    handles = {}
    prepared = Prepared(conn)  # one set of prepared statements for the connection
    for cls in row_classes:
        table: TableDef = getattr(cls, TABLE_MARK)
        handles[table.name] = TableAccess(conn, table, cls, records, prepared)
    return Tables(handles, prepared)


@dataclasses.dataclass
class Context:
    """The ``ReducerContext`` of one run of a call (a retry gets a new one, alike)."""

    sender: Identity
    connection_id: str | None
    sender_auth: dict[str, Any] | None
    timestamp: datetime.datetime
    rng: random.Random
    db: Tables
    log: logging.Logger
    _conn: psycopg.Connection[Any]

    due: datetime.datetime | None = None

    def schedule(
        self,
        reducer: str | Callable[..., Any],
        *,
        at: datetime.datetime | None = None,
        in_: datetime.timedelta | None = None,
        every: datetime.timedelta | None = None,
        **columns: Any,
    ) -> Any:
        """Schedule ``reducer`` (a scheduled reducer, or its name) by inserting a row into
        its schedule table: once ``at`` a time or ``in_`` a delay, or ``every`` interval;
        ``columns`` are the row's other columns. The row as stored."""
        if sum(x is not None for x in (at, in_, every)) != 1:
            raise TypeError("ctx.schedule takes one of at=, in_= or every=")
        name = reducer if isinstance(reducer, str) else getattr(reducer, "__name__", "")
        handle = self.db.schedule_of(name)
        when: datetime.datetime | datetime.timedelta
        if every is not None:
            when = every
        elif in_ is not None:
            when = self.timestamp + in_
        else:
            assert at is not None
            when = at
        return handle.insert(handle.row_class(scheduled_at=when, **columns))

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(query.encode(), params or None)
            rows = cursor.fetchall() if cursor.description is not None else []
            statuses = [cursor.statusmessage]
            while cursor.nextset():
                statuses.append(cursor.statusmessage)
        if any((status or "").startswith("DEALLOCATE") for status in statuses):
            self.db._forget_prepared()  # the table handles' statements may be gone
        return rows


# -- logs -------------------------------------------------------------------------------


class Logs(logging.Handler):
    """The log lines of the current call: ``ctx.log`` records and what the module writes
    to ``sys.stdout`` (level info) and ``sys.stderr`` (level warning), bounded."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.root = ""
        """The module's directory: file names are shown relative to it."""
        self.lines: list[dict[str, Any]] = []
        self._bytes = 0
        self._dropped = 0

    def take(self) -> list[dict[str, Any]]:
        """The lines so far (with a note of any dropped); starts a new list."""
        lines = self.lines
        if self._dropped:
            lines.append(_line("warning", f"{self._dropped} more log lines dropped", None, None))
        self.lines, self._bytes, self._dropped = [], 0, 0
        return lines

    def add(self, level: str, message: str, filename: str | None, line: int | None) -> None:
        if len(self.lines) >= MAX_LOG_LINES or self._bytes >= MAX_LOG_BYTES:
            self._dropped += 1
            return
        message = message[:MAX_LOG_LINE]
        if filename and self.root and filename.startswith(self.root):
            filename = filename[len(self.root) :]
        self._bytes += len(message)
        self.lines.append(_line(level, message, filename, line))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string in the module: still a line
            message = f"{record.msg!r} (could not format: {exc})"
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        self.add(record.levelname.lower(), message, record.pathname, record.lineno)


def _line(level: str, message: str, filename: str | None, line: int | None) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    return {
        "level": level,
        "ts": now,
        "message": message,
        "filename": filename,
        "line_number": line,
    }


class Capture(io.TextIOBase):
    """A ``sys.stdout``/``sys.stderr`` whose lines go to :class:`Logs`."""

    def __init__(self, logs: Logs, level: str) -> None:
        self._logs = logs
        self._level = level
        self._pending = ""
        self._where: tuple[str | None, int | None] = (None, None)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self._pending:
            frame = sys._getframe(1)
            self._where = (frame.f_code.co_filename, frame.f_lineno)
        self._pending += str(text)
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._logs.add(self._level, line, *self._where)
        self._pending = self._pending[:MAX_LOG_LINE]
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._logs.add(self._level, self._pending, *self._where)
            self._pending = ""


def module_logger(logs: Logs) -> logging.Logger:
    """The ``ctx.log`` of a worker: not attached to the root logger."""
    logger = logging.Logger("module", logging.DEBUG)
    logger.addHandler(logs)
    logger.propagate = False
    return logger
