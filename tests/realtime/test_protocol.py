"""The realtime WebSocket protocol, end to end against the real server and its WAL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

Api = Callable[..., httpx.Response]


class Socket:
    """A protocol-level client: send a message, read the next one of a type."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def next(self, kind: str | None = None, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message["type"] in ("ping",):
                continue
            if kind is None or message["type"] == kind:
                return dict(message)
            raise AssertionError(f"expected {kind}, got {message}")

    def subscribe(self, *queries: str, request_id: str = "r1") -> dict[str, Any]:
        self.send(type="subscribe", request_id=request_id, queries=list(queries))
        return self.next()


@pytest.fixture(scope="module")
def rt_db(api_module: Api, make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    user, key = make_user(prefix="rt")
    r = api_module("POST", "/v1/databases", key, json={"name": "live"})
    assert r.status_code == 201, r.text
    sql = (
        "CREATE TABLE msgs (id int8 PRIMARY KEY, room int4, body text, score numeric);"
        "INSERT INTO msgs VALUES (1, 7, 'hello', 1.5), (2, 8, 'other room', 2), (3, 7, 'x', NULL)"
    )
    r = api_module("POST", "/v1/query", key, json={"database": f"{user}/live", "sql": sql})
    assert r.status_code == 200, r.text
    return f"{user}/live", key


@pytest.fixture(scope="module")
def api_module(base_url: str) -> Iterator[Api]:
    with httpx.Client(base_url=base_url, timeout=30) as client:

        def call(method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return client.request(method, path, headers=headers, **kwargs)

        yield call


def _open(base_url: str, db: str, key: str | None) -> ClientConnection:
    url = base_url.replace("http://", "ws://") + f"/v1/realtime/{db}"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(url, additional_headers=headers, open_timeout=10)


@pytest.fixture
def sock(base_url: str, rt_db: tuple[str, str]) -> Iterator[Socket]:
    db, key = rt_db
    with _open(base_url, db, key) as ws:
        s = Socket(ws)
        hello = s.next("hello")
        assert hello["protocol"] == 1
        yield s


def _sql(api: Api, rt_db: tuple[str, str], sql: str) -> None:
    db, key = rt_db
    r = api("POST", "/v1/query", key, json={"database": db, "sql": sql})
    assert r.status_code == 200, r.text


def test_initial_rows_then_each_transaction(
    sock: Socket, api_module: Api, rt_db: tuple[str, str]
) -> None:
    applied = sock.subscribe("SELECT * FROM msgs WHERE room = 7")
    assert applied["type"] == "subscription_applied"
    table = applied["tables"]["msgs"]
    assert table["key"] == ["id"]
    assert sorted(r["id"] for r in table["rows"]) == [1, 3]
    assert {"name": "score", "type": "numeric"} in table["columns"]

    _sql(api_module, rt_db, "INSERT INTO msgs VALUES (10, 7, 'new', 3.25), (11, 8, 'elsewhere', 0)")
    tx = sock.next("transaction")
    assert tx["tables"]["msgs"]["inserts"] == [
        {"id": 10, "room": 7, "body": "new", "score": "3.25"}
    ]

    _sql(api_module, rt_db, "UPDATE msgs SET body = 'edited' WHERE id = 10")
    tx = sock.next("transaction")
    (update,) = tx["tables"]["msgs"]["updates"]
    assert update["old"]["body"] == "new" and update["new"]["body"] == "edited"

    _sql(api_module, rt_db, "UPDATE msgs SET room = 8 WHERE id = 10")  # leaves the query
    tx = sock.next("transaction")
    assert tx["tables"]["msgs"] == {
        "deletes": [{"id": 10, "room": 7, "body": "edited", "score": "3.25"}]
    }

    _sql(api_module, rt_db, "UPDATE msgs SET room = 7 WHERE id = 11")  # enters it
    tx = sock.next("transaction")
    assert tx["tables"]["msgs"]["inserts"][0]["id"] == 11

    _sql(api_module, rt_db, "DELETE FROM msgs WHERE id IN (10, 11)")
    tx = sock.next("transaction")
    assert [r["id"] for r in tx["tables"]["msgs"]["deletes"]] == [11]


def test_unsubscribe_stops_changes(sock: Socket, api_module: Api, rt_db: tuple[str, str]) -> None:
    applied = sock.subscribe("SELECT * FROM msgs WHERE room = 8")
    (query,) = applied["queries"]
    sock.send(type="unsubscribe", request_id="u1", query_ids=[query["query_id"]])
    ack = sock.next()
    assert ack == {"type": "unsubscribed", "request_id": "u1", "query_ids": [query["query_id"]]}
    sock.subscribe("SELECT * FROM msgs WHERE room = 9", request_id="r2")
    _sql(
        api_module,
        rt_db,
        "INSERT INTO msgs VALUES (20, 8, 'a', 1); INSERT INTO msgs VALUES (21, 9, 'b', 1)",
    )
    tx = sock.next("transaction")
    assert [r["id"] for r in tx["tables"]["msgs"]["inserts"]] == [21]
    _sql(api_module, rt_db, "DELETE FROM msgs WHERE id IN (20, 21)")


@pytest.mark.parametrize(
    ("query", "code", "words"),
    [
        ("SELECT id FROM msgs", "unsupported_query", "select list"),
        ("SELECT * FROM msgs ORDER BY id", "unsupported_query", "ORDER BY"),
        ("SELECT * FROM nope", "unknown_table", "nope"),
        ("SELECT * FROM msgs WHERE nope = 1", "unsupported_query", "nope"),
    ],
)
def test_refused_queries_name_the_problem(sock: Socket, query: str, code: str, words: str) -> None:
    reply = sock.subscribe(query)
    assert reply["type"] == "error" and reply["code"] == code and reply["request_id"] == "r1"
    assert words.lower() in reply["message"].lower()


def test_bad_messages(sock: Socket) -> None:
    sock.ws.send("not json")
    assert sock.next("error")["code"] == "bad_message"
    sock.send(type="dance")
    assert sock.next("error")["code"] == "bad_message"
    sock.send(type="subscribe", request_id="x", queries=[])
    assert sock.next("error")["request_id"] == "x"
    sock.send(type="ping", request_id="p")
    assert sock.next("pong") == {"type": "pong", "request_id": "p"}


def test_unauthorized_and_unknown_database(
    base_url: str, rt_db: tuple[str, str], make_user: Callable[..., tuple[str, str]]
) -> None:
    db, _ = rt_db
    with _open(base_url, db, "mp_wrong") as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001
    _, stranger = make_user(prefix="rtstranger")
    with _open(base_url, db, stranger) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4004
