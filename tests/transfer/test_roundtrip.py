"""Every format round-trips: a file made here is imported, its table queried, exported
back (in the same format where exports have it, else CSV), and the exported file read and
compared with what went in."""

from __future__ import annotations

import csv
import gzip
import io
import json
import sqlite3
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ._helpers import Api

# id, name, amount, flag, day, note
ROWS: list[tuple[Any, ...]] = [
    (1, "apple", 1.5, True, date(2024, 1, 31), "first"),
    (2, 'pear, "green"', -2.25, False, date(2024, 2, 29), None),
    (3, "naïve ☃ 日本", 1000000.125, True, date(1999, 12, 31), "line\nbreak"),
    (4, "", 0.0, False, date(2024, 3, 1), "last"),
]
COLUMNS = ["id", "name", "amount", "flag", "day", "note"]


def _csv(delimiter: str = ",") -> bytes:
    out = io.StringIO()
    w = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    w.writerow(["ID", "Name", "Amount", "Flag", "Day", "Note"])
    for r in ROWS:
        w.writerow(
            [
                r[0],
                r[1],
                repr(r[2]),
                "true" if r[3] else "false",
                r[4].isoformat(),
                "" if r[5] is None else r[5],
            ]
        )
    return out.getvalue().encode()


def _records() -> list[dict[str, Any]]:
    return [
        {c: (v.isoformat() if isinstance(v, date) else v) for c, v in zip(COLUMNS, r, strict=True)}
        for r in ROWS
    ]


def _xlsx(tmp: Path) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "fruit"
    ws.append(COLUMNS)
    for r in ROWS:
        ws.append([r[0], r[1], r[2], r[3], datetime(r[4].year, r[4].month, r[4].day), r[5]])
    path = tmp / "t.xlsx"
    wb.save(path)
    return path.read_bytes()


def _xls(tmp: Path) -> bytes:
    import xlwt

    wb = xlwt.Workbook(encoding="utf-8")
    ws = wb.add_sheet("fruit")
    style = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for c, name in enumerate(COLUMNS):
        ws.write(0, c, name)
    for i, r in enumerate(ROWS, start=1):
        for c, v in enumerate(r):
            if v is None:
                continue
            if isinstance(v, date):
                ws.write(i, c, datetime(v.year, v.month, v.day), style)
            else:
                ws.write(i, c, v)
    path = tmp / "t.xls"
    wb.save(str(path))
    return path.read_bytes()


def _sqlite(tmp: Path) -> bytes:
    path = tmp / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE fruit (id INTEGER, name TEXT, amount REAL, flag BOOLEAN, day TEXT, note TEXT)"
    )
    conn.executemany(
        "INSERT INTO fruit VALUES (?, ?, ?, ?, ?, ?)",
        [(r[0], r[1], r[2], int(r[3]), r[4].isoformat(), r[5]) for r in ROWS],
    )
    conn.commit()
    conn.close()
    return path.read_bytes()


def _parquet(tmp: Path) -> bytes:
    table = pa.table({c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)})
    path = tmp / "t.parquet"
    pq.write_table(table, path)
    return path.read_bytes()


MAKERS: dict[str, tuple[str, Callable[[Path], bytes]]] = {
    "csv": ("fruit.csv", lambda tmp: _csv()),
    "tsv": ("fruit.tsv", lambda tmp: _csv("\t")),
    "csv.gz": ("fruit.csv.gz", lambda tmp: gzip.compress(_csv())),
    "json": ("fruit.json", lambda tmp: json.dumps(_records()).encode()),
    "ndjson": ("fruit.ndjson", lambda tmp: "\n".join(map(json.dumps, _records())).encode()),
    "xlsx": ("fruit.xlsx", _xlsx),
    "xls": ("fruit.xls", _xls),
    "sqlite": ("fruit.sqlite", _sqlite),
    "parquet": ("fruit.parquet", _parquet),
}
EXPORT_AS = {"tsv": "csv", "csv.gz": "csv", "sqlite": "csv"}
AMOUNT_TYPE = {"csv": "numeric", "tsv": "numeric", "csv.gz": "numeric"}


def _norm_row(values: list[Any]) -> tuple[Any, ...]:
    """(id, name, amount, flag, day, note) with canonical Python values."""
    i, name, amount, flag, day, note = values
    if isinstance(flag, str):
        flag = {"t": True, "true": True, "f": False, "false": False}[flag]
    if isinstance(day, datetime):
        day = day.date()
    if isinstance(day, str):
        day = date.fromisoformat(day[:10])
    return (int(i), name or "", float(amount), bool(flag), day, note or None)


def _read_export(fmt: str, data: bytes, tmp: Path) -> list[tuple[Any, ...]]:
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
        assert rows[0] == COLUMNS
        return [_norm_row(r) for r in rows[1:]]
    if fmt == "json":
        return [_norm_row([o[c] for c in COLUMNS]) for o in json.loads(data)]
    if fmt == "ndjson":
        lines = data.decode().splitlines()
        return [_norm_row([json.loads(line)[c] for c in COLUMNS]) for line in lines]
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == COLUMNS
        return [_norm_row([r[c] for c in COLUMNS]) for r in table.to_pylist()]
    if fmt == "xlsx":
        from openpyxl import load_workbook

        path = tmp / "out.xlsx"
        path.write_bytes(data)
        ws = load_workbook(path, read_only=True).active
        rows = [list(r) + [None] * (6 - len(r)) for r in ws.iter_rows(values_only=True)]
        assert rows[0] == COLUMNS
        return [_norm_row(r) for r in rows[1:]]
    if fmt == "xls":
        import xlrd

        book = xlrd.open_workbook(file_contents=data)
        sheet = book.sheet_by_index(0)
        assert sheet.row_values(0) == COLUMNS
        out = []
        for r in range(1, sheet.nrows):
            values = sheet.row_values(r)
            values[4] = xlrd.xldate_as_datetime(values[4], book.datemode)
            out.append(_norm_row(values))
        return out
    raise AssertionError(fmt)


EXPECTED = [_norm_row(list(r)) for r in ROWS]


@pytest.mark.parametrize("fmt", list(MAKERS))
def test_round_trip(fmt: str, xfer: Api, owner: tuple[str, str], db: str, tmp_path: Path) -> None:
    key = owner[1]
    filename, make = MAKERS[fmt]
    job = xfer.run_import(key, db, "fruit", make(tmp_path), filename)
    assert job["state"] == "DONE", (job["error_type"], job["error_details"])
    assert job["rows_done"] == len(ROWS)
    (table,) = job["tables"]
    assert table["table_name"] == "fruit" and table["rows"] == len(ROWS)
    types = {c["name"]: c["type"] for c in table["columns"]}
    assert list(types) == COLUMNS
    assert types["id"] == "bigint"
    assert types["name"] == "text"
    assert types["amount"] == AMOUNT_TYPE.get(fmt, "double precision")
    assert types["flag"] == "boolean"
    assert types["day"] == "date"

    data = xfer.query(key, db, "SELECT id, name, amount::float8, flag, day::text, note FROM fruit")
    assert sorted(_norm_row(r) for r in data) == EXPECTED

    export_format = EXPORT_AS.get(fmt, fmt)
    exported = xfer.run_export(
        key, db, query_string="SELECT * FROM fruit ORDER BY id", export_format=export_format
    )
    assert exported["state"] == "DONE", exported
    assert exported["rows_done"] == len(ROWS)
    assert exported["file_name"] == f"export.{export_format}"
    content = xfer.download(exported)
    assert _read_export(export_format, content, tmp_path) == EXPECTED
