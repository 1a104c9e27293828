"""Exports through the API: every type into every format, queries (read only, one
statement), signed download links, expiry and clean-up, and who may export."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.server.transfer import worker

from ._helpers import Api, error

MakeUser = Callable[..., tuple[str, str]]

SETUP = """
CREATE TABLE typed (
    id int PRIMARY KEY, small smallint, big bigint, price numeric(10,2), exact numeric,
    ratio double precision, ok boolean, day date, at timestamp, at_tz timestamptz,
    span interval, tags text[], doc jsonb, raw bytea, uid uuid, label text
);
INSERT INTO typed VALUES
 (1, 2, 9007199254740993, 12.34, 1.000000000000000000001, 0.5, true, '2024-02-29',
  '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+02', '1 day 2 hours', '{a,"b c"}',
  '{"k": [1, "x"]}', '\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  'comma, "quote", newline
and back\\slash'),
 (2, NULL, NULL, NULL, NULL, 'NaN', false, NULL, NULL, NULL, NULL, '{}', 'null', NULL, NULL, '');
"""


@pytest.fixture
def typed_db(xfer: Api, owner: tuple[str, str]) -> str:
    db = xfer.make_db(owner[1])
    xfer.query(owner[1], db, SETUP)
    return db


def _export(xfer: Api, key: str, db: str, fmt: str, **fields: Any) -> bytes:
    job = xfer.run_export(key, db, export_format=fmt, **fields)
    assert job["state"] == "DONE", (job["error_type"], job["error_details"])
    return xfer.download(job)


def test_parquet_keeps_types(xfer: Api, owner: tuple[str, str], typed_db: str) -> None:
    data = _export(xfer, owner[1], typed_db, "parquet", table_name="typed")
    table = pq.read_table(io.BytesIO(data))
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    assert types["id"] == pa.int32() and types["small"] == pa.int16()
    assert types["big"] == pa.int64() and types["ratio"] == pa.float64()
    assert types["price"] == pa.decimal128(10, 2)
    assert types["exact"] == pa.string()  # numeric without precision: text, exactly
    assert types["ok"] == pa.bool_() and types["day"] == pa.date32()
    assert types["at"] == pa.timestamp("us")
    assert types["at_tz"] == pa.timestamp("us", tz="UTC")
    assert types["raw"] == pa.binary()
    first, second = table.to_pylist()
    assert first["big"] == 9007199254740993
    assert first["price"] == Decimal("12.34")
    assert first["exact"] == "1.000000000000000000001"
    assert first["at"].isoformat() == "2024-02-29T12:34:56.789000"
    assert first["at_tz"].isoformat() == "2024-02-29T10:34:56+00:00"
    assert first["span"] == "1 day 02:00:00"
    assert json.loads(first["tags"]) == ["a", "b c"]
    assert json.loads(first["doc"]) == {"k": [1, "x"]}
    assert first["raw"] == b"\x00\xff"
    assert first["label"] == 'comma, "quote", newline\nand back\\slash'
    assert second["label"] == "" and second["day"] is None and second["small"] is None
    assert second["ratio"] != second["ratio"]  # NaN


def test_json_and_ndjson(xfer: Api, owner: tuple[str, str], typed_db: str) -> None:
    query = "SELECT id, doc, tags, label, ratio, at_tz FROM typed ORDER BY id"
    rows = json.loads(_export(xfer, owner[1], typed_db, "json", query_string=query))
    lines = _export(xfer, owner[1], typed_db, "ndjson", query_string=query).splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert rows[0] == {
        "id": 1,
        "doc": {"k": [1, "x"]},
        "tags": ["a", "b c"],
        "label": 'comma, "quote", newline\nand back\\slash',
        "ratio": 0.5,
        "at_tz": "2024-02-29T10:34:56+00:00",
    }
    assert rows[1]["ratio"] == "NaN" and rows[1]["doc"] is None
    empty = _export(xfer, owner[1], typed_db, "json", query_string="SELECT 1 WHERE false")
    assert json.loads(empty) == []


def test_csv_and_spreadsheets(
    xfer: Api, owner: tuple[str, str], typed_db: str, tmp_path: Path
) -> None:
    key = owner[1]
    text = _export(xfer, key, typed_db, "csv", table_name="typed").decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][:3] == ["id", "small", "big"]
    assert rows[1][-1] == 'comma, "quote", newline\nand back\\slash'
    assert rows[2][1] == "" and rows[2][-1] == ""

    from openpyxl import load_workbook

    path = tmp_path / "t.xlsx"
    path.write_bytes(_export(xfer, key, typed_db, "xlsx", table_name="typed"))
    sheet = load_workbook(path, read_only=True)["typed"]
    got = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert got[0][0] == "id" and got[1][0] == 1 and got[1][6] is True
    assert got[1][9].isoformat() == "2024-02-29T10:34:56"  # UTC, as spreadsheets have no zones

    import xlrd

    book = xlrd.open_workbook(file_contents=_export(xfer, key, typed_db, "xls", table_name="typed"))
    sheet = book.sheet_by_index(0)
    assert sheet.row_values(0)[:2] == ["id", "small"] and sheet.nrows == 3
    too_many = xfer.run_export(
        key, typed_db, export_format="xls", query_string="SELECT generate_series(1, 70000)"
    )
    error(too_many, "too_many_rows")


def test_queries_are_one_read_only_statement(
    xfer: Api, owner: tuple[str, str], typed_db: str
) -> None:
    key = owner[1]
    for query in ("SELECT id FROM typed ORDER BY id;\n ", "SELECT id FROM typed ORDER BY id -- c"):
        assert _export(xfer, key, typed_db, "csv", query_string=query) == b"id\n1\n2\n"
    chained = xfer.run_export(
        key, typed_db, query_string="SELECT 1) q; DROP TABLE typed; SELECT * FROM (SELECT 1"
    )
    error(chained, "sql_error")
    writing = xfer.run_export(key, typed_db, query_string="DELETE FROM typed RETURNING *")
    error(writing, "sql_error")
    assert xfer.query(key, typed_db, "SELECT count(*) FROM typed") == [[2]]
    missing = xfer.run_export(key, typed_db, table_name="nope")
    error(missing, "table_not_found")
    bad = xfer.run_export(key, typed_db, query_string="SELEC 1")
    assert "syntax" in error(bad, "sql_error")["message"]


def test_request_validation(xfer: Api, owner: tuple[str, str], typed_db: str) -> None:
    key = owner[1]

    def code(**fields: Any) -> tuple[int, str]:
        r = xfer.post("/v1/exports", key, json={"db_name": typed_db, **fields})
        return r.status_code, r.json()["error"]["code"]

    assert code() == (422, "validation_error")
    assert code(table_name="t", query_string="SELECT 1") == (422, "validation_error")
    assert code(query_string="SELECT 1", schema_name="x") == (422, "validation_error")
    assert code(table_name="t", export_format="pdf") == (422, "validation_error")
    r = xfer.post(
        "/v1/exports",
        key,
        json={"db_name": typed_db, "table_name": "typed", "file_name": "../../etc/passwd"},
    )
    assert r.status_code == 202 and r.json()["file_name"] == "passwd.csv"
    assert xfer.get("/v1/exports/exp_nope", key).status_code == 404


def test_download_links(
    xfer: Api,
    owner: tuple[str, str],
    typed_db: str,
    superuser: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = owner[1]
    job = xfer.run_export(key, typed_db, table_name="typed", export_format="ndjson")
    link = job["download_url"]
    assert job["expires_at"] and "signature=" in link
    r = xfer.client.get(link)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="typed.ndjson"' in r.headers["content-disposition"]
    tampered = link.replace("signature=", "signature=x")
    assert xfer.client.get(tampered).json()["error"]["code"] == "invalid_signature"
    longer = link.replace("expires=", "expires=9")
    assert xfer.client.get(longer).status_code == 403
    other = link.replace(job["id"], "exp_" + "0" * 24)
    assert xfer.client.get(other).status_code == 403

    # past its expiry the link is gone, and the worker deletes the file
    with superuser() as conn:
        conn.execute(
            "UPDATE transfer_jobs SET expires_at = now() - interval '1 second' WHERE id = %s",
            (job["id"],),
        )
        (path,) = conn.execute(
            "SELECT file_path FROM transfer_jobs WHERE id = %s", (job["id"],)
        ).fetchone()
    r = xfer.client.get(link)
    assert r.status_code == 410 and r.json()["error"]["code"] == "export_expired"
    assert xfer.get(f"/v1/exports/{job['id']}", key).json()["download_url"] is None
    monkeypatch.setattr(worker, "CLEANUP_EVERY_S", 0.1)
    deadline = time.monotonic() + 10
    while Path(path).exists():
        assert time.monotonic() < deadline, "the expired export was not cleaned up"
        # a queued job wakes the worker loop, which cleans up on its way
        xfer.post("/v1/exports", key, json={"db_name": typed_db, "query_string": "SELECT 1"})
        time.sleep(0.2)


def test_access_rules(xfer: Api, owner: tuple[str, str], make_user: MakeUser) -> None:
    key = owner[1]
    db = xfer.make_db(key)
    xfer.query(key, db, "CREATE TABLE t AS SELECT 1 AS x")
    reader_name, reader = make_user(prefix="reader")
    _, stranger = make_user(prefix="stranger")
    xfer.request(
        "PUT", f"/v1/databases/{db}/collaborators/{reader_name}", key, json={"role": "read"}
    )

    job = xfer.run_export(reader, db, table_name="t")  # readers can export
    assert xfer.download(job) == b"x\n1\n"
    r = xfer.post("/v1/exports", stranger, json={"db_name": db, "table_name": "t"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "database_not_found"
    assert (
        xfer.post("/v1/exports", None, json={"db_name": db, "table_name": "t"}).status_code == 401
    )
    assert xfer.get(f"/v1/exports/{job['id']}", stranger).status_code == 404
    ro_key = xfer.post("/v1/keys", key, json={"scope": "read"}).json()["secret"]
    assert xfer.run_export(ro_key, db, table_name="t")["state"] == "DONE"
