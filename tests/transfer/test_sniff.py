"""The pure parts of imports, without a server: names, type inference, CSV sniffing,
header decisions, format detection and the plans of every format."""

from __future__ import annotations

import codecs
import gzip
import json
import sqlite3
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from millpond.server.transfer import infer, names, signing, sniff, sources
from millpond.server.transfer.errors import JobError
from millpond.server.transfer.fetch import check_url, literal_refused
from millpond.server.transfer.progress import Progress

# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Unit Price (€)", "unit_price"),
        ("  id ", "id"),
        ("First-Name", "first_name"),
        ("2024 sales", "_2024_sales"),
        ("", "column_3"),
        (None, "column_3"),
        ("___", "column_3"),
        ("Größe", "größe"),
        ("a" * 80, "a" * 63),
        ("é" * 40, "é" * 31),
    ],
)
def test_normalise(raw: object, expected: str) -> None:
    assert names.normalise(raw, 3) == expected
    assert len(names.normalise(raw, 3).encode()) <= 63


def test_duplicates_are_made_unique() -> None:
    assert names.unique_names(["a", "A", "a ", "b", "", ""]) == [
        "a",
        "a_2",
        "a_3",
        "b",
        "column_5",
        "column_6",
    ]
    long = ["x" * 70, "x" * 70]
    made = names.unique_names(long)
    assert made[0] == "x" * 63 and made[1] == "x" * 61 + "_2"


# -- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("42", infer.BIGINT),
        ("-7", infer.BIGINT),
        ("+7", infer.BIGINT),
        ("0", infer.BIGINT),
        ("007", infer.TEXT),
        ("9223372036854775807", infer.BIGINT),
        ("9223372036854775808", infer.NUMERIC),
        ("1.50", infer.NUMERIC),
        (".5", infer.NUMERIC),
        ("1e10", infer.DOUBLE),
        ("-2.5E-3", infer.DOUBLE),
        ("NaN", infer.DOUBLE),
        ("true", infer.BOOLEAN),
        ("F", infer.BOOLEAN),
        ("yes", infer.BOOLEAN),
        ("2024-02-29", infer.DATE),
        ("2023-02-29", infer.TEXT),
        ("2024-01-31 12:30", infer.TIMESTAMP),
        ("2024-01-31T12:30:15.123456", infer.TIMESTAMP),
        ("2024-01-31T12:30:15Z", infer.TIMESTAMPTZ),
        ("2024-01-31 12:30:15+02:00", infer.TIMESTAMPTZ),
        ("2024-01-31 25:30", infer.TEXT),
        ('{"a": 1}', infer.JSONB),
        ("[1, 2]", infer.JSONB),
        ("{not json}", infer.TEXT),
        ("1,234", infer.TEXT),
        ("12:30", infer.TEXT),
        (" ", infer.TEXT),
        ("", None),
        ("hello", infer.TEXT),
    ],
)
def test_classify_text(text: str, kind: str | None) -> None:
    assert infer.classify_text(text) == kind


def test_classify_values() -> None:
    assert infer.classify_value(True) == infer.BOOLEAN
    assert infer.classify_value(3) == infer.BIGINT
    assert infer.classify_value(2**70) == infer.NUMERIC
    assert infer.classify_value(1.5) == infer.DOUBLE
    assert infer.classify_value(Decimal("1.5")) == infer.NUMERIC
    assert infer.classify_value(date(2024, 1, 1)) == infer.DATE
    assert infer.classify_value(datetime(2024, 1, 1)) == infer.TIMESTAMP
    assert infer.classify_value(datetime(2024, 1, 1), excel=True) == infer.DATE
    assert infer.classify_value({"a": 1}) == infer.JSONB
    assert infer.classify_value(b"\x00") == infer.BYTEA


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["1", "2", ""], infer.BIGINT),
        (["1", "2.5"], infer.NUMERIC),
        (["1", "2e3"], infer.DOUBLE),
        (["2024-01-01", "2024-01-01 10:00"], infer.TIMESTAMP),
        (["2024-01-01", "2024-01-01T10:00Z"], infer.TIMESTAMPTZ),
        (["1", "abc"], infer.TEXT),
        (["true", "1"], infer.TEXT),
        (["", ""], infer.TEXT),
        ([], infer.TEXT),
    ],
)
def test_infer_column(values: list[str], kind: str) -> None:
    assert infer.infer_column(values, infer.classify_text) == kind


def test_json_values_mixing_objects_and_scalars_are_jsonb() -> None:
    assert infer.infer_column([{"a": 1}, 3], json_values=True) == infer.JSONB
    assert infer.infer_column([{"a": 1}, 3]) == infer.TEXT


def test_widen() -> None:
    assert infer.widen(infer.BIGINT, "1.5") == infer.NUMERIC
    assert infer.widen(infer.BIGINT, "abc") == infer.TEXT
    assert infer.widen(infer.BIGINT, None) == infer.NUMERIC
    assert infer.widen(infer.DATE, "2024-01-01 10:00") == infer.TIMESTAMP
    assert infer.widen(infer.BOOLEAN, "maybe") == infer.TEXT
    assert infer.widen(infer.TEXT, "x") is None


@pytest.mark.parametrize(
    ("spelling", "sql"),
    [
        ("TEXT", "text"),
        ("int", "integer"),
        ("Double  Precision", "double precision"),
        ("timestamp with time zone", "timestamptz"),
        ("numeric(10, 2)", "numeric(10,2)"),
        ("varchar(20)", "varchar(20)"),
        ("text; drop table x", None),
        ("numeric(2,5)", None),
        ("geometry", None),
    ],
)
def test_canonical_types(spelling: str, sql: str | None) -> None:
    assert infer.canonical_type(spelling) == sql


def test_render_text() -> None:
    assert infer.render_text(None, infer.TEXT) is None
    assert infer.render_text("", infer.TEXT) is None
    assert infer.render_text(True, infer.BOOLEAN) == "true"
    assert infer.render_text(3.0, infer.BIGINT) == "3"
    assert infer.render_text(float("nan"), infer.DOUBLE) == "NaN"
    assert infer.render_text(float("-inf"), infer.DOUBLE) == "-Infinity"
    assert infer.render_text(datetime(2024, 1, 2), infer.DATE) == "2024-01-02"
    assert infer.render_text({"a": [1]}, infer.TEXT) == '{"a": [1]}'
    assert infer.render_text("x", infer.JSONB, json_values=True) == '"x"'
    assert infer.render_text('{"a":1}', infer.JSONB) == '{"a":1}'
    assert infer.render_text(b"\x01\xff", "bytea") == "\\x01ff"


# -- CSV sniffing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("a,b,c\n1,2,3\n4,5,6\n", ","),
        ("a;b;c\n1,5;2;3\n4;5;6\n", ";"),
        ("a\tb\tc\n1\t2\t3\n", "\t"),
        ("a|b\n1|2\n", "|"),
        ('name,remark\n"Smith, J","said ""hi"""\n', ","),
        ("single\n1\n2\n", ","),
    ],
)
def test_sniff_delimiter(text: str, delimiter: str) -> None:
    dialect = sniff.sniff_dialect(text)
    assert dialect.delimiter == delimiter
    assert dialect.strict


def test_sniff_lenient_quotes_and_line_ends() -> None:
    assert not sniff.sniff_dialect('a,b\n5" screen,2\n').strict
    assert not sniff.sniff_dialect("a,b\r\n1,2\n3,4\n").strict
    crlf = sniff.sniff_dialect("a,b\r\n1,2\r\n")
    assert crlf.strict and crlf.line_terminator == "\r\n"
    escaped = sniff.sniff_dialect('a,b\n"x \\"y\\"",2\n')
    assert escaped.escape == "\\"


@pytest.mark.parametrize(
    ("rows", "header"),
    [
        ([["id", "price"], ["1", "2.5"], ["2", "3"]], True),
        ([["1", "2.5"], ["2", "3"]], False),
        ([["name", "city"], ["ann", "rome"]], True),
        ([["ann", "ann"], ["bob", "rome"]], False),
        ([["name", ""], ["ann", "rome"]], False),
        ([["id", "price"]], True),
        ([["1", "2"]], False),
    ],
)
def test_decide_header(rows: list[list[str]], header: bool) -> None:
    assert sniff.decide_header(rows, "auto", infer.classify_text) is header
    assert sniff.decide_header(rows, "first_row", infer.classify_text) is True
    assert sniff.decide_header(rows, "no_header", infer.classify_text) is False


def test_encoding_detection(tmp_path: Path) -> None:
    cases = {
        "utf8.csv": ("name\ncafé\n".encode(), "utf-8"),
        "bom.csv": (b"\xef\xbb\xbfname\ncaf\xc3\xa9\n", "utf-8"),
        "cp1252.csv": ("name\ncafé \u2013 \u201cx\u201d\n".encode("cp1252"), "cp1252"),
        "latin1.csv": (b"name\ncaf\xe9\x81\n", "latin-1"),
        "utf16.csv": (codecs.BOM_UTF16_LE + "name\ncafé\n".encode("utf-16-le"), "utf-16-le"),
    }
    for name, (data, encoding) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        samples = sniff.read_samples(path, 1 << 20)
        assert sniff.detect_encoding(samples) == encoding, name


def test_samples_come_from_several_places(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    lines = ["n,v"] + [f"{i},{i}" for i in range(200_000)]
    lines[150_000] = "150000,not a number"
    path.write_text("\n".join(lines) + "\n")
    samples = sniff.read_samples(path, 1 << 20)
    assert len(samples.chunks) == sniff.CHUNKS
    assert all(c.endswith(b"\n") and not c.startswith(b"\n") for c in samples.chunks)
    assert samples.head.endswith(b"\n")
    found = sniff.sniff_csv(path, header_mode="auto", max_line=1 << 20)
    assert found.header and found.header_row == ["n", "v"]
    assert len(found.data_rows) > 3000  # head and chunks


# -- plans ---------------------------------------------------------------------------------


def _plan(path: Path, **options: object) -> sources.Plan:
    return sources.plan(path, path.name, sources.Options(**options))  # type: ignore[arg-type]


def test_csv_plan(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("Id,Name,Price,Day,Zip\n1,a,1.5,2024-01-01,007\n2,b,,2024-01-02,010\n")
    plan = _plan(path)
    (table,) = plan.tables
    assert [(c.name, c.type) for c in table.columns] == [
        ("id", "bigint"),
        ("name", "text"),
        ("price", "numeric"),
        ("day", "date"),
        ("zip", "text"),
    ]
    assert table.fast is not None and table.fast.header
    assert list(table.rows(Progress())) == [
        ["1", "a", "1.5", "2024-01-01", "007"],
        ["2", "b", "", "2024-01-02", "010"],
    ]
    typed = _plan(path, column_types={"Price": "text", "day": "timestamp"})
    assert [(c.type, c.explicit) for c in typed.tables[0].columns][2:4] == [
        ("text", True),
        ("timestamp", True),
    ]
    with pytest.raises(JobError) as err:
        _plan(path, column_types={"nope": "text"})
    assert err.value.error_type == "column_mismatch"


def test_ragged_rows_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    (table,) = _plan(path).tables
    with pytest.raises(JobError) as err:
        list(table.rows(Progress()))
    assert err.value.error_type == "malformed_row"
    assert err.value.details == {"row": 2, "line": 3, "values": 3, "expected": 2}


def test_format_detection(tmp_path: Path) -> None:
    path = tmp_path / "x"
    for content, name, fmt in [
        (b"PK\x03\x04...", None, "xlsx"),
        (b"SQLite format 3\x00", None, "sqlite"),
        (b"PAR1", None, "parquet"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", None, "xls"),
        (b' [{"a": 1}]', None, "json"),
        (b'{"a": 1}\n', None, "ndjson"),
        (b"a,b\n", None, "csv"),
        (b"a\tb\n", "data.tsv.gz", "tsv"),
        (b"a,b\n", "data.jsonl", "ndjson"),
    ]:
        path.write_bytes(content)
        assert sources.detect_format(path, name, None) == fmt, content


def test_json_is_read_incrementally(tmp_path: Path) -> None:
    rows = [
        {"id": i, "tags": ["x"] * (i % 3), "when": "2024-01-01", "n": i / 2} for i in range(5000)
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(rows, indent=1))
    (table,) = _plan(path).tables
    assert [(c.name, c.type) for c in table.columns] == [
        ("id", "bigint"),
        ("tags", "jsonb"),
        ("when", "date"),
        ("n", "double precision"),
    ]
    got = list(table.rows(Progress()))
    assert len(got) == 5000 and got[4999] == [4999, ["x"], "2024-01-01", 2499.5]


def test_bad_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('[\n{"a": 1},\n{"a": 2,,}\n]')
    with pytest.raises(JobError) as err:
        _plan(path)
    assert err.value.error_type == "malformed_row"
    assert err.value.details["row"] == 2 and err.value.details["line"] == 3
    path = tmp_path / "t.ndjson"
    path.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(JobError) as err:
        _plan(path)
    assert err.value.details["row"] == 2


def test_gzip_is_decompressed_and_truncation_detected(tmp_path: Path) -> None:
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 10000)
    src, dst = tmp_path / "t.csv.gz", tmp_path / "out"
    src.write_bytes(data)
    assert sources.is_gzip(src)
    sources.decompress(src, dst, 1 << 30, Progress())
    assert dst.read_bytes().count(b"\n") == 10001
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(JobError) as err:
        sources.decompress(src, dst, 1 << 30, Progress())
    assert err.value.error_type == "invalid_file"
    src.write_bytes(data)
    with pytest.raises(JobError) as err:
        sources.decompress(src, dst, 1000, Progress())
    assert err.value.error_type == "file_too_large"


def test_sqlite_plan_has_every_table(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE b (id INTEGER, ok BOOLEAN, day TEXT)")
        conn.execute("INSERT INTO b VALUES (1, 1, '2024-01-01'), (2, 0, NULL)")
        conn.execute('CREATE TABLE "A x" (v REAL)')
        conn.execute('INSERT INTO "A x" VALUES (1.5)')
    conn.close()
    plan = _plan(path)
    assert [t.source_name for t in plan.tables] == ["A x", "b"]
    assert [c.type for c in plan.tables[1].columns] == ["bigint", "boolean", "date"]
    assert [t.source_name for t in _plan(path, sheet="b").tables] == ["b"]
    with pytest.raises(JobError) as err:
        _plan(path, sheet="nope")
    assert err.value.error_type == "source_not_found"


# -- URLs and signatures -------------------------------------------------------------------


def test_urls() -> None:
    assert check_url("ftp://x/y") is not None
    assert check_url("http://") is not None
    assert check_url("https://user:pw@example.com/") is not None
    assert check_url("https://example.com/data.csv") is None
    for url in (
        "http://127.0.0.1/x",
        "http://localhost:8000/x",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ):
        assert literal_refused(url), url
    assert not literal_refused("http://93.184.216.34/")
    assert not literal_refused("https://example.com/")


def test_signatures() -> None:
    secret = b"s3cret"
    sig = signing.sign(secret, "exp_1", 2000)
    assert signing.verify(secret, "exp_1", 2000, sig, now=1000) == "ok"
    assert signing.verify(secret, "exp_1", 2000, sig, now=2000) == "expired"
    assert signing.verify(secret, "exp_2", 2000, sig, now=1000) == "invalid"
    assert signing.verify(secret, "exp_1", 3000, sig, now=1000) == "invalid"
    assert signing.verify(b"other", "exp_1", 2000, sig, now=1000) == "invalid"
