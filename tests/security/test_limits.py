"""Bounded memory for any input and output, and a 4xx (never a 500) for hostile input.

A tenant tries to make the server hold what it cannot: results whose values are huge
(json/jsonb, arrays, text, bytea, composites, long column names), request bodies of any
size (declared or streamed), JSON nested thousands deep (in a body, a WebSocket message,
a query result, a subscription predicate), and odd path/query parameters on every route
(non-ASCII, NUL, huge). Each gets a bounded answer with a stable code, and the server
keeps serving everyone else.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg.adapt import Loader
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from millpond.server.console.router import router as console_router
from millpond.server.testing import ServerThread

from ._tenant import Tenant, make_tenant

MiB = 1024 * 1024
DEEP = 5000


@pytest.fixture(scope="module")
def tenant(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Tenant:
    return make_tenant(server, make_user, prefix="lim")


@pytest.fixture(scope="module")
def bystander(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Tenant:
    other = make_tenant(server, make_user, prefix="limby")
    other.ok(
        "CREATE TABLE notes (id int PRIMARY KEY, body jsonb); INSERT INTO notes VALUES (1, '[1]')"
    )
    return other


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    if isinstance(body["error"], dict):  # else Schematic's shape, under /compat/schematic
        body = body["error"]
    assert body["code"] == code, body
    return dict(body)


def still_serving(bystander: Tenant) -> None:
    assert bystander.ok("SELECT body FROM notes WHERE id = 1") == [[[1]]]


# -- results: every value counts its real size ----------------------------------------------


class PeakRss:
    """The peak resident memory of this process (the server runs in a thread of it)
    while the block runs, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.base = self.peak = _rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_big_json_results_stay_within_the_byte_cap(tenant: Tenant) -> None:
    """150 values of 1 MiB json, 150 MiB that the old cap counted as 8 bytes a value (and
    parsed into Python lists several times that size): at most the 16 MiB cap and a few
    rows are ever held."""
    sql = (
        "SET LOCAL statement_timeout = 0;"  # the test server's 2 s is for small queries
        " SELECT n, j FROM (SELECT ('[' || repeat('1,', 512 * 1024) || '1]')::json AS j) s,"
        " generate_series(1, 150) n"
    )
    tenant.ok("SELECT 1")  # warm: the pool's connection exists
    body = {"database": tenant.database, "sql": sql}
    headers = {"Authorization": f"Bearer {tenant.key}"}
    with (
        PeakRss() as rss,
        httpx.stream(
            "POST", tenant.server.url + "/v1/query", json=body, headers=headers, timeout=60
        ) as r,
    ):
        head = b""
        size = 0
        for chunk in r.iter_bytes():
            head = head or chunk[:200]
            size += len(chunk)
    assert r.status_code == 200, head
    assert 14 * MiB < size < 17 * MiB
    assert rss.growth < 100 * MiB, rss.growth / MiB
    meta = tenant.query(sql.replace("SELECT n, j", "SELECT n, j::text IS NULL, j", 1))
    result = meta.json()
    assert result["truncated"] is True and result["row_count"] == 150
    assert 10 < len(result["data"]) < 16 and len(result["data"][0][2]) == 512 * 1024 + 1


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("jsonb", "to_jsonb(repeat('x', 3 * 1024 * 1024))"),
        ("json array", "(SELECT json_agg(g) FROM generate_series(1, 450000) g)"),
        ("int array", "(SELECT array_agg(g) FROM generate_series(1, 450000) g)"),
        ("jsonb array", "ARRAY[to_jsonb(repeat('y', 3 * 1024 * 1024))]"),
        ("text", "repeat('z', 3 * 1024 * 1024)"),
        ("bytea", "convert_to(repeat('b', 2 * 1024 * 1024), 'UTF8')"),
        ("composite", "ROW(1, repeat('c', 3 * 1024 * 1024))"),
    ],
)
def test_every_kind_of_value_counts_its_size(tenant: Tenant, kind: str, value: str) -> None:
    """Ten ~3 MiB values of each kind: about five fit the 16 MiB cap, never all ten."""
    r = tenant.query(
        "SET LOCAL statement_timeout = 0;"  # the test server's 2 s is for small queries
        f" SELECT n, v FROM (SELECT {value} AS v) s, generate_series(1, 10) n"
    )
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["truncated"] is True and body["row_count"] == 10, kind
    assert 1 <= len(body["data"]) < 10, kind
    assert len(r.content) < 17 * MiB, kind


def test_a_single_value_over_the_cap_is_truncated_away(tenant: Tenant) -> None:
    r = tenant.query("SELECT to_jsonb(repeat('x', 17 * 1024 * 1024))")
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["data"] == [] and body["truncated"] is True and body["row_count"] == 1


def test_long_column_names_count_in_objects_format(tenant: Tenant) -> None:
    """Objects repeat every column name in every row: 1000 rows of 200 long-named
    columns would be ~14 MiB of names alone; the cap counts them."""
    columns = ", ".join(f"1 AS c{i:03d}{'n' * 55}" for i in range(200))
    sql = f"SELECT {columns} FROM generate_series(1, 1000)"
    r = tenant.http(
        "POST",
        "/v1/query",
        json={"database": tenant.database, "sql": sql, "data_format": "objects"},
    )
    assert r.status_code == 200, r.text[:300]
    assert len(r.content) < 17 * MiB
    small = tenant.http(
        "POST",
        "/v1/query",
        json={"database": tenant.database, "sql": "SELECT 1 AS a", "data_format": "objects"},
    )
    assert small.json()["data"] == [{"a": 1}]


def test_json_values_come_back_as_postgres_wrote_them(tenant: Tenant) -> None:
    sql = (
        """SELECT '{"b": [1, 2.50, null, "x\\"]}"], "a": {"c": true}}'::jsonb AS jb,"""
        """ '{"keep":  "spacing", "n": 1e3}'::json AS j, ARRAY['[1]'::jsonb, '{}'] AS arr,"""
        """ 'plain "text" [['::text AS t, NULL::jsonb AS nothing"""
    )
    data = tenant.ok(sql)
    assert data == [
        [
            {"a": {"c": True}, "b": [1, 2.50, None, 'x"]}']},
            {"keep": "spacing", "n": 1000.0},
            [[1], {}],
            'plain "text" [[',
            None,
        ]
    ]


# -- deep nesting out: results ----------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_jsonb_result_is_a_4xx(tenant: Tenant, bystander: Tenant) -> None:
    for sql in (
        f"SELECT '{nested(DEEP)}'::jsonb",
        f"SELECT (repeat('[', {DEEP}) || repeat(']', {DEEP}))::json",
        f"SELECT ARRAY['{nested(DEEP)}'::jsonb]",
        f"SELECT jsonb_build_object('k', '{nested(DEEP)}'::jsonb)",
        "SELECT " + "jsonb_build_array(" * 200 + "1" + ")" * 200,
    ):
        r = tenant.query(sql)
        assert error(r, 400, "json_too_deep")["details"]["max_depth"] == 128, sql[:60]
    # not JSON at all: Postgres refuses it, a plain SQL error
    error(tenant.query(f"SELECT repeat('[', {DEEP})::jsonb"), 400, "sql_error")
    still_serving(bystander)


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine(tenant: Tenant) -> None:
    assert tenant.ok(f"SELECT '{nested(128)}'::jsonb")[0][0] is not None
    inside = '["' + "[" * DEEP + '"]'
    assert tenant.ok(f"SELECT '{inside}'::jsonb") == [[["[" * DEEP]]]
    assert tenant.ok(f"SELECT '{nested(DEEP)}'::jsonb::text")[0][0] == nested(DEEP)


def test_a_deep_value_the_result_does_not_return_is_no_error(tenant: Tenant) -> None:
    deep = f"'{nested(DEEP)}'::jsonb"
    assert tenant.ok(f"SELECT {deep}; SELECT 2") == [[2]]  # not the last statement
    r = tenant.http(
        "POST",
        "/v1/query",
        json={
            "database": tenant.database,
            "sql": f"SELECT 1 UNION ALL SELECT jsonb_array_length({deep})",
        },
    )
    assert r.status_code == 200


def test_a_deep_result_rolls_its_transaction_back(tenant: Tenant) -> None:
    tenant.ok("CREATE TABLE IF NOT EXISTS deep_writes (id int)")
    r = tenant.query(f"INSERT INTO deep_writes VALUES (1); SELECT '{nested(DEEP)}'::jsonb")
    error(r, 400, "json_too_deep")
    assert tenant.ok("SELECT count(*) FROM deep_writes") == [[0]]


def test_deep_jsonb_through_the_gateway_is_relayed(tenant: Tenant) -> None:
    """The gateway relays Postgres' bytes and never parses a value."""
    with tenant.gateway() as conn:
        conn.adapters.register_loader("jsonb", _TextLoader)
        row = conn.execute(f"SELECT '{nested(DEEP)}'::jsonb").fetchone()
        assert row is not None and row[0] == nested(DEEP)


class _TextLoader(Loader):
    def load(self, data: Any) -> str:
        return bytes(data).decode()


# -- request bodies ---------------------------------------------------------------------------


def test_declared_oversized_body_is_refused_before_it_is_read(
    tenant: Tenant, bystander: Tenant
) -> None:
    for path in ("/v1/query", "/v1/users", "/v1/keys", "/v1/nowhere", "/console/login"):
        with socket.create_connection(_address(tenant)) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {500 * MiB}\r\n\r\n".encode()
            )
            status, body = _read_response(sock)  # no byte of the body was sent
        assert status == 413, (path, status)
        assert json.loads(body)["error"]["code"] == "request_too_large"
        assert json.loads(body)["error"]["details"]["limit"] == 16 * MiB
    still_serving(bystander)


def test_streamed_body_is_cut_at_the_limit(tenant: Tenant, bystander: Tenant) -> None:
    """A chunked body with no Content-Length: refused once past the limit, and the
    server never holds more than that (500 MiB offered)."""
    chunk = b"x" * MiB
    with PeakRss() as rss, socket.create_connection(_address(tenant)) as sock:
        sock.sendall(
            f"POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.settimeout(10)
        sent = 0
        while sent < 500 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break  # the server stopped reading: its answer is waiting
            sent += 1
        status, body = _read_response(sock)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert sent < 100, sent  # it answered without waiting for the whole body
    assert rss.growth < 100 * MiB, rss.growth / MiB
    still_serving(bystander)


def test_bodies_under_the_limit_still_work(tenant: Tenant) -> None:
    sql = "SELECT 1 /* " + "p" * (8 * MiB) + " */"
    assert tenant.ok(sql) == [[1]]
    chunked = httpx.post(  # no Content-Length: chunked
        tenant.server.url + "/v1/query",
        content=iter([json.dumps({"database": tenant.database, "sql": "SELECT 3"}).encode()]),
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
    )
    assert chunked.status_code == 200 and chunked.json()["data"] == [[3]]


def test_import_uploads_keep_their_own_bigger_limit(tenant: Tenant) -> None:
    """A multipart upload streams to disk under transfer_max_file_bytes (2 GiB here),
    not the 16 MiB body limit."""
    rows = b"".join(b"%d,name %d\n" % (i, i) for i in range(1_300_000))
    assert len(rows) > 17 * MiB
    r = tenant.http(
        "POST",
        "/v1/imports/preview",
        files={"file": ("big.csv", b"id,name\n" + rows, "text/csv")},
        data={"database": tenant.database, "table_name": "big"},
    )
    assert r.status_code == 200, r.text[:300]


def _address(tenant: Tenant) -> tuple[str, int]:
    url = httpx.URL(tenant.server.url)
    assert url.port is not None
    return url.host, url.port


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(body) < length:
        part = sock.recv(65536)
        assert part
        body += part
    return int(lines[0].split()[1]), body[:length]


# -- deep nesting in: request bodies ----------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        lambda d: '{"database": "a/b", "sql": "SELECT 1", "x": ' + nested(d) + "}",
        lambda d: '{"a":' * d + "1" + "}" * d,
        lambda d: '[{"a": ' * d + "1" + "}]" * d,
    ],
)
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/query", "application/json"),
        ("/v1/users", "application/json"),
        ("/v1/query", None),
        ("/v1/keys", "application/merge-patch+json"),
        ("/v1/flags/environments/production/events", "application/json"),
        ("/compat/schematic/event-batch", "application/json"),
    ],
)
def test_deeply_nested_json_body_is_a_4xx(
    tenant: Tenant, shape: Callable[[int], str], path: str, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {tenant.key}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = httpx.post(tenant.server.url + path, content=shape(DEEP).encode(), headers=headers)
    assert error(r, 400, "json_too_deep")["details"]["max_depth"] == 128
    r = httpx.post(tenant.server.url + path, content=shape(60).encode(), headers=headers)
    assert r.status_code < 500 and r.status_code not in (400, 413), r.text[:300]


def test_brackets_inside_json_strings_do_not_count(tenant: Tenant) -> None:
    sql = "SELECT '" + "[" * DEEP + "' AS s, '" + "{" * DEEP + "\\\"]' AS t"
    data = tenant.ok(sql)
    assert data == [["[" * DEEP, "{" * DEEP + '\\"]']]


# -- deep nesting in: WebSocket messages and subscription predicates --------------------------


@pytest.fixture(scope="module")
def live_table(tenant: Tenant) -> str:
    tenant.ok("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, n int, flag bool)")
    tenant.ok("INSERT INTO items VALUES (1, 1, true) ON CONFLICT DO NOTHING")
    return "items"


@pytest.fixture
def realtime(tenant: Tenant, live_table: str) -> Iterator[ClientConnection]:
    url = tenant.server.url.replace("http://", "ws://") + f"/v1/realtime/{tenant.database}"
    with connect(url, additional_headers={"Authorization": f"Bearer {tenant.key}"}) as ws:
        assert _next(ws)["type"] == "hello"
        yield ws


def _next(ws: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message["type"] != "ping":
            return dict(message)


def _still_open(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "ping", "request_id": "alive"}))
    assert _next(ws) == {"type": "pong", "request_id": "alive"}


@pytest.mark.parametrize(
    "where",
    [
        "(" * DEEP + "n = 1" + ")" * DEEP,
        "NOT " * DEEP + "flag",
        "n = " + "- " * DEEP + "1",
        "n IN (" * 2000 + "1" + ")" * 2000,
        "flag" + " IS TRUE" * DEEP,
        "n = 1 AND (" * 1000 + "flag" + ")" * 1000,
    ],
)
def test_deep_predicate_is_unsupported_query(realtime: ClientConnection, where: str) -> None:
    request = {
        "type": "subscribe",
        "request_id": "deep",
        "queries": [f"SELECT * FROM items WHERE {where}"],
    }
    realtime.send(json.dumps(request))
    message = _next(realtime)
    assert message["type"] == "error" and message["code"] == "unsupported_query", message
    assert message["request_id"] == "deep"
    _still_open(realtime)


def test_wide_flat_predicates_still_subscribe(realtime: ClientConnection) -> None:
    where = " OR ".join(f"n = {i}" for i in range(2000))
    realtime.send(
        json.dumps(
            {
                "type": "subscribe",
                "request_id": "wide",
                "queries": [f"SELECT * FROM items WHERE {where}"],
            }
        )
    )
    assert _next(realtime)["type"] == "subscription_applied"


@pytest.mark.parametrize(
    "message",
    [
        '{"type": "subscribe", "request_id": '
        + nested(DEEP)
        + ', "queries": ["SELECT * FROM items"]}',
        '{"a":' * DEEP + "1" + "}" * DEEP,
        nested(100_000),
    ],
)
def test_deep_websocket_message_is_an_error_not_a_close(
    realtime: ClientConnection, message: str
) -> None:
    realtime.send(message)
    reply = _next(realtime)
    assert reply["type"] == "error" and reply["code"] == "json_too_deep", reply
    _still_open(realtime)


@pytest.mark.parametrize(
    "message",
    [
        '{"type": "ping", "request_id": "\\ud800"}',
        '{"type": "subscribe", "request_id": "s", "queries": ["SELECT * FROM \\udc00"]}',
        '{"type": "subscribe", "request_id": "s", "queries": ["SELECT * FROM items'
        " WHERE n = '\\ud800'\"]}",
    ],
)
def test_lone_surrogates_in_a_websocket_message(realtime: ClientConnection, message: str) -> None:
    realtime.send(message)
    reply = _next(realtime)
    assert reply["type"] == "error" and reply["code"] == "invalid_text", reply
    _still_open(realtime)


def test_deep_message_on_the_flags_stream(tenant: Tenant) -> None:
    r = tenant.http("POST", "/v1/flags/environments", json={"name": "limits"})
    assert r.status_code == 201, r.text
    url = tenant.server.url.replace("http://", "ws://") + "/v1/flags/stream?environment=limits"
    with connect(url, additional_headers={"Authorization": f"Bearer {tenant.key}"}) as ws:
        assert _next(ws)["type"] == "hello"
        ws.send(nested(DEEP))
        reply = _next(ws)
        assert reply["type"] == "error" and reply["code"] == "json_too_deep", reply
        _still_open(ws)


# -- odd parameters: 4xx on every route -------------------------------------------------------


def test_download_link_with_odd_signature_is_a_4xx(tenant: Tenant) -> None:
    base = tenant.server.url + "/v1/exports"
    for job, params in [
        ("x", "expires=9999999999&signature=%C3%A9t%C3%A9"),  # non-ASCII: once a 500
        ("x", "expires=9999999999&signature=" + "%E2%98%83" * 30),
        ("x", "expires=9999999999&signature=%00"),
        ("x", "expires=9999999999&signature=" + "a" * 10_000),
        ("x", "expires=notanumber&signature=abc"),
        ("x", "expires=" + "9" * 5000 + "&signature=abc"),
        ("x", "expires=-1&signature=abc"),
        ("x", "signature=abc"),
        ("%00", "expires=9999999999&signature=abc"),
        ("%C3%A9", "expires=9999999999&signature=%FF%FE"),
        ("a" * 5000, "expires=1&signature=abc"),
    ]:
        r = httpx.get(f"{base}/{job}/download?{params}")  # no API key needed
        assert 400 <= r.status_code < 500, (job[:20], params[:60], r.status_code, r.text[:200])
        assert "code" in r.json()["error"]


ODD_VALUES = [
    "%C3%A9t%C3%A9%E2%98%83",  # non-ASCII
    "%00",
    "a%00b",
    "%FF%FE",  # not UTF-8
    "%ED%A0%80",  # a surrogate, UTF-8-encoded
    "x" * 5000,
    "..%2F..%2Fetc",
    "-1",
    "9" * 40,
]


def _routes(tenant: Tenant) -> list[tuple[str, str, list[str]]]:
    """Every route of the schema with its query parameters, and the console's (which
    the schema leaves out) with a few likely ones."""
    spec = httpx.get(tenant.server.url + "/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                query = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
                found.append((method.upper(), path, query))
    for route in console_router.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            found.append((method, getattr(route, "path", ""), ["next", "flash", "environment"]))
    return found


def _variants(path: str, query: list[str]) -> Iterator[str]:
    """The URL with one parameter (path or query) at a time set to each odd value, the
    others plausible, so each odd value gets past the validation of the rest."""
    holes = [i for i, part in enumerate(path.split("/")) if part.startswith("{")]
    plain = {name: "1" for name in query}
    for value in ODD_VALUES:
        for hole in holes:
            parts = ["x" if p.startswith("{") else p for p in path.split("/")]
            parts[hole] = value
            yield "/".join(parts) + _query(plain)
        for name in query:
            yield _fill(path, "x") + _query({**plain, name: value})


def _query(params: dict[str, str]) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""


def test_odd_path_and_query_parameters_never_500(tenant: Tenant, bystander: Tenant) -> None:
    """Every route of the OpenAPI schema, each path parameter and each query parameter
    in turn set to odd values (non-ASCII, NUL, not UTF-8, huge…), signed in and
    anonymously: never a 5xx."""
    routes = _routes(tenant)
    assert len(routes) > 20
    failures = []
    with httpx.Client(base_url=tenant.server.url, timeout=30) as client:
        for method, path, query in routes:
            for url in _variants(path, query):
                for key in (tenant.key, None):
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    body = {} if method in ("POST", "PUT", "PATCH") else None
                    r = client.request(method, url, headers=headers, json=body)
                    if r.status_code >= 500:
                        failures.append((method, url[:90], r.status_code, r.text[:150]))
    assert not failures, "\n".join(map(str, failures))
    still_serving(bystander)


def _fill(path: str, value: str) -> str:
    """The path with each {param} set to ``value``."""
    return "/".join(value if part.startswith("{") else part for part in path.split("/"))


def test_odd_values_inside_a_real_database_route_never_500(
    tenant: Tenant, bystander: Tenant
) -> None:
    owner, name = tenant.database.split("/")
    failures = []
    with httpx.Client(base_url=tenant.server.url, timeout=30) as client:
        headers = {"Authorization": f"Bearer {tenant.key}"}
        for value in ODD_VALUES:
            for method, path in [
                ("GET", f"/v1/databases/{owner}/{name}/collaborators/{value}"),
                ("PUT", f"/v1/databases/{owner}/{name}/collaborators/{value}"),
                ("DELETE", f"/v1/databases/{owner}/{name}/collaborators/{value}"),
                ("GET", f"/v1/databases/{owner}/{value}"),
                ("GET", f"/v1/databases/{value}/{name}"),
                ("GET", f"/v1/imports/{value}"),
                ("GET", f"/v1/exports/{value}"),
                ("GET", f"/v1/imports?before={value}&database={value}"),
                ("GET", f"/v1/exports?before={value}&database={owner}/{value}"),
            ]:
                kwargs: dict[str, Any] = {"headers": headers}
                if method == "PUT":
                    kwargs["json"] = {"role": "read"}
                r = client.request(method, path, **kwargs)
                if r.status_code >= 500:
                    failures.append((method, path[:100], r.status_code, r.text[:200]))
            for body in (
                {"database": f"{owner}/{value}", "sql": "SELECT 1"},
                {"database": tenant.database, "sql": "SELECT 1", "data_format": value},
                {"database": value, "sql": value},
            ):
                r = client.post("/v1/query", json=_decoded(body), headers=headers)
                if r.status_code >= 500:
                    failures.append(("POST", "/v1/query", r.status_code, r.text[:200]))
    assert not failures, failures[:10]


def _decoded(body: dict[str, str]) -> dict[str, str]:
    """JSON bodies carry the odd values decoded (``%00`` as a real NUL)."""
    from urllib.parse import unquote

    return {k: unquote(v, errors="replace") for k, v in body.items()}


def test_nul_and_non_ascii_in_an_export_id_with_a_real_signature(tenant: Tenant) -> None:
    """A link signed for an odd id (an attacker cannot sign, but the server must not
    fall over on what it signs)."""
    forged = base64.urlsafe_b64encode(b"x" * 32).decode().rstrip("=")
    for job in ("%00", "%C3%A9", quote("a\u2603", safe="")):
        r = httpx.get(
            f"{tenant.server.url}/v1/exports/{job}/download",
            params={"expires": int(time.time()) + 60, "signature": forged},
        )
        error(r, 403, "invalid_signature")


def test_deep_jsonb_rows_over_realtime_arrive_as_their_text(tenant: Tenant) -> None:
    """Realtime cannot answer a 4xx for one row of a stream: a json/jsonb value nested
    deeper than the limit arrives as its JSON text (a string), initial rows and changes
    alike, and the socket lives on (it was closed with 1011)."""
    tenant.ok("CREATE TABLE docs (id int PRIMARY KEY, doc jsonb)")
    tenant.ok(f"INSERT INTO docs VALUES (1, '{nested(DEEP)}'), (2, '[2]')")
    url = tenant.server.url.replace("http://", "ws://") + f"/v1/realtime/{tenant.database}"
    with connect(url, additional_headers={"Authorization": f"Bearer {tenant.key}"}) as ws:
        assert _next(ws)["type"] == "hello"
        request = {"type": "subscribe", "request_id": "d", "queries": ["SELECT * FROM docs"]}
        ws.send(json.dumps(request))
        applied = _next(ws)
        assert applied["type"] == "subscription_applied", str(applied)[:300]
        rows = {r["id"]: r["doc"] for r in applied["tables"]["docs"]["rows"]}
        assert rows == {1: nested(DEEP), 2: [2]}
        tenant.ok(f"INSERT INTO docs VALUES (3, '{nested(DEEP)}'), (4, '[4]')")
        change = _next(ws)
        assert change["type"] == "transaction", str(change)[:300]
        inserted = {r["id"]: r["doc"] for r in change["tables"]["docs"]["inserts"]}
        assert inserted == {3: nested(DEEP), 4: [4]}
        _still_open(ws)


ODD_STRINGS = ["\x00", "a\x00b", "\u00e9\u2603\U0001f600", "x" * 100_000, "\ud800", " ", ""]


def _body_for(spec: dict[str, Any], op: dict[str, Any], odd: str) -> dict[str, Any] | None:
    """A JSON body with every top-level string (or string-ish) property set to ``odd``."""
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    body: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        kinds = {prop.get("type")} | {p.get("type") for p in prop.get("anyOf", [])}
        if "string" in kinds:
            body[name] = odd
        elif kinds & {"integer", "number"}:
            body[name] = {"\x00": 0, "": -1}.get(odd, 10**40 if len(odd) % 2 else -(10**40))
        elif "object" in kinds:
            body[name] = {odd: odd}
        elif "array" in kinds:
            body[name] = [odd]
    return body


def test_odd_strings_in_json_bodies_never_500(tenant: Tenant, bystander: Tenant) -> None:
    """Every route taking a JSON body, each string field set to NUL, a lone surrogate,
    non-ASCII, 100 kB…: never a 5xx."""
    spec = httpx.get(tenant.server.url + "/openapi.json").json()
    failures = []
    owner, name = tenant.database.split("/")
    values = {"owner": owner, "name": name, "username": tenant.username, "env": "limits"}
    with httpx.Client(base_url=tenant.server.url, timeout=60) as client:
        client.post(
            "/v1/flags/environments",
            json={"name": "limits"},
            headers={"Authorization": f"Bearer {tenant.key}"},
        )
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if method not in ("post", "put", "patch") or path == "/v1/users":
                    continue
                url = "/".join(
                    values.get(part.strip("{}"), "x") if part.startswith("{") else part
                    for part in path.split("/")
                )
                for odd in ODD_STRINGS:
                    body = _body_for(spec, op, odd)
                    if body is None:
                        continue
                    text = json.dumps(body)  # \\ud800 stays an escape: valid JSON text
                    r = client.request(
                        method.upper(),
                        url,
                        content=text,
                        headers={
                            "Authorization": f"Bearer {tenant.key}",
                            "Content-Type": "application/json",
                        },
                    )
                    if r.status_code >= 500:
                        failures.append((method, url, repr(odd)[:20], r.status_code, r.text[:150]))
    assert not failures, "\n".join(map(str, failures))
    still_serving(bystander)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("deep.json", ('[{"a": ' + nested(DEEP) + "}]").encode()),
        ("deep.ndjson", ('{"a": ' + nested(DEEP) + "}\n").encode()),
        ("deep.csv", ("id,doc\n1," + nested(DEEP) + "\n").encode()),
    ],
)
def test_deeply_nested_import_files(tenant: Tenant, filename: str, content: bytes) -> None:
    """JSON in files is parsed too: a JSON element or NDJSON line nested too deep is a
    malformed row (preview: 400; job: FAILED), a CSV cell too deep to be jsonb is text."""
    table = filename.split(".")[1] + "_deep"
    files = {"file": (filename, content, "application/octet-stream")}
    fields = {"database": tenant.database, "table_name": table}
    preview = tenant.http("POST", "/v1/imports/preview", files=files, data=fields)
    job = _finished(tenant, tenant.http("POST", "/v1/imports", files=files, data=fields))
    if filename.endswith("csv"):
        assert preview.status_code == 200, preview.text[:300]
        assert job["state"] == "DONE", job
        assert tenant.ok(f"SELECT pg_typeof(doc)::text, doc FROM {table}") == [
            ["text", nested(DEEP)]
        ]
    else:
        error(preview, 400, "malformed_row")
        assert job["state"] == "FAILED" and job["error_type"] == "malformed_row", job


def _finished(tenant: Tenant, created: httpx.Response) -> dict[str, Any]:
    assert created.status_code == 202, created.text[:300]
    job = dict(created.json())
    kind = "exports" if "export_format" in job else "imports"
    deadline = time.monotonic() + 60
    while job["state"] not in ("DONE", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = dict(tenant.http("GET", f"/v1/{kind}/{job['id']}").json())
    return job


@pytest.mark.parametrize("export_format", ["csv", "json", "ndjson", "xlsx", "xls", "parquet"])
def test_exporting_deeply_nested_jsonb(tenant: Tenant, export_format: str) -> None:
    tenant.ok("CREATE TABLE IF NOT EXISTS deep_out (id int PRIMARY KEY, doc jsonb)")
    tenant.ok(f"INSERT INTO deep_out VALUES (1, '{nested(DEEP)}') ON CONFLICT DO NOTHING")
    body = {"database": tenant.database, "table_name": "deep_out", "export_format": export_format}
    job = _finished(tenant, tenant.http("POST", "/v1/exports", json=body))
    assert job["state"] == "DONE", job
    download = httpx.get(job["download_url"], timeout=60)
    assert download.status_code == 200
    if export_format in ("csv", "json", "ndjson"):  # the others are binary containers
        assert nested(DEEP).encode() in download.content


ODD_TOKENS = ["mp_" + "x" * 60_000, "mp_\u00e9\u2603", "\u00ff" * 10, "Bearer", "mp_ x"]


def test_odd_api_keys_are_401_not_500(tenant: Tenant) -> None:
    for token in ODD_TOKENS:
        r = httpx.get(
            tenant.server.url + "/v1/me",
            headers={"Authorization": b"Bearer " + token.encode("utf-8")},
        )
        assert r.status_code in (400, 401, 431), (token[:10], r.status_code, r.text[:200])


@pytest.mark.parametrize("path", ["/v1/realtime/{db}", "/v1/flags/stream"])
def test_odd_access_tokens_on_sockets_close_4001(tenant: Tenant, path: str) -> None:
    base = tenant.server.url.replace("http://", "ws://") + path.format(db=tenant.database)
    for token in ["%00", "%C3%A9%E2%98%83", "%FF%FE", "x" * 5000, "%ED%A0%80"]:
        with (
            connect(f"{base}?access_token={token}") as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001, token[:10]


def test_gateway_holds_back_a_big_result_for_a_slow_reader(tenant: Tenant) -> None:
    """Through the gateway the bytes are relayed, not held: a client that does not read
    a 400 MiB result leaves Postgres blocked writing, and the server no bigger."""
    conn = tenant.gateway()
    try:
        with PeakRss() as rss:
            conn.pgconn.send_query(
                b"SET statement_timeout = 0;"
                b" SELECT repeat('x', 1024 * 1024) FROM generate_series(1, 400)"
            )
            conn.pgconn.flush()
            with tenant.superuser() as su:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    row = su.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                        " AND wait_event = 'ClientWrite' AND query LIKE %s",
                        (tenant.pg_name, "%generate_series(1, 400)%"),
                    ).fetchone()
                    if row and row[0]:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("Postgres never blocked writing to the gateway")
        assert rss.growth < 64 * MiB, rss.growth / MiB
    finally:
        conn.pgconn.finish()


NOTIFY_FLOOD = (
    "SET LOCAL statement_timeout = 0;"
    " SELECT count(pg_notify('flood', repeat('x', 7000) || g)) FROM generate_series(1, 20000) g"
)


@pytest.mark.parametrize(
    "listen", ["LISTEN flood;", "DO $$ BEGIN EXECUTE 'LISTEN flood'; END $$;", 'LISTEN "flood";']
)
def test_notifications_the_sql_listens_to_are_not_held(tenant: Tenant, listen: str) -> None:
    """The SQL LISTENs, then NOTIFYs 140 MB: at commit Postgres would deliver it all to
    the pooled connection, which psycopg keeps forever."""
    tenant.ok("SELECT 1")
    with PeakRss() as rss:
        assert tenant.ok(listen + NOTIFY_FLOOD) == [[20000]]
        assert tenant.ok("SELECT 2") == [[2]]
    assert rss.growth < 48 * MiB, rss.growth / MiB


def test_notify_from_a_query_still_reaches_listeners(tenant: Tenant) -> None:
    with tenant.gateway() as listener:
        listener.execute("LISTEN hello")
        assert tenant.ok("LISTEN hello; SELECT pg_notify('hello', 'from http')") == [[""]]
        got = next(listener.notifies(timeout=10, stop_after=1))
        assert (got.channel, got.payload) == ("hello", "from http")


def test_notifications_from_import_triggers_and_export_functions(tenant: Tenant) -> None:
    """Jobs run the tenant's code too: a trigger of the import's table, a function the
    export's query calls; both LISTEN and flood."""
    flood = NOTIFY_FLOOD.split(";", 1)[1].replace("SELECT count(", "PERFORM count(")
    tenant.ok(
        "CREATE TABLE IF NOT EXISTS trap (id int);"
        " CREATE OR REPLACE FUNCTION flood() RETURNS int LANGUAGE plpgsql AS"
        f" $$ BEGIN EXECUTE 'LISTEN flood'; {flood}; RETURN 1; END $$;"
        " CREATE OR REPLACE FUNCTION flood_trigger() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM flood(); RETURN NULL; END $$;"
        " DROP TRIGGER IF EXISTS trap_flood ON trap;"
        " CREATE TRIGGER trap_flood AFTER INSERT ON trap FOR EACH STATEMENT"
        " EXECUTE FUNCTION flood_trigger()"
    )
    files = {"file": ("t.csv", b"id\n1\n", "text/csv")}
    fields = {"database": tenant.database, "table_name": "trap", "mode": "append"}
    with PeakRss() as rss:
        imported = _finished(tenant, tenant.http("POST", "/v1/imports", files=files, data=fields))
        body = {"database": tenant.database, "query_string": "SELECT flood()"}
        exported = _finished(tenant, tenant.http("POST", "/v1/exports", json=body))
    assert imported["state"] == "DONE", imported
    assert exported["state"] == "DONE", exported
    assert rss.growth < 48 * MiB, rss.growth / MiB


def test_notices_and_huge_error_messages_stay_bounded(tenant: Tenant) -> None:
    notices = (
        "SET LOCAL statement_timeout = 0;"
        " DO $$ BEGIN FOR i IN 1..20000 LOOP RAISE NOTICE '%', repeat('n', 7000); END LOOP;"
        " END $$; SELECT 1"
    )
    with PeakRss() as rss:
        assert tenant.ok(notices) == [[1]]
    assert rss.growth < 48 * MiB, rss.growth / MiB
    raise_huge = (
        # 8 MiB each, not more: the server ends any query after its 2 s timeout and a
        # grace second, and a loaded machine took longer than that for 2 x 40 MiB
        "DO $$ BEGIN RAISE EXCEPTION '%', repeat('e', 8 * 1024 * 1024)"
        " USING DETAIL = repeat('d', 8 * 1024 * 1024), HINT = repeat('h', 1024 * 1024); END $$"
    )
    body = error(tenant.query(raise_huge), 400, "sql_error")
    assert len(json.dumps(body)) < 64 * 1024
    assert body["message"].startswith("eeee") and body["message"].endswith("more characters)")
    assert body["details"]["detail"].startswith("dddd")
    with tenant.gateway() as conn:  # the gateway relays Postgres' own error, whole
        with pytest.raises(psycopg.errors.RaiseException) as raised:
            conn.execute(raise_huge.replace("8 * 1024 * 1024", "1024"))
        assert raised.value.diag.message_primary == "e" * 1024


def test_huge_error_messages_of_jobs_are_clipped(tenant: Tenant) -> None:
    tenant.ok(
        "CREATE OR REPLACE FUNCTION shout() RETURNS int LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION '%', repeat('j', 20 * 1024 * 1024); END $$"
    )
    body = {"database": tenant.database, "query_string": "SELECT shout()"}
    job = _finished(tenant, tenant.http("POST", "/v1/exports", json=body))
    assert job["state"] == "FAILED", job
    assert len(json.dumps(job)) < 64 * 1024


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [("text/plain", "utf-8"), ("application/json; charset=utf-16", "utf-16"), ("", "utf-8")],
)
def test_deep_bodies_in_other_clothes(tenant: Tenant, content_type: str, encoding: str) -> None:
    body = '{"database": "a/b", "sql": "SELECT 1", "x": ' + nested(DEEP) + "}"
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": content_type}
    r = httpx.post(tenant.server.url + "/v1/query", content=body.encode(encoding), headers=headers)
    assert 400 <= r.status_code < 500, r.text[:300]


def test_odd_usernames_from_an_admin_never_500(server: ServerThread, admin_key: str) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"}
    for odd in ODD_STRINGS:
        text = json.dumps({"username": odd})
        r = httpx.post(
            server.url + "/v1/users",
            content=text,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert r.status_code < 500, (repr(odd)[:20], r.text[:200])
        if len(odd) > 1000 or "\ud800" in odd:
            continue  # not a URL: the path fuzz sends these forms
        for path in (f"/v1/users/{quote(odd, safe='')}", f"/v1/users/{quote(odd, safe='')}/keys"):
            r = httpx.get(server.url + path, headers=headers)
            assert r.status_code < 500, (path[:40], r.text[:200])
