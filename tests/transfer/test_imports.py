"""Imports through the API: modes, inference and overrides, previews, bad files (which
fail with a clear error and change nothing), limits, URLs and who may import."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from millpond.server.testing import ServerThread

from ._helpers import Api, error

MakeUser = Callable[..., tuple[str, str]]
CSV = b"id,name,price\n1,apple,1.5\n2,pear,2\n"


def _key(owner: tuple[str, str]) -> str:
    return owner[1]


# -- modes ---------------------------------------------------------------------------------


def test_create_append_replace(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    assert xfer.run_import(key, db, "t", CSV)["state"] == "DONE"
    again = xfer.run_import(key, db, "t", CSV)
    assert "already exists" in error(again, "table_exists")["message"]

    # append maps columns by name, whatever their order and spelling in the file
    appended = xfer.run_import(key, db, "t", b"Price,ID,Name\n3.5,3,kiwi\n", mode="append")
    assert appended["state"] == "DONE", appended
    assert xfer.query(key, db, "SELECT id, name, price::text FROM t ORDER BY id") == [
        [1, "apple", "1.5"],
        [2, "pear", "2"],
        [3, "kiwi", "3.5"],
    ]
    mismatch = xfer.run_import(key, db, "t", b"id,colour\n4,red\n", mode="append")
    details = error(mismatch, "column_mismatch")
    assert details["unknown_columns"] == ["colour"]
    assert details["table_columns"] == ["id", "name", "price"]

    # a value the table's type refuses: nothing appended, the row and line are named
    bad = xfer.run_import(key, db, "t", b"id,price\n5,1\n6,cheap\n", mode="append")
    details = error(bad, "invalid_value")
    assert (details["row"], details["line"], details["column"]) == (2, 3, "price")
    assert details["value"] == "cheap"
    assert xfer.query(key, db, "SELECT count(*) FROM t") == [[3]]

    replaced = xfer.run_import(key, db, "t", b"x,y\nA,B\n", mode="replace")
    assert replaced["state"] == "DONE", replaced
    assert xfer.query(key, db, "SELECT * FROM t") == [["A", "B"]]
    missing = xfer.run_import(key, db, "nope", CSV, mode="append")
    error(missing, "table_not_found")


def test_schema_and_odd_table_names(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    xfer.query(key, db, "CREATE SCHEMA sales")
    job = xfer.run_import(key, db, 'Odd "Name"', CSV, schema_name="sales")
    assert job["state"] == "DONE", job
    assert job["tables"][0]["schema_name"] == "sales"
    assert xfer.query(key, db, 'SELECT count(*) FROM sales."Odd ""Name"""') == [[2]]
    nope = xfer.run_import(key, db, "t", CSV, schema_name="nowhere")
    error(nope, "schema_not_found")


def test_header_choices_and_name_normalisation(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    content = b"Unit Price,unit price,2024\n1,2,3\n"
    job = xfer.run_import(key, db, "h1", content)
    assert [c["name"] for c in job["tables"][0]["columns"]] == [
        "unit_price",
        "unit_price_2",
        "_2024",
    ]
    assert [c["source"] for c in job["tables"][0]["columns"]] == [
        "Unit Price",
        "unit price",
        "2024",
    ]
    job = xfer.run_import(key, db, "h2", b"1,2\n3,4\n")
    assert [c["name"] for c in job["tables"][0]["columns"]] == ["column_1", "column_2"]
    assert xfer.query(key, db, "SELECT count(*) FROM h2") == [[2]]
    job = xfer.run_import(key, db, "h3", b"a,b\nc,d\n", infer_header="no_header")
    assert xfer.query(key, db, "SELECT * FROM h3 ORDER BY 1") == [["a", "b"], ["c", "d"]]
    job = xfer.run_import(key, db, "h4", b"1,2\n3,4\n", infer_header="first_row")
    assert [c["name"] for c in job["tables"][0]["columns"]] == ["_1", "_2"]


def test_explicit_types_override_inference(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    content = b"zip,amount\n00501,10\n02134,20\n"
    job = xfer.run_import(key, db, "z", content, column_types={"amount": "numeric(10,2)"})
    assert job["state"] == "DONE", job
    types = {c["name"]: c["type"] for c in job["tables"][0]["columns"]}
    assert types == {"zip": "text", "amount": "numeric(10,2)"}
    assert xfer.query(key, db, "SELECT zip, amount::text FROM z ORDER BY zip") == [
        ["00501", "10.00"],
        ["02134", "20.00"],
    ]
    bad = xfer.run_import(key, db, "z2", b"a\n1\nx\n", column_types={"a": "int"})
    details = error(bad, "invalid_value")
    assert (details["row"], details["column"], details["value"]) == (2, "a", "x")
    assert not xfer.table_exists(key, db, "z2")
    r = xfer.start_import(key, db, "z3", content, column_types={"zip": "text; DROP TABLE z"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_column_type"


def test_a_value_beyond_the_sample_widens_its_column(
    xfer: Api, owner: tuple[str, str], db: str
) -> None:
    """The sniffer samples the head and chunks spread over the file; a value none of them
    saw that Postgres refuses widens the column and the load runs again."""
    key = _key(owner)
    lines = [b"n,v,x"] + [b"%d,%d,%d" % (i, i, i) for i in range(300_000)]
    lines[25_000] = b"25000,oops,2.5"  # just after the head sample
    job = xfer.run_import(key, db, "w", b"\n".join(lines) + b"\n")
    assert job["state"] == "DONE", job
    types = {c["name"]: c["type"] for c in job["tables"][0]["columns"]}
    assert types == {"n": "bigint", "v": "text", "x": "numeric"}
    assert xfer.query(key, db, "SELECT count(*), count(DISTINCT v) FROM w") == [[300_000, 300_000]]


def test_lenient_csv_is_read_by_python(xfer: Api, owner: tuple[str, str], db: str) -> None:
    """A quote inside an unquoted value (which Postgres's CSV reader refuses) and mixed
    line ends are read by the lenient reader."""
    key = _key(owner)
    content = b'item;size\r\nTV;55" screen\nlamp;"big; bright"\r\n\n'
    job = xfer.run_import(key, db, "l", content)
    assert job["state"] == "DONE", job
    assert xfer.query(key, db, "SELECT * FROM l ORDER BY 1") == [
        ["TV", '55" screen'],
        ["lamp", "big; bright"],
    ]


def test_encodings(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    latin = "name\ncafé\nZürich\n".encode("cp1252")
    assert xfer.run_import(key, db, "e1", latin)["state"] == "DONE"
    assert sorted(xfer.query(key, db, "SELECT name FROM e1")) == [["Zürich"], ["café"]]
    utf16 = "name,n\ncafé,1\n".encode("utf-16")
    assert xfer.run_import(key, db, "e2", utf16)["state"] == "DONE"
    assert xfer.query(key, db, "SELECT * FROM e2") == [["café", 1]]


def test_sheets_and_tables(xfer: Api, owner: tuple[str, str], db: str, tmp_path: Path) -> None:
    from openpyxl import Workbook

    key = _key(owner)
    wb = Workbook()
    ws = wb.active
    ws.title = "Q1 Sales"
    ws.append(["region", "total"])
    ws.append(["north", 10])
    other = wb.create_sheet("empty")
    assert other is not None
    third = wb.create_sheet("Costs")
    third.append(["item", "cost"])
    third.append(["rent", 5.5])
    path = tmp_path / "book.xlsx"
    wb.save(path)
    job = xfer.run_import(key, db, "book", path.read_bytes(), "book.xlsx")
    assert job["state"] == "DONE", job
    assert [(t["table_name"], t["source_name"], t["rows"]) for t in job["tables"]] == [
        ("book_q1_sales", "Q1 Sales", 1),
        ("book_costs", "Costs", 1),
    ]
    one = xfer.run_import(key, db, "costs", path.read_bytes(), "book.xlsx", sheet_name="costs")
    assert [t["table_name"] for t in one["tables"]] == ["costs"]
    nope = xfer.run_import(key, db, "x", path.read_bytes(), "book.xlsx", sheet_name="Q9")
    assert "Q1 Sales" in error(nope, "source_not_found")["message"]


def test_json_shapes(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    rows = [{"id": 1, "meta": {"a": [1, 2]}, "v": "x"}, {"id": 2, "meta": 3}]
    job = xfer.run_import(key, db, "j", json.dumps(rows).encode(), "j.json")
    assert job["state"] == "DONE", job
    assert xfer.query(key, db, "SELECT id, meta, v FROM j ORDER BY id") == [
        [1, {"a": [1, 2]}, "x"],
        [2, 3, None],
    ]
    not_objects = xfer.run_import(key, db, "j2", b"[1, 2]", "j.json")
    assert error(not_objects, "malformed_row")["row"] == 1
    not_array = xfer.run_import(key, db, "j3", b'{"a": 1}', "j.json")
    error(not_array, "invalid_file")


# -- previews ------------------------------------------------------------------------------


def test_preview_loads_nothing(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    content = gzip.compress(b"When;Amount;Paid\n2024-01-01 10:00;1,5;yes\n2024-01-02 11:00;2;no\n")
    r = xfer.post(
        "/v1/imports/preview",
        key,
        data={"db_name": db, "table_name": "p"},
        files={"file": ("p.csv.gz", content)},
    )
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["file_format"] == "csv" and preview["compression"] == "gzip"
    assert preview["dialect"]["delimiter"] == ";"
    assert preview["dialect"]["postgres_reads_directly"] is True
    (table,) = preview["tables"]
    assert table["header"] is True
    assert [(c["name"], c["type"]) for c in table["columns"]] == [
        ("when", "timestamp"),
        ("amount", "text"),
        ("paid", "boolean"),
    ]
    assert table["sample"][0] == ["2024-01-01 10:00", "1,5", "yes"]
    assert not xfer.table_exists(key, db, "p")
    bad = xfer.post(
        "/v1/imports/preview",
        key,
        data={"db_name": db, "table_name": "p"},
        files={"file": ("p.csv", b"")},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "empty_file"


# -- bad files: a clear error, nothing changed ---------------------------------------------


def _truncated_gzip() -> bytes:
    data = gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7) for i in range(50_000)))
    return data[: len(data) // 2]


BAD_FILES: dict[str, tuple[str, bytes, str]] = {
    "truncated gzip": (
        "t.csv.gz",
        _truncated_gzip(),
        "invalid_file",
    ),
    "ragged csv": ("t.csv", b"a,b,c\n1,2,3\n4,5\n6,7,8\n", "malformed_row"),
    "empty file": ("t.csv", b"", "empty_file"),
    "header only": ("t.csv", b"a,b,c\n", "empty_file"),
    "empty json array": ("t.json", b"[]", "empty_file"),
    "10k columns": (
        "t.csv",
        (",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join("1" * 10_000) + "\n").encode(),
        "too_many_columns",
    ),
    "not a workbook": ("t.xlsx", b"PK\x03\x04 this is no zip", "invalid_file"),
    "not parquet": ("t.parquet", b"PAR1 garbage", "invalid_file"),
    "json in latin-1": ("t.json", '[{"a": "café"}]'.encode("latin-1"), "encoding_error"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_fail_clearly_and_change_nothing(
    case: str, xfer: Api, owner: tuple[str, str], db: str
) -> None:
    key = _key(owner)
    filename, content, error_type = BAD_FILES[case]
    job = xfer.run_import(key, db, "bad", content, filename)
    details = error(job, error_type)
    if case == "ragged csv":
        assert (details["row"], details["line"]) == (2, 3)
    assert not xfer.table_exists(key, db, "bad")
    # appending the same file to an existing table leaves it as it was
    xfer.query(key, db, "CREATE TABLE keep (a text, b text, c text); INSERT INTO keep VALUES ('x')")
    job = xfer.run_import(key, db, "keep", content, filename, mode="append")
    assert job["state"] == "FAILED", job
    assert xfer.query(key, db, "SELECT a FROM keep") == [["x"]]


def test_wrong_encoding_fails_with_the_line(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)
    for size, at in ((20_000, 12_345), (200_000, 150_000)):  # in the head; further on
        lines = [b"name,n"] + [b"row%d,%d" % (i, i) for i in range(size)]
        lines[at] = b"caf\xe9,1"  # Latin-1, in a file said to be UTF-8
        job = xfer.run_import(key, db, "enc", b"\n".join(lines) + b"\n", encoding="utf-8")
        details = error(job, "encoding_error")
        assert details["line"] == at + 1
    assert not xfer.table_exists(key, db, "enc")


def test_huge_value(
    xfer: Api,
    owner: tuple[str, str],
    db: str,
    server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _key(owner)
    monkeypatch.setattr(server.settings, "transfer_max_value_bytes", 100_000)
    rows = [b"a,b"] + [b"%d,x" % i for i in range(100_000)]
    rows[60_000] = b"1," + b"y" * 300_000  # fast path: a line too long
    job = xfer.run_import(key, db, "huge", b"\n".join(rows) + b"\n")
    assert error(job, "value_too_large")["limit"] == 100_000
    first = b"a,b\n1," + b"y" * 300_000 + b"\n"  # the sniffer's head
    error(xfer.run_import(key, db, "huge", first), "value_too_large")
    quoted = b'a,b\n1,"' + b"y\n" * 150_000 + b'"\n'  # lenient path: one huge quoted value
    error(xfer.run_import(key, db, "huge", quoted), "value_too_large")
    assert not xfer.table_exists(key, db, "huge")


def test_file_size_limit(
    xfer: Api,
    owner: tuple[str, str],
    db: str,
    server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _key(owner)
    monkeypatch.setattr(server.settings, "transfer_max_file_bytes", 1000)
    r = xfer.start_import(key, db, "big", b"a\n" + b"1\n" * 1000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    bomb = gzip.compress(b"a\n" + b"1\n" * 100_000)
    error(xfer.run_import(key, db, "big", bomb, "b.csv.gz"), "file_too_large")


def test_storage_limit(xfer: Api, owner: tuple[str, str]) -> None:
    key = _key(owner)
    db = xfer.make_db(key)
    size = xfer.get(f"/v1/databases/{db}", key).json()["size_bytes"]
    r = xfer.request(
        "PATCH", f"/v1/databases/{db}", key, json={"storage_limit_bytes": size + 200_000}
    )
    assert r.status_code == 200, r.text
    content = b"n,t\n" + b"".join(b"%d,%s\n" % (i, b"x" * 100) for i in range(20_000))
    job = xfer.run_import(key, db, "s", content)
    details = error(job, "storage_limit_exceeded")
    assert details["storage_limit_bytes"] == size + 200_000
    assert not xfer.table_exists(key, db, "s")
    assert xfer.run_import(key, db, "small", CSV)["state"] == "DONE"


# -- requests refused before anything is stored --------------------------------------------


def test_request_validation(xfer: Api, owner: tuple[str, str], db: str) -> None:
    key = _key(owner)

    def code(r: Any) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["code"]

    assert code(xfer.post("/v1/imports", key, json={"db_name": db, "table_name": "t"})) == (
        422,
        "missing_file",
    )
    form = xfer.post("/v1/imports", key, data={"db_name": db, "table_name": "t"})
    assert code(form) == (422, "validation_error")  # urlencoded: not a multipart upload
    assert code(xfer.start_import(key, db, "t", CSV, mode="upsert")) == (422, "validation_error")
    assert code(xfer.start_import(key, db, "t", CSV, bogus="1")) == (422, "validation_error")
    assert code(xfer.start_import(key, db, "x" * 64, CSV)) == (422, "validation_error")
    assert code(xfer.start_import(key, db, "t", CSV, encoding="klingon")) == (
        422,
        "invalid_encoding",
    )
    both = xfer.start_import(key, db, "t", CSV, file_url="https://example.com/x.csv")
    assert code(both) == (422, "validation_error")
    json_body = {"db_name": db, "table_name": "t", "file_url": "ftp://example.com/x"}
    assert code(xfer.post("/v1/imports", key, json=json_body)) == (422, "invalid_url")
    for url in ("http://127.0.0.1:1/x.csv", "http://localhost/x", "http://169.254.169.254/"):
        json_body["file_url"] = url
        assert code(xfer.post("/v1/imports", key, json=json_body)) == (422, "url_not_allowed")
    assert code(xfer.post("/v1/imports", key, content=b"x=1")) == (422, "validation_error")
    assert code(xfer.get("/v1/imports/imp_nope", key)) == (404, "import_not_found")


# -- URLs ----------------------------------------------------------------------------------


@pytest.fixture
def file_server() -> Iterator[str]:
    """A tiny HTTP server on loopback serving ``/data.csv`` and a redirect to it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/go":
                self.send_response(302)
                self.send_header("Location", "/data.csv")
                self.end_headers()
                return
            if self.path != "/data.csv":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(CSV)))
            self.end_headers()
            self.wfile.write(CSV)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_imports(
    xfer: Api,
    owner: tuple[str, str],
    db: str,
    file_server: str,
    server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _key(owner)
    body = {"db_name": db, "table_name": "u", "file_url": f"{file_server}/data.csv"}
    refused = xfer.post("/v1/imports", key, json=body)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "url_not_allowed"
    monkeypatch.setattr(server.settings, "transfer_allow_private_urls", True)
    for name, path in (("u", "/data.csv"), ("u2", "/go")):
        body.update(table_name=name, file_url=file_server + path)
        r = xfer.post("/v1/imports", key, json=body)
        assert r.status_code == 202, r.text
        job = xfer.wait("imports", r.json()["id"], key)
        assert job["state"] == "DONE", job
        assert job["file_name"] == ("data.csv" if name == "u" else "go")
        assert xfer.query(key, db, f"SELECT count(*) FROM {name}") == [[2]]
    body.update(table_name="u3", file_url=f"{file_server}/missing.csv")
    r = xfer.post("/v1/imports", key, json=body)
    details = error(xfer.wait("imports", r.json()["id"], key), "download_failed")
    assert details["status"] == 404
    r = xfer.post("/v1/imports/preview", key, json={**body, "file_url": f"{file_server}/go"})
    assert r.status_code == 200 and r.json()["tables"][0]["columns"][0]["name"] == "id"


# -- who may import ------------------------------------------------------------------------


def test_access_rules(xfer: Api, owner: tuple[str, str], make_user: MakeUser) -> None:
    key = owner[1]
    db = xfer.make_db(key)
    reader_name, reader = make_user(prefix="reader")
    writer_name, writer = make_user(prefix="writer")
    _, stranger = make_user(prefix="stranger")
    for name, role in ((reader_name, "read"), (writer_name, "write")):
        r = xfer.request(
            "PUT", f"/v1/databases/{db}/collaborators/{name}", key, json={"role": role}
        )
        assert r.status_code == 200, r.text

    refused = xfer.start_import(reader, db, "t", CSV)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    hidden = xfer.start_import(stranger, db, "t", CSV)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "database_not_found"
    assert xfer.start_import(None, db, "t", CSV).status_code == 401
    ro_key = xfer.post("/v1/keys", key, json={"scope": "read"}).json()["secret"]
    read_only = xfer.start_import(ro_key, db, "t", CSV)
    assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "read_only_key"

    job = xfer.run_import(writer, db, "t", CSV)
    assert job["state"] == "DONE", job
    # the writer's table belongs to the writer's role; replacing it needs to own it —
    # and the owner's role does (it is a member of the writer's)
    assert xfer.run_import(key, db, "t", CSV, mode="replace")["state"] == "DONE"
    denied = xfer.run_import(writer, db, "t", CSV, mode="replace")
    assert "owner" in error(denied, "permission_denied")["message"]
    assert xfer.query(key, db, "SELECT count(*) FROM t") == [[2]]

    # a job is its creator's: others do not see it
    assert xfer.get(f"/v1/imports/{job['id']}", stranger).status_code == 404
    assert xfer.get(f"/v1/imports/{job['id']}", key).status_code == 404
    assert xfer.get(f"/v1/imports/{job['id']}", writer).status_code == 200
