"""Reading every import format into tables of rows, with names and types — the plan of
an import. No database here: :func:`plan` opens the file, sniffs and infers; each
:class:`SourceTable` then gives fresh row iterators to load (as often as a retry needs).

Formats: CSV/TSV, JSON (an array of objects, read incrementally), NDJSON, XLSX and XLS
(every sheet or a named one), SQLite (every table or a named one), Parquet. A gzip file
is decompressed first (:func:`decompress`).

Two ways to feed Postgres's ``COPY``:

* ``fast`` — bytes Postgres parses itself as CSV: a clean CSV file as it is on disk
  (no Python per row), Parquet record batches written as CSV by Arrow;
* ``rows`` — Python values per row, rendered as text (:func:`infer.render_text`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sqlite3
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..limits import DEFAULT_JSON_DEPTH, too_deep
from . import infer, names, sniff
from .errors import JobError, invalid_file, malformed_row
from .progress import Progress

MAX_COLUMNS = 1600
"""Postgres's limit on the columns of a table."""
SAMPLE_ROWS = 2000
PREVIEW_ROWS = 10
READ_BYTES = 1024 * 1024

FORMATS = ("csv", "tsv", "json", "ndjson", "xlsx", "xls", "sqlite", "parquet")
_EXTENSIONS = {
    "csv": "csv",
    "txt": "csv",
    "tsv": "tsv",
    "tab": "tsv",
    "json": "json",
    "ndjson": "ndjson",
    "jsonl": "ndjson",
    "xlsx": "xlsx",
    "xlsm": "xlsx",
    "xls": "xls",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "db": "sqlite",
    "parquet": "parquet",
    "pq": "parquet",
}


@dataclass
class Options:
    """How to read the file (from the import request)."""

    header: str = "auto"
    file_format: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    quote: str | None = None
    sheet: str | None = None
    """A sheet (XLSX/XLS) or table (SQLite) to import; None: all of them."""
    column_types: dict[str, str] = field(default_factory=dict)
    """Explicit SQL types by column name (normalised or as in the file)."""
    max_value_bytes: int = 64 * 1024 * 1024


@dataclass
class Column:
    name: str
    source: str
    type: str
    explicit: bool = False


@dataclass
class FastCsv:
    """Bytes Postgres parses itself: ``COPY … FROM STDIN (FORMAT csv, …)``."""

    chunks: Callable[[Progress], Iterator[bytes]]
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    header: bool = False
    encoding: str = "UTF8"


@dataclass
class SourceTable:
    source_name: str | None
    """The sheet or table of the file it comes from; None for single-table formats."""
    columns: list[Column]
    header: bool
    rows: Callable[[Progress], Iterator[Sequence[Any]]]
    """A fresh iterator over the values of every data row."""
    sample: list[list[Any]] = field(default_factory=list)
    json_values: bool = False
    text_values: bool = False
    """Every value is a string (CSV)."""
    fast: FastCsv | None = None
    lines_before: int = 0
    """Lines of the file before the first data row (the header): the source line of data
    row ``n`` is ``lines_before + n`` when no value spans lines."""


@dataclass
class Plan:
    file_format: str
    tables: list[SourceTable]
    csv: sniff.CsvSniff | None = None


# -- files ---------------------------------------------------------------------------------


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def decompress(src: Path, dst: Path, limit: int, progress: Progress) -> None:
    """Decompress a gzip file, streaming; the decompressed size is capped at ``limit``."""
    total = 0
    try:
        with gzip.open(src, "rb") as fin, dst.open("wb") as fout:
            while chunk := fin.read(READ_BYTES):
                total += len(chunk)
                if total > limit:
                    raise JobError(
                        "file_too_large",
                        f"the file decompresses to more than {limit} bytes"
                        " (MILLPOND_TRANSFER_MAX_FILE_BYTES)",
                        {"limit": limit},
                    )
                fout.write(chunk)
                progress.check()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        dst.unlink(missing_ok=True)
        raise invalid_file(
            f"the gzip file is truncated or corrupt ({exc}); nothing was imported",
            after_bytes=total,
        ) from exc


def detect_format(path: Path, file_name: str | None, explicit: str | None) -> str:
    """The format: as given, else by magic bytes (XLSX, XLS, SQLite, Parquet), else by
    the file name's extension, else by content (JSON array, NDJSON, delimited text)."""
    if explicit:
        return explicit
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "xls"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head.startswith(b"PAR1"):
        return "parquet"
    if file_name:
        base = file_name.lower()
        if base.endswith(".gz"):
            base = base[:-3]
        ext = base.rsplit(".", 1)[-1] if "." in base else ""
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "ndjson"
    return "csv"


# -- columns ---------------------------------------------------------------------------------


def _columns(
    source_names: Sequence[Any], types: Sequence[str], explicit: dict[str, str]
) -> list[Column]:
    if len(source_names) > MAX_COLUMNS:
        raise JobError(
            "too_many_columns",
            f"the file has {len(source_names)} columns; a Postgres table holds at most"
            f" {MAX_COLUMNS}",
            {"columns": len(source_names), "limit": MAX_COLUMNS},
        )
    target = names.unique_names(source_names)
    columns = []
    used: set[str] = set()
    for name, raw, kind in zip(target, source_names, types, strict=True):
        source = "" if raw is None else str(raw)
        override = explicit.get(name, explicit.get(source))
        if override is not None:
            used.add(name if name in explicit else source)
            columns.append(Column(name, source, override, explicit=True))
        else:
            columns.append(Column(name, source, kind))
    unknown = sorted(set(explicit) - used)
    if unknown:
        raise JobError(
            "column_mismatch",
            f"column_types names columns the file does not have: {', '.join(unknown)}",
            {"unknown_columns": unknown, "file_columns": target},
        )
    return columns


def _too_large(what: str, limit: int, **details: Any) -> JobError:
    return JobError(
        "value_too_large",
        f"{what} is larger than {limit} bytes (the largest value an import takes;"
        " MILLPOND_TRANSFER_MAX_VALUE_BYTES)",
        {"limit": limit, **details},
    )


# -- CSV / TSV -------------------------------------------------------------------------------


def _plan_csv(path: Path, fmt: str, opts: Options) -> Plan:
    delimiter = opts.delimiter or ("\t" if fmt == "tsv" else None)
    found = sniff.sniff_csv(
        path,
        header_mode=opts.header,
        max_line=opts.max_value_bytes,
        encoding=opts.encoding,
        delimiter=delimiter,
        quote=opts.quote,
    )
    width = found.width
    source_names: Sequence[Any] = found.header_row if found.header else names.generated_names(width)
    types = [
        infer.infer_column((r[j] for r in found.data_rows), infer.classify_text)
        for j in range(width)
    ]
    columns = _columns(source_names, types, opts.column_types)
    dialect = found.dialect
    encoding, bom, header = found.encoding, found.bom, found.header
    limit = opts.max_value_bytes

    def rows(progress: Progress) -> Iterator[Sequence[Any]]:
        csv.field_size_limit(limit)
        with path.open("rb") as raw:
            raw.seek(bom)
            text = io.TextIOWrapper(raw, encoding=encoding, newline="")
            reader = csv.reader(text, **dialect.reader_options())
            n = 0
            try:
                if header:
                    next(reader, None)
                for row in reader:
                    if not row:
                        continue
                    n += 1
                    if len(row) != width:
                        raise malformed_row(
                            f"row {n} (line {reader.line_num}) has {len(row)} values;"
                            f" the file's rows have {width}",
                            row=n,
                            line=reader.line_num,
                            values=len(row),
                            expected=width,
                        )
                    yield row
                    if not n & 0x3FF:
                        progress.bytes_done = raw.tell()
                        progress.rows_done = n
                        progress.check()
            except csv.Error as exc:
                if "field larger than field limit" in str(exc):
                    raise _too_large(
                        f"a value on line {reader.line_num}", limit, line=reader.line_num
                    ) from exc
                raise malformed_row(
                    f"line {reader.line_num}: {exc}", row=n + 1, line=reader.line_num
                ) from exc
            except UnicodeDecodeError as exc:
                line = reader.line_num + 1
                raise JobError(
                    "encoding_error",
                    f"the file is not valid {encoding} near line {line}; give the right encoding",
                    {"line": line, "encoding": encoding},
                ) from exc
            progress.bytes_done = raw.tell()

    fast = None
    pg_encoding = sniff.POSTGRES_ENCODINGS.get(encoding)
    if dialect.strict and pg_encoding:

        def chunks(progress: Progress) -> Iterator[bytes]:
            run = 0  # bytes since the last line end, across chunks
            line = 1
            # chunks no longer than the limit: a line over it spans two or more
            size = min(READ_BYTES, limit)
            with path.open("rb") as f:
                f.seek(bom)
                while chunk := f.read(size):
                    first = chunk.find(b"\n")
                    if first < 0:
                        run += len(chunk)
                    else:
                        run += first
                    if run > limit:
                        raise _too_large(f"line {line}", limit, line=line)
                    if first >= 0:
                        run = len(chunk) - chunk.rfind(b"\n") - 1
                        line += chunk.count(b"\n")
                    progress.bytes_done = f.tell()
                    progress.rows_done = max(0, line - 1 - int(header))
                    progress.check()
                    yield chunk

        fast = FastCsv(
            chunks,
            delimiter=dialect.delimiter,
            quote=dialect.quote,
            escape=dialect.escape,
            header=header,
            encoding=pg_encoding,
        )
    table = SourceTable(
        source_name=None,
        columns=columns,
        header=header,
        rows=rows,
        sample=[list(r) for r in found.sample[:PREVIEW_ROWS]],
        text_values=True,
        fast=fast,
        lines_before=1 if header else 0,
    )
    return Plan(fmt, [table], csv=found)


# -- JSON and NDJSON -------------------------------------------------------------------------


def _json_text(path: Path) -> IO[str]:
    return path.open("r", encoding="utf-8-sig", newline="")


def _iter_json_array(path: Path, limit: int, progress: Progress) -> Iterator[Any]:
    """The elements of a top-level JSON array, parsed one at a time (the file is never
    read whole)."""
    decoder = json.JSONDecoder()
    with _json_text(path) as f:
        buf, pos, eof, lines_before = "", 0, False, 0

        def fill() -> bool:
            nonlocal buf, pos, lines_before
            chunk = f.read(READ_BYTES)
            if pos > READ_BYTES:
                lines_before += buf.count("\n", 0, pos)
                buf, pos = buf[pos:], 0
            buf += chunk
            return bool(chunk)

        def skip_ws() -> None:
            nonlocal pos, eof
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or eof:
                    return
                eof = not fill()

        def where(at: int) -> int:
            return lines_before + buf.count("\n", 0, at) + 1

        try:
            eof = not fill()
            skip_ws()
            if pos >= len(buf) or buf[pos] != "[":
                raise invalid_file(
                    "a JSON file must hold an array of objects: [{...}, {...}]", line=where(pos)
                )
            pos += 1
            index = 0
            skip_ws()
            if pos < len(buf) and buf[pos] == "]":
                return
            while True:
                skip_ws()
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except RecursionError:
                    raise _too_deep(f"element {index + 1}", row=index + 1) from None
                except json.JSONDecodeError as exc:
                    if not eof and len(buf) - pos <= limit:
                        eof = not fill()
                        continue
                    if len(buf) - pos > limit:
                        raise _too_large(f"element {index + 1}", limit, row=index + 1) from exc
                    raise malformed_row(
                        f"invalid JSON in element {index + 1} (line {where(exc.pos)}): {exc.msg}",
                        row=index + 1,
                        line=where(exc.pos),
                    ) from exc
                if end >= len(buf) and not eof:  # a number may go on in the next chunk
                    eof = not fill()
                    continue
                if too_deep(buf[pos:end].encode(), DEFAULT_JSON_DEPTH):
                    raise _too_deep(f"element {index + 1}", row=index + 1)
                index += 1
                yield value
                pos = end
                skip_ws()
                if pos >= len(buf):
                    raise invalid_file("the JSON array is not closed with ]", row=index)
                if buf[pos] == ",":
                    pos += 1
                elif buf[pos] == "]":
                    pos += 1
                    skip_ws()
                    if pos < len(buf):
                        raise invalid_file(
                            f"unexpected data after the JSON array (line {where(pos)})",
                            line=where(pos),
                        )
                    return
                else:
                    raise malformed_row(
                        f"expected ',' or ']' after element {index} (line {where(pos)})",
                        row=index,
                        line=where(pos),
                    )
                if not index & 0x3FF:
                    progress.rows_done = index
                    progress.check()
        except UnicodeDecodeError as exc:
            raise JobError(
                "encoding_error", f"a JSON file must be UTF-8 text: {exc.reason}", {}
            ) from exc


def _too_deep(what: str, **where: int) -> JobError:
    return malformed_row(
        f"{what} nests JSON arrays/objects more than {DEFAULT_JSON_DEPTH} levels deep", **where
    )


def _iter_ndjson(path: Path, limit: int, progress: Progress) -> Iterator[Any]:
    try:
        with _json_text(path) as f:
            line_no = 0
            index = 0
            while True:
                line = f.readline(limit + 1)
                if not line:
                    return
                line_no += 1
                if len(line) > limit and not line.endswith("\n"):
                    raise _too_large(f"line {line_no}", limit, line=line_no)
                if not line.strip():
                    continue
                index += 1
                if too_deep(line.encode(), DEFAULT_JSON_DEPTH):
                    raise _too_deep(f"line {line_no}", row=index, line=line_no)
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise malformed_row(
                        f"line {line_no} is not valid JSON: {exc.msg}", row=index, line=line_no
                    ) from exc
                yield value
                if not index & 0x3FF:
                    progress.rows_done = index
                    progress.check()
    except UnicodeDecodeError as exc:
        raise JobError(
            "encoding_error", f"an NDJSON file must be UTF-8 text: {exc.reason}", {}
        ) from exc


def _plan_json(path: Path, fmt: str, opts: Options) -> Plan:
    elements = _iter_json_array if fmt == "json" else _iter_ndjson
    keys: dict[str, str | None] = {}
    sample: list[dict[str, Any]] = []
    scan = Progress()
    count = 0
    for count, obj in enumerate(elements(path, opts.max_value_bytes, scan), start=1):
        if not isinstance(obj, dict):
            raise malformed_row(
                f"element {count} is a {type(obj).__name__}, not an object: each row must be"
                ' a JSON object ({"column": value, …})',
                row=count,
            )
        for key, value in obj.items():
            kind = infer.classify_value(value)
            if key not in keys:
                if len(keys) >= MAX_COLUMNS:
                    raise JobError(
                        "too_many_columns",
                        f"the objects have more than {MAX_COLUMNS} distinct keys; a Postgres"
                        f" table holds at most {MAX_COLUMNS} columns",
                        {"limit": MAX_COLUMNS},
                    )
                keys[key] = kind
            elif kind is not None and kind != keys[key]:
                keys[key] = infer.join(keys[key], kind, json_values=True)
        if len(sample) < PREVIEW_ROWS:
            sample.append(obj)
    if not keys:
        raise JobError("empty_file", "the file has no rows to import (or only empty objects)")
    key_list = list(keys)
    columns = _columns(key_list, [keys[k] or infer.TEXT for k in key_list], opts.column_types)
    limit = opts.max_value_bytes

    def rows(progress: Progress) -> Iterator[Sequence[Any]]:
        for n, obj in enumerate(elements(path, limit, progress), start=1):
            if not isinstance(obj, dict):  # pragma: no cover - checked while planning
                raise malformed_row(f"element {n} is not an object", row=n)
            extra = obj.keys() - keys.keys()
            if extra:
                raise malformed_row(
                    f"element {n} has keys no earlier element had: {sorted(extra)}", row=n
                )
            yield [obj.get(k) for k in key_list]

    table = SourceTable(
        source_name=None,
        columns=columns,
        header=True,
        rows=rows,
        sample=[[o.get(k) for k in key_list] for o in sample],
        json_values=True,
    )
    return Plan(fmt, [table])


# -- spreadsheets ----------------------------------------------------------------------------


def _trim(row: Sequence[Any]) -> list[Any]:
    values = list(row)
    while values and (values[-1] is None or values[-1] == ""):
        values.pop()
    return values


def _sheet_table(
    name: str,
    opts: Options,
    open_rows: Callable[[], Iterator[Sequence[Any]]],
) -> SourceTable | None:
    """A table from a sheet's rows (None for an empty sheet)."""
    sample: list[list[Any]] = []
    for row in open_rows():
        values = _trim(row)
        if values:
            sample.append(values)
            if len(sample) >= SAMPLE_ROWS:
                break
    if not sample:
        return None

    def classify(v: Any) -> str | None:
        return infer.classify_value(v, excel=True)

    header = sniff.decide_header(sample, opts.header, classify)
    width = max(len(r) for r in sample)
    data = sample[1:] if header else sample
    types = [infer.infer_column((r[j] for r in data if j < len(r)), classify) for j in range(width)]
    first = sample[0] + [None] * (width - len(sample[0]))
    source_names = first if header else names.generated_names(width)
    columns = _columns(source_names, types, opts.column_types)

    def rows(progress: Progress) -> Iterator[Sequence[Any]]:
        n = 0
        it = open_rows()
        if header:
            for row in it:
                if _trim(row):
                    break
        for row in it:
            values = _trim(row)
            if not values:
                continue
            n += 1
            if len(values) > width:
                raise malformed_row(
                    f"sheet {name!r}, data row {n} has values beyond the last column",
                    row=n,
                    sheet=name,
                )
            yield values + [None] * (width - len(values))
            if not n & 0x3FF:
                progress.rows_done = n
                progress.check()

    return SourceTable(
        source_name=name,
        columns=columns,
        header=header,
        rows=rows,
        sample=[r + [None] * (width - len(r)) for r in data[:PREVIEW_ROWS]],
        lines_before=1 if header else 0,
    )


def _pick(available: list[str], wanted: str | None, what: str) -> list[str]:
    if wanted is None:
        return available
    for name in available:
        if name == wanted:
            return [name]
    for name in available:
        if name.lower() == wanted.lower():
            return [name]
    raise JobError(
        "source_not_found",
        f"the file has no {what} {wanted!r}; it has: {', '.join(available) or 'none'}",
        {"available": available},
    )


def _plan_xlsx(path: Path, opts: Options) -> Plan:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    def load() -> Any:
        # a file object: openpyxl would refuse a path without an .xlsx extension
        f = path.open("rb")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
                wb._millpond_file = f  # closed with the workbook (see close())
                return wb
            except (InvalidFileException, KeyError, OSError, ValueError) as exc:
                f.close()
                raise invalid_file(f"not a readable XLSX workbook: {exc}") from exc
            except Exception as exc:  # zipfile.BadZipFile and parser errors
                f.close()
                raise invalid_file(f"not a readable XLSX workbook: {exc}") from exc

    def close(wb: Any) -> None:
        wb.close()
        wb._millpond_file.close()

    wb = load()
    try:
        sheets = _pick(list(wb.sheetnames), opts.sheet, "sheet")
    finally:
        close(wb)

    def opener(sheet: str) -> Callable[[], Iterator[Sequence[Any]]]:
        def open_rows() -> Iterator[Sequence[Any]]:
            book = load()
            try:
                yield from book[sheet].iter_rows(values_only=True)
            finally:
                close(book)

        return open_rows

    return _sheets_plan("xlsx", sheets, opts, opener)


def _xls_value(cell: Any, datemode: int) -> Any:
    import xlrd

    kind, value = cell.ctype, cell.value
    if kind in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
        return None
    if kind == xlrd.XL_CELL_NUMBER:
        return int(value) if float(value).is_integer() and abs(value) < 2**53 else value
    if kind == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate_as_datetime(value, datemode)
        except (ValueError, OverflowError, xlrd.xldate.XLDateError):
            return value
    if kind == xlrd.XL_CELL_BOOLEAN:
        return bool(value)
    return value


def _plan_xls(path: Path, opts: Options) -> Plan:
    import xlrd

    def load() -> Any:
        try:
            return xlrd.open_workbook(str(path), on_demand=True)
        except Exception as exc:  # xlrd raises many kinds on a corrupt file
            raise invalid_file(f"not a readable XLS workbook: {exc}") from exc

    book = load()
    try:
        sheets = _pick(list(book.sheet_names()), opts.sheet, "sheet")
    finally:
        book.release_resources()

    def opener(sheet: str) -> Callable[[], Iterator[Sequence[Any]]]:
        def open_rows() -> Iterator[Sequence[Any]]:
            wb = load()
            try:
                ws = wb.sheet_by_name(sheet)
                for r in range(ws.nrows):
                    yield [_xls_value(c, wb.datemode) for c in ws.row(r)]
            finally:
                wb.release_resources()

        return open_rows

    return _sheets_plan("xls", sheets, opts, opener)


def _sheets_plan(
    fmt: str,
    sheets: list[str],
    opts: Options,
    opener: Callable[[str], Callable[[], Iterator[Sequence[Any]]]],
) -> Plan:
    tables = []
    for sheet in sheets:
        table = _sheet_table(sheet, opts, opener(sheet))
        if table is not None:
            tables.append(table)
    if not tables:
        what = f"sheet {sheets[0]!r} is" if opts.sheet else "every sheet is"
        raise JobError("empty_file", f"{what} empty: there are no rows to import")
    return Plan(fmt, tables)


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.text_factory = lambda b: b.decode(errors="replace")
    return conn


def _quote_sqlite(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _plan_sqlite(path: Path, opts: Options) -> Plan:
    try:
        conn = _sqlite_connect(path)
        available = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
    except sqlite3.DatabaseError as exc:
        raise invalid_file(f"not a readable SQLite database: {exc}") from exc
    try:
        chosen = _pick(available, opts.sheet, "table")
        tables = []
        for name in chosen:
            info = conn.execute(f"PRAGMA table_info({_quote_sqlite(name)})").fetchall()
            col_names = [r[1] for r in info]
            declared = [str(r[2] or "").upper() for r in info]
            quoted = _quote_sqlite(name)
            sample = conn.execute(f"SELECT * FROM {quoted} LIMIT {SAMPLE_ROWS}").fetchall()
            sample += conn.execute(
                f"SELECT * FROM {quoted} ORDER BY random() LIMIT {SAMPLE_ROWS}"
            ).fetchall()
            if not sample:
                if opts.sheet is None and len(chosen) > 1:
                    continue
                raise JobError("empty_file", f"table {name!r} has no rows to import")
            types = []
            for j, decl in enumerate(declared):
                values = [r[j] for r in sample]
                if "BOOL" in decl and all(v in (0, 1, None) for v in values):
                    types.append(infer.BOOLEAN)
                else:
                    types.append(infer.infer_column(values))
            columns = _columns(col_names, types, opts.column_types)
            tables.append(
                SourceTable(
                    source_name=name,
                    columns=columns,
                    header=True,
                    rows=_sqlite_rows(path, quoted),
                    sample=[list(r) for r in sample[:PREVIEW_ROWS]],
                )
            )
        if not tables:
            raise JobError("empty_file", "every table is empty: there are no rows to import")
        return Plan("sqlite", tables)
    finally:
        conn.close()


def _sqlite_rows(path: Path, quoted: str) -> Callable[[Progress], Iterator[Sequence[Any]]]:
    def rows(progress: Progress) -> Iterator[Sequence[Any]]:
        conn = _sqlite_connect(path)
        try:
            cur = conn.execute(f"SELECT * FROM {quoted}")
            n = 0
            while batch := cur.fetchmany(1000):
                yield from batch
                n += len(batch)
                progress.rows_done = n
                progress.check()
        finally:
            conn.close()

    return rows


# -- Parquet ---------------------------------------------------------------------------------


def _arrow_type(t: Any) -> str:
    import pyarrow as pa

    types = pa.types
    if types.is_boolean(t):
        return infer.BOOLEAN
    if types.is_integer(t):
        return infer.NUMERIC if t == pa.uint64() else infer.BIGINT
    if types.is_floating(t):
        return infer.DOUBLE
    if types.is_decimal(t):
        return infer.NUMERIC
    if types.is_date(t):
        return infer.DATE
    if types.is_timestamp(t):
        return infer.TIMESTAMPTZ if t.tz else infer.TIMESTAMP
    if types.is_time(t):
        return infer.TIME
    if types.is_binary(t) or types.is_large_binary(t) or types.is_fixed_size_binary(t):
        return infer.BYTEA
    if types.is_dictionary(t):
        return _arrow_type(t.value_type)
    if types.is_nested(t):
        return infer.JSONB
    return infer.TEXT


def _plan_parquet(path: Path, opts: Options) -> Plan:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise invalid_file(f"not a readable Parquet file: {exc}") from exc
    if pf.metadata.num_rows == 0:
        raise JobError("empty_file", "the Parquet file has no rows to import")
    source_names = list(schema.names)
    columns = _columns(source_names, [_arrow_type(f.type) for f in schema], opts.column_types)
    size = path.stat().st_size
    groups = max(pf.num_row_groups, 1)

    def batches(progress: Progress) -> Iterator[Any]:
        try:
            f = pq.ParquetFile(path)
            done = 0
            for i in range(f.num_row_groups):
                for batch in f.iter_batches(batch_size=65536, row_groups=[i]):
                    done += batch.num_rows
                    progress.rows_done = done
                    progress.check()
                    yield batch
                progress.bytes_done = size * (i + 1) // groups
        except (pa.ArrowException, OSError) as exc:
            raise invalid_file(f"the Parquet file cannot be read: {exc}") from exc

    def rows(progress: Progress) -> Iterator[Sequence[Any]]:
        for batch in batches(progress):
            yield from zip(*(c.to_pylist() for c in batch.columns), strict=True)

    def chunks(progress: Progress) -> Iterator[bytes]:
        import pyarrow.csv as pcsv

        options = pcsv.WriteOptions(include_header=False)
        for batch in batches(progress):
            sink = io.BytesIO()
            pcsv.write_csv(_csv_ready(batch), sink, options)
            yield sink.getvalue()

    sample_rows: list[list[Any]] = []
    for batch in pf.iter_batches(batch_size=PREVIEW_ROWS):
        sample_rows = [list(r) for r in zip(*(c.to_pylist() for c in batch.columns), strict=True)]
        break
    table = SourceTable(
        source_name=None,
        columns=columns,
        header=True,
        rows=rows,
        sample=sample_rows,
        fast=FastCsv(chunks),
    )
    return Plan("parquet", [table])


def _is_binary(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
    )


def _csv_ready(batch: Any) -> Any:
    """A record batch Arrow can write as CSV Postgres reads back exactly: nested values
    as JSON, binary as bytea hex, dictionaries decoded, floats' infinities spelled out."""
    import pyarrow as pa

    arrays = []
    for col in batch.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.dictionary_decode()
            t = col.type
        if pa.types.is_nested(t):
            col = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()],
                pa.string(),
            )
        elif (
            pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        ):
            col = pa.array(
                [None if v is None else "\\x" + v.hex() for v in col.to_pylist()], pa.string()
            )
        elif pa.types.is_duration(t) or pa.types.is_interval(t):
            col = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=[f"c{i}" for i in range(len(arrays))])


# -- the plan --------------------------------------------------------------------------------


def plan(path: Path, file_name: str | None, opts: Options) -> Plan:
    """Sniff the file and infer its tables; nothing is loaded."""
    if path.stat().st_size == 0:
        raise JobError("empty_file", "the file is empty: there are no rows to import")
    fmt = detect_format(path, file_name, opts.file_format)
    if fmt in ("csv", "tsv"):
        return _plan_csv(path, fmt, opts)
    if fmt in ("json", "ndjson"):
        return _plan_json(path, fmt, opts)
    if fmt == "xlsx":
        return _plan_xlsx(path, opts)
    if fmt == "xls":
        return _plan_xls(path, opts)
    if fmt == "sqlite":
        return _plan_sqlite(path, opts)
    if fmt == "parquet":
        return _plan_parquet(path, opts)
    raise JobError("unsupported_format", f"unsupported format {fmt!r}")
