"""Running an export: a query's (or a table's) rows streamed from Postgres into a file,
never the whole result in memory.

Runs in a worker thread on its own connection, as the caller's role, in a ``READ ONLY``
transaction. The SQL is first described with the extended protocol (one statement only,
so nothing can be chained after it), then:

* CSV — ``COPY (…) TO STDOUT (FORMAT csv, HEADER)``, bytes straight to the file;
* JSON / NDJSON — ``COPY (SELECT row_to_json(q) FROM (…) q) TO STDOUT``: Postgres
  writes the JSON, we only join the lines;
* Parquet — ``COPY … (FORMAT csv)`` parsed by Arrow's streaming CSV reader with the
  column types taken from the query's description, written batch by batch by a thread
  of its own (:class:`_Behind`), so that encoding overlaps reading;
* XLSX / XLS — a server-side cursor fetched in batches into a streaming writer
  (XLS, a 1997 format, holds at most 65,535 rows and 256 columns).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

from ..query.adapters import register_safe_json
from .copy_out import CopyOut
from .errors import JobError
from .progress import Progress

EXTENSIONS = {
    "csv": "csv",
    "json": "json",
    "ndjson": "ndjson",
    "xlsx": "xlsx",
    "xls": "xls",
    "parquet": "parquet",
}
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xls": "application/vnd.ms-excel",
    "parquet": "application/vnd.apache.parquet",
}
XLSX_MAX_ROWS = 1_048_575
XLSX_MAX_COLUMNS = 16_384
XLS_MAX_ROWS = 65_535
XLS_MAX_COLUMNS = 256
EXCEL_MAX_TEXT = 32_767
_TRAILING = re.compile(r"[\s;]+\Z")
CSV_COPY = "COPY (SELECT * FROM ({src}) AS q) TO STDOUT (FORMAT csv, HEADER)"
"""The CSV of an export (a job's file, or a streamed export's answer)."""


@dataclass
class ExportSpec:
    export_format: str
    query: str | None = None
    schema: str | None = None
    table: str | None = None


@dataclass
class Exported:
    rows: int
    bytes: int
    columns: list[dict[str, str]]


def source_sql(spec: ExportSpec) -> sql.Composable:
    """The SELECT to export, as a composable that can be wrapped in parentheses."""
    if spec.table is not None:
        return sql.SQL("SELECT * FROM {}").format(
            sql.Identifier(spec.schema or "public", spec.table)
        )
    text = _TRAILING.sub("", spec.query or "")
    if not text.strip():
        raise JobError("sql_error", "the query is empty")
    # newlines: a trailing "-- comment" must not swallow the closing parenthesis
    return sql.SQL("\n{}\n").format(sql.SQL(text))


def csv_blocks(
    conn: psycopg.Connection[Any],
    spec: ExportSpec,
    progress: Progress,
    linger: float | None = None,
) -> Generator[bytearray, None, None]:
    """A CSV export as Postgres writes it, in blocks of whole rows: what a CSV job writes
    to its file, for a streamed export (``stream.py``). The same checks as a job's: one
    statement, described first, in a ``READ ONLY`` transaction that is rolled back; errors
    are :class:`JobError`. ``linger``: see ``CopyOut``."""
    exporter = Exporter(conn, spec, Path(os.devnull), progress)  # no file: blocks only
    conn.read_only = True
    try:
        with conn.transaction(force_rollback=True):
            exporter.describe()
            yield from exporter.copy_out(exporter.wrapped(CSV_COPY), linger)
    except psycopg.Error as exc:
        raise _job_error(exc) from exc


class Exporter:
    def __init__(
        self, conn: psycopg.Connection[Any], spec: ExportSpec, out: Path, progress: Progress
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.out = out
        self.progress = progress
        self.source = source_sql(spec)
        self.rows = 0

    def run(self) -> Exported:
        self.conn.read_only = True
        try:
            # rolled back: nothing to keep, and a LISTEN of the source's functions would
            # have a commit deliver every NOTIFY to this connection
            with self.conn.transaction(force_rollback=True):
                names, oids, columns = self.describe()
                fmt = self.spec.export_format
                if fmt == "csv":
                    self._csv()
                elif fmt in ("json", "ndjson"):
                    self._json(array=fmt == "json")
                elif fmt == "parquet":
                    self._parquet(names, oids)
                elif fmt == "xlsx":
                    self._xlsx(names)
                elif fmt == "xls":
                    self._xls(names)
                else:  # pragma: no cover - the request model only allows the above
                    raise JobError("unsupported_format", f"cannot export {fmt!r}")
        except psycopg.Error as exc:
            raise _job_error(exc) from exc
        return Exported(self.rows, self.out.stat().st_size, columns)

    # -- the shape of the result ---------------------------------------------------------

    def describe(self) -> tuple[list[str], list[tuple[int, int | None, int | None]], Any]:
        with self.conn.cursor() as cur:
            # prepared: the extended protocol refuses a second statement
            cur.execute(
                sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(self.source), prepare=True
            )
            desc = cur.description or []
            names = [d.name for d in desc]
            oids = [(d.type_code, d.precision, d.scale) for d in desc]
            type_rows = cur.execute(
                "SELECT oid, format_type(oid, NULL), typcategory FROM pg_type WHERE oid = ANY(%s)",
                ([d.type_code for d in desc],),
            ).fetchall()
        self._types = {int(r[0]): (str(r[1]), str(r[2])) for r in type_rows}
        columns = [
            {"name": n, "type": self._types.get(o, ("unknown", ""))[0]}
            for n, (o, _, _) in zip(names, oids, strict=True)
        ]
        if not names:
            raise JobError("sql_error", "the query returns no columns to export")
        return names, oids, columns

    def wrapped(self, select: str) -> sql.Composed:
        return sql.SQL(select).format(src=self.source)

    # -- formats -------------------------------------------------------------------------

    def copy_out(self, statement: sql.Composed, linger: float | None = None) -> Iterator[bytearray]:
        """The output of a ``COPY … TO STDOUT`` in blocks of whole rows, each a new
        buffer, read at libpq's speed (see ``copy_out``); ``self.rows`` is its row count
        once it is done, and ``self.progress.rows_done`` the rows read so far."""
        copy = CopyOut(
            self.conn, statement.as_bytes(self.conn), check=self.progress.check, linger=linger
        )
        with self.conn.lock:
            for block in copy:
                self.progress.rows_done = copy.messages
                yield block
        self.rows = copy.rows
        self.progress.rows_done = copy.rows

    def _csv(self) -> None:
        statement = self.wrapped(CSV_COPY)
        with self.out.open("wb", buffering=0) as f:
            for block in self.copy_out(statement):
                f.write(block)
                self.progress.bytes_done = f.tell()

    def _json(self, array: bool) -> None:
        # COPY's text format doubles backslashes, and row_to_json escapes every control
        # character (so each row is one line): undoing that one escape gives the JSON back
        statement = self.wrapped("COPY (SELECT row_to_json(q) FROM ({src}) AS q) TO STDOUT")
        with self.out.open("wb", buffering=0) as f:
            if array:
                f.write(b"[\n")
            for block in self.copy_out(statement):
                chunk = block.replace(b"\\\\", b"\\")
                f.write(chunk.replace(b"\n", b",\n") if array else chunk)
                self.progress.bytes_done = f.tell()
            if array:
                if self.rows:
                    f.seek(-2, io.SEEK_END)  # the last row's ",\n"
                    f.truncate()
                    f.write(b"\n]\n")
                else:
                    f.seek(0)
                    f.truncate()
                    f.write(b"[]\n")

    def _parquet(self, names: list[str], oids: list[tuple[int, int | None, int | None]]) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        aliases = [f"c{i}" for i in range(len(names))]
        exprs: list[sql.Composable] = []
        read_types: dict[str, Any] = {}
        final: list[Any] = []
        converters: dict[int, Callable[[Any], Any]] = {}
        for i, (alias, (oid, precision, scale)) in enumerate(zip(aliases, oids, strict=True)):
            col = sql.Identifier(alias)
            read, out, expr = _arrow_column(oid, precision, scale, self._types.get(oid))
            exprs.append(sql.SQL(expr).format(col=col))
            read_types[alias] = read
            final.append(out)
            if out != read:
                converters[i] = _converter(read, out)
        schema = pa.schema([pa.field(n, t) for n, t in zip(_unique(names), final, strict=True)])
        statement = sql.SQL("COPY (SELECT {} FROM ({}) AS q({})) TO STDOUT (FORMAT csv)").format(
            sql.SQL(", ").join(exprs),
            self.source,
            sql.SQL(", ").join(map(sql.Identifier, aliases)),
        )
        stream = _CopyStream(self.copy_out(statement))
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(column_names=aliases, block_size=1 << 20),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=read_types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        with pq.ParquetWriter(self.out, schema, compression="snappy") as writer:
            try:
                with _Behind(writer.write_batch) as write:
                    for batch in reader:
                        arrays = [
                            converters[i](a) if i in converters else a
                            for i, a in enumerate(batch.columns)
                        ]
                        write(pa.RecordBatch.from_arrays(arrays, schema=schema))
                        self.progress.bytes_done = stream.position
            except pa.ArrowInvalid as exc:
                raise JobError(
                    "invalid_value",
                    f"a value cannot be written to Parquet: {exc}; cast it to text in the query",
                ) from exc

    def _batches(self) -> Iterator[list[tuple[Any, ...]]]:
        with self.conn.cursor(name=f"mp_export_{uuid.uuid4().hex[:12]}") as cur:
            register_safe_json(cur.adapters)  # a deeply nested value stays its text
            cur.execute(sql.SQL("SELECT * FROM ({}) AS q").format(self.source))
            while batch := cur.fetchmany(2000):
                yield batch
                self.rows += len(batch)
                self.progress.rows_done = self.rows
                self.progress.check()

    def _xlsx(self, names: list[str]) -> None:
        from openpyxl import Workbook

        if len(names) > XLSX_MAX_COLUMNS:
            raise _too_wide("XLSX", len(names), XLSX_MAX_COLUMNS)
        wb = Workbook(write_only=True)
        title = _sheet_title(self.spec.table or "export")
        sheet, used, n = wb.create_sheet(title), 1, 0
        sheet.append(names)
        for batch in self._batches():
            for row in batch:
                if n == XLSX_MAX_ROWS:  # a sheet is full: go on in the next one
                    used += 1
                    sheet, n = wb.create_sheet(_sheet_title(title, used)), 0
                    sheet.append(names)
                sheet.append([_excel_value(v, "XLSX") for v in row])
                n += 1
        wb.save(self.out)

    def _xls(self, names: list[str]) -> None:
        import xlwt

        if len(names) > XLS_MAX_COLUMNS:
            raise _too_wide("XLS", len(names), XLS_MAX_COLUMNS)
        styles = {
            "datetime": xlwt.easyxf(num_format_str="YYYY-MM-DD HH:MM:SS"),
            "date": xlwt.easyxf(num_format_str="YYYY-MM-DD"),
            "time": xlwt.easyxf(num_format_str="HH:MM:SS"),
        }
        wb = xlwt.Workbook(encoding="utf-8")
        sheet = wb.add_sheet(_sheet_title(self.spec.table or "export"))
        for c, name in enumerate(names):
            sheet.write(0, c, name)
        r = 0
        for batch in self._batches():
            if r + len(batch) > XLS_MAX_ROWS:
                raise JobError(
                    "too_many_rows",
                    f"XLS holds at most {XLS_MAX_ROWS} rows; export to xlsx, csv or parquet",
                    {"limit": XLS_MAX_ROWS},
                )
            for row in batch:
                r += 1
                for c, value in enumerate(row):
                    v = _excel_value(value, "XLS")
                    if v is None:
                        continue
                    if isinstance(v, datetime):
                        sheet.write(r, c, v, styles["datetime"])
                    elif hasattr(v, "isoformat") and not isinstance(v, str):
                        kind = "time" if type(v).__name__ == "time" else "date"
                        sheet.write(r, c, v, styles[kind])
                    elif isinstance(v, bool | int | float):
                        sheet.write(r, c, v)
                    else:
                        sheet.write(r, c, str(v))
        wb.save(str(self.out))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 1)
        result.append(name)
    return result


def _arrow_column(
    oid: int, precision: int | None, scale: int | None, info: tuple[str, str] | None
) -> tuple[Any, Any, str]:
    """(type Arrow reads the CSV as, type written to Parquet, SQL expression on ``{col}``)."""
    import pyarrow as pa

    simple = {
        16: pa.bool_(),
        20: pa.int64(),
        21: pa.int16(),
        23: pa.int32(),
        26: pa.int64(),
        700: pa.float32(),
        701: pa.float64(),
        1082: pa.date32(),
        1083: pa.time64("us"),
        1114: pa.timestamp("us"),
    }
    if oid in simple:
        return simple[oid], simple[oid], "{col}"
    if oid == 1184:  # timestamptz: read the UTC wall time, then mark it as UTC
        return pa.timestamp("us"), pa.timestamp("us", tz="UTC"), "({col} AT TIME ZONE 'UTC')"
    if oid == 1700 and precision and 0 < precision <= 38:
        t = pa.decimal128(precision, scale or 0)
        return t, t, "{col}"
    if oid == 17:
        return pa.string(), pa.binary(), "encode({col}, 'hex')"
    if info is not None and info[1] == "A":
        return pa.string(), pa.string(), "to_json({col})::text"
    return pa.string(), pa.string(), "{col}::text"


def _converter(read: Any, out: Any) -> Callable[[Any], Any]:
    import pyarrow as pa

    if pa.types.is_binary(out):
        return lambda a: pa.array(
            [None if v is None else bytes.fromhex(v) for v in a.to_pylist()], pa.binary()
        )
    return lambda a: a.cast(out)


class _Behind:
    """Calls ``write`` on each item in a thread of its own, at most :data:`_BEHIND` items
    behind the caller: Parquet's encoding (which releases the GIL) overlaps reading the
    next rows from Postgres. Leaving the block waits for the last write; an error of a
    write is raised there (or at the next item)."""

    def __init__(self, write: Callable[[Any], None]) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(_BEHIND)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)

    def __enter__(self) -> Callable[[Any], None]:
        self._thread.start()
        return self._put

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None and error is None:
            raise self._error

    def _put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc


_BEHIND = 4
_DONE = object()


class _CopyStream(io.RawIOBase):
    """The bytes of a ``COPY … TO STDOUT`` as a readable file (for Arrow's reader)."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._buf = b""
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts: list[Any] = [self._buf]
        have = len(self._buf)
        for chunk in self._chunks:
            parts.append(chunk)
            have += len(chunk)
            if 0 <= size <= have:
                break
        data = b"".join(parts)
        if size >= 0:
            data, self._buf = data[:size], data[size:]
        else:
            self._buf = b""
        self.position += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _sheet_title(name: str, n: int = 1) -> str:
    clean = re.sub(r"[\[\]:*?/\\]", "_", name)[:28] or "export"
    return clean if n == 1 else f"{clean}_{n}"


def _excel_value(value: Any, fmt: str) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > EXCEL_MAX_TEXT:
            raise JobError(
                "value_too_large",
                f"a text value of {len(value)} characters is longer than {fmt} cells hold"
                f" ({EXCEL_MAX_TEXT}); export to csv, json or parquet",
                {"limit": EXCEL_MAX_TEXT},
            )
        return _ILLEGAL.sub("", value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if hasattr(value, "isoformat"):  # date, time
        if getattr(value, "tzinfo", None) is not None:
            return value.isoformat()
        return value
    if isinstance(value, dict | list):
        return _excel_value(json.dumps(value, ensure_ascii=False, default=str), fmt)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value) if fmt == "XLS" else value
    return _excel_value(str(value), fmt)


_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _too_wide(fmt: str, columns: int, limit: int) -> JobError:
    return JobError(
        "too_many_columns",
        f"{fmt} holds at most {limit} columns; the result has {columns}",
        {"columns": columns, "limit": limit},
    )


def _job_error(exc: psycopg.Error) -> JobError:
    diag = exc.diag
    message = diag.message_primary or str(exc).strip()
    details: dict[str, Any] = {"sqlstate": exc.sqlstate}
    if diag.message_detail:
        details["detail"] = diag.message_detail
    if diag.message_hint:
        details["hint"] = diag.message_hint
    if isinstance(exc, errors.InsufficientPrivilege):
        return JobError("permission_denied", message, details)
    if isinstance(exc, errors.UndefinedTable):
        return JobError("table_not_found", message, details)
    if isinstance(exc, errors.QueryCanceled):
        return JobError("timeout", f"{message} (MILLPOND_TRANSFER_JOB_TIMEOUT_S)", details)
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return JobError("sql_error", f"{message}: exports only read", details)
    if isinstance(exc, psycopg.OperationalError) and not exc.sqlstate:
        return JobError("postgres_unavailable", "the database connection was lost", {})
    return JobError("sql_error", message, details)
