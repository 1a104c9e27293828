"""Loading a planned import into a user database, all or nothing.

Runs in a worker thread on its own connection, as the caller's role — so Postgres
privileges decide (the importer needs write access; ``create`` needs ``CREATE`` on the
schema; ``replace`` needs to own the old table). One transaction holds everything:

* ``create`` — ``CREATE TABLE`` then ``COPY`` into it (nobody sees it before commit);
* ``replace`` — ``COPY`` into a staging table, then drop the old table and rename the
  staging table in its place;
* ``append`` — ``COPY`` into the existing table, file columns mapped to table columns by
  name.

Then the storage limit is checked (as for HTTP queries), the transaction id is reported
through ``before_commit`` (so a crash between commit and bookkeeping can be told apart
from a crash before commit), and the transaction commits. Any failure rolls it back.

A value Postgres refuses in an *inferred* column widens that column's type (bigint →
numeric → text, date → timestamp, …) and the load runs again; a file Postgres's own CSV
reader refuses is read again by Python's more lenient one. Other failures are final and
become a :class:`JobError` with the row and line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from . import infer, names
from .errors import JobError
from .progress import Progress
from .sources import Plan, SourceTable

_log = logging.getLogger("millpond.transfer")

MAX_ATTEMPTS = 12
_FORMAT_STATES = frozenset({"22P04"})
_ENCODING_STATES = frozenset({"22021", "22P05"})
_LINE = re.compile(r"\bline (\d+)")


@dataclass
class Target:
    schema: str
    table: str
    mode: str
    staging_suffix: str


@dataclass
class Loaded:
    schema: str
    table: str
    source_name: str | None
    rows: int
    columns: list[dict[str, str]]


@dataclass
class _Load:
    """One source table's load: where it goes and how."""

    source: SourceTable
    table: str
    fast: bool
    copy_columns: list[str]
    types: list[str]
    """The type each file column is rendered for (the table's own, when appending)."""


def target_names(plan: Plan, table: str) -> list[str]:
    """The table each source table goes into: ``table``, or ``<table>_<sheet>`` when the
    file has several sheets or tables."""
    if len(plan.tables) == 1:
        return [table]
    result: list[str] = []
    for src in plan.tables:
        suffix = names.normalise(src.source_name or "", len(result) + 1)
        result.append(names.truncate(f"{table}_{suffix}"))
    return result


def _ident(schema: str, table: str) -> sql.Composable:
    return sql.Identifier(schema, table)


def _scalar(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


class Loader:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        plan: Plan,
        target: Target,
        *,
        storage_limit: int | None,
        progress: Progress,
        before_commit: Callable[[str], None],
    ) -> None:
        self.conn = conn
        self.plan = plan
        self.target = target
        self.storage_limit = storage_limit
        self.progress = progress
        self.before_commit = before_commit
        self.tables = target_names(plan, target.table)
        self.slow: set[int] = set()
        self._loaded_rows = 0
        self._current: _Load | None = None
        self._current_index = 0

    # -- the attempts ------------------------------------------------------------------

    def run(self) -> list[Loaded]:
        self._check_schema()
        for _ in range(MAX_ATTEMPTS):
            try:
                return self._attempt()
            except psycopg.Error as exc:
                if not self._adjust(exc):
                    raise self._job_error(exc) from exc
                _log.info("import into %s: retrying (%s)", self.target.table, exc.sqlstate)
        raise JobError(
            "invalid_value",
            f"values kept failing after {MAX_ATTEMPTS} attempts with wider column types;"
            " give the column types explicitly (column_types)",
        )

    def _attempt(self) -> list[Loaded]:
        conn = self.conn
        self.progress.rows_done = self._loaded_rows = 0
        with conn.transaction():
            size_before = _scalar(conn, "SELECT pg_database_size(current_database())")
            results: list[Loaded] = []
            for i, (src, table) in enumerate(zip(self.plan.tables, self.tables, strict=True)):
                self._current_index = i
                results.append(self._load_table(i, src, table))
            self._check_size(int(size_before))
            conn.execute("UNLISTEN *")  # a trigger's LISTEN: the commit would deliver it all
            xid = str(_scalar(conn, "SELECT pg_current_xact_id()::text"))
            self.before_commit(xid)
        return results

    def _check_schema(self) -> None:
        found = _scalar(
            self.conn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.target.schema,)
        )
        if not found:
            raise JobError(
                "schema_not_found",
                f"there is no schema {self.target.schema!r} in the database; create it first",
                {"schema": self.target.schema},
            )

    def _exists(self, table: str) -> bool:
        qualified = _ident(self.target.schema, table).as_string(self.conn)
        return _scalar(self.conn, "SELECT to_regclass(%s) IS NOT NULL", (qualified,)) is True

    def _load_table(self, index: int, src: SourceTable, table: str) -> Loaded:
        mode, schema = self.target.mode, self.target.schema
        exists = self._exists(table)
        fast = src.fast is not None and index not in self.slow
        if mode == "append":
            if not exists:
                raise JobError(
                    "table_not_found",
                    f"there is no table {schema}.{table} to append to; use mode create",
                    {"schema": schema, "table": table},
                )
            copy_columns, types = self._map_columns(src, table)
            into = table
        else:
            if mode == "create" and exists:
                raise JobError(
                    "table_exists",
                    f"table {schema}.{table} already exists; use mode append or replace",
                    {"schema": schema, "table": table},
                )
            into = table if mode == "create" or not exists else self._staging(table)
            self.conn.execute(
                sql.SQL("CREATE TABLE {} ({})").format(
                    _ident(schema, into),
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type))
                        for c in src.columns
                    ),
                )
            )
            copy_columns = [c.name for c in src.columns]
            types = [c.type for c in src.columns]
        load = _Load(src, into, fast, copy_columns, types)
        self._current = load
        rows = self._copy(load)
        if rows == 0:
            where = f"sheet/table {src.source_name!r}" if src.source_name else "the file"
            raise JobError("empty_file", f"{where} has no data rows to import")
        if into != table:
            self.conn.execute(sql.SQL("DROP TABLE {}").format(_ident(schema, table)))
            self.conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    _ident(schema, into), sql.Identifier(table)
                )
            )
        final = self._table_columns(table)
        return Loaded(
            schema,
            table,
            src.source_name,
            rows,
            [{"name": n, "type": t} for n, t in final if n in copy_columns],
        )

    def _staging(self, table: str) -> str:
        return names.truncate(f"_mp_import_{self.target.staging_suffix}_{table}")

    def _table_columns(self, table: str) -> list[tuple[str, str]]:
        qualified = _ident(self.target.schema, table).as_string(self.conn)
        return [
            (str(r[0]), str(r[1]))
            for r in self.conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
                " ORDER BY attnum",
                (qualified,),
            )
        ]

    def _map_columns(self, src: SourceTable, table: str) -> tuple[list[str], list[str]]:
        existing = self._table_columns(table)
        by_name = {n: t for n, t in existing}
        by_lower = {n.lower(): n for n, _ in existing}
        copy_columns, types, unknown = [], [], []
        for col in src.columns:
            match = next(
                (
                    c
                    for c in (col.name, col.source, by_lower.get(col.source.lower()))
                    if c and c in by_name
                ),
                None,
            )
            if match is None or match in copy_columns:
                unknown.append(col.source or col.name)
                continue
            copy_columns.append(match)
            types.append(_render_type(by_name[match]))
        if unknown:
            raise JobError(
                "column_mismatch",
                f"table {self.target.schema}.{table} has no column for the file's"
                f" {', '.join(map(repr, unknown))}; its columns are"
                f" {', '.join(n for n, _ in existing)}",
                {"unknown_columns": unknown, "table_columns": [n for n, _ in existing]},
            )
        return copy_columns, types

    def _copy(self, load: _Load) -> int:
        target = sql.SQL("{} ({})").format(
            _ident(self.target.schema, load.table),
            sql.SQL(", ").join(map(sql.Identifier, load.copy_columns)),
        )
        with self.conn.cursor() as cur:
            if load.fast:
                fast = load.source.fast
                assert fast is not None
                stmt = sql.SQL(
                    "COPY {} FROM STDIN (FORMAT csv, DELIMITER {}, QUOTE {}, ESCAPE {},"
                    " HEADER {}, ENCODING {})"
                ).format(
                    target,
                    sql.Literal(fast.delimiter),
                    sql.Literal(fast.quote),
                    sql.Literal(fast.escape),
                    sql.SQL("true" if fast.header else "false"),
                    sql.Literal(fast.encoding),
                )
                with cur.copy(stmt) as copy:
                    for chunk in fast.chunks(self.progress):
                        copy.write(chunk)
            else:
                stmt = sql.SQL("COPY {} FROM STDIN").format(target)
                render = _row_renderer(load.types, load.source.json_values, load.source.text_values)
                with cur.copy(stmt) as copy:
                    for row in load.source.rows(self.progress):
                        copy.write_row(render(row))
            rows = cur.rowcount
        self._loaded_rows += rows
        self.progress.rows_done = self._loaded_rows
        return rows

    def _check_size(self, size_before: int) -> None:
        limit = self.storage_limit
        if not limit:
            return
        size_after = int(_scalar(self.conn, "SELECT pg_database_size(current_database())"))
        if size_after > limit and size_after > size_before:
            raise JobError(
                "storage_limit_exceeded",
                f"the import would grow the database to {size_after} bytes, over its limit of"
                f" {limit}; nothing was imported. Free space or raise the limit.",
                {"size_bytes": size_after, "storage_limit_bytes": limit},
            )

    # -- failures ------------------------------------------------------------------------

    def _where(self, exc: psycopg.Error) -> dict[str, Any]:
        """Row, line, column and value of a COPY failure, from Postgres's context."""
        load = self._current
        context = exc.diag.context or ""
        found: dict[str, Any] = {}
        if load is None or "COPY" not in context:
            return found
        m = _LINE.search(context)
        if m:
            line = int(m.group(1))
            src = load.source
            if load.fast:
                assert src.fast is not None
                row = line - (1 if src.fast.header else 0)
                found.update(row=row, line=line)
            else:
                found.update(row=line)
                if src.lines_before or src.source_name is None:
                    found["line"] = line + src.lines_before
        for name in sorted(load.copy_columns, key=len, reverse=True):
            marker = f", column {name}: "
            at = context.find(marker)
            if at >= 0:
                found["column"] = name
                value = context[at + len(marker) :].strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                found["value"] = value
                break
            if context.endswith(f", column {name}"):
                found["column"] = name
                break
        if load.source.source_name is not None:
            found["source"] = load.source.source_name
        return found

    def _adjust(self, exc: psycopg.Error) -> bool:
        """Change the plan so another attempt may succeed; False if none can."""
        load = self._current
        state = exc.sqlstate or ""
        if load is None or not state.startswith("22"):
            return False
        if state in _FORMAT_STATES and load.fast:
            self.slow.add(self._current_index)
            return True
        if state in _FORMAT_STATES or state in _ENCODING_STATES:
            return False
        if self.target.mode == "append":
            return False
        where = self._where(exc)
        column = next((c for c in load.source.columns if c.name == where.get("column")), None)
        if column is None or column.explicit:
            return False
        wider = infer.widen(column.type, where.get("value"))
        if wider is None:
            return False
        column.type = wider
        return True

    def _job_error(self, exc: psycopg.Error) -> JobError:
        state = exc.sqlstate or ""
        message = exc.diag.message_primary or str(exc).strip()
        where = self._where(exc)
        details: dict[str, Any] = {"sqlstate": state or None, **where}
        if exc.diag.message_detail:
            details["detail"] = exc.diag.message_detail
        at = ""
        if "row" in where:
            at = f" (row {where['row']}" + (f", line {where['line']}" if "line" in where else "")
            at += f", column {where['column']})" if "column" in where else ")"
        if state in _FORMAT_STATES:
            return JobError("malformed_row", f"{message}{at}", details)
        if state in _ENCODING_STATES:
            return JobError("encoding_error", f"{message}{at}; give the file's encoding", details)
        if state.startswith("22"):
            return JobError("invalid_value", f"{message}{at}", details)
        if state.startswith("23"):
            return JobError("constraint_violation", f"{message}{at}", details)
        if isinstance(exc, errors.InsufficientPrivilege):
            return JobError("permission_denied", message, details)
        if isinstance(exc, errors.DuplicateTable):
            return JobError("table_exists", message, details)
        if isinstance(exc, errors.UndefinedTable):
            return JobError("table_not_found", message, details)
        if isinstance(exc, errors.InvalidSchemaName):
            return JobError("schema_not_found", message, details)
        if isinstance(exc, errors.TooManyColumns):
            return JobError("too_many_columns", message, details)
        if isinstance(exc, errors.DependentObjectsStillExist):
            return JobError("dependent_objects", message, details)
        if isinstance(exc, errors.LockNotAvailable):
            return JobError("table_locked", f"{message}: another session holds the table", details)
        if isinstance(exc, errors.QueryCanceled):
            return JobError("timeout", f"{message} (MILLPOND_TRANSFER_JOB_TIMEOUT_S)", details)
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return JobError("permission_denied", message, details)
        if isinstance(exc, psycopg.OperationalError) and not state:
            return JobError("postgres_unavailable", "the database connection was lost", {})
        return JobError("sql_error", message, details)


def _render_type(format_type: str) -> str:
    base = format_type.split("(")[0].strip()
    return {
        "bigint": infer.BIGINT,
        "integer": "integer",
        "smallint": "smallint",
        "date": infer.DATE,
        "jsonb": infer.JSONB,
        "json": "json",
    }.get(base, base)


def _row_renderer(
    types: Sequence[str], json_values: bool, text_values: bool
) -> Callable[[Sequence[Any]], list[str | None]]:
    if text_values:  # text from a CSV file: only the empty string needs changing (NULL)
        return lambda values: [v or None for v in values]
    render = infer.render_text
    pairs = list(types)

    def row(values: Sequence[Any]) -> list[str | None]:
        return [render(v, t, json_values) for v, t in zip(values, pairs, strict=True)]

    return row
