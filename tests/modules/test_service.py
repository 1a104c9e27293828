"""Modules through the HTTP API of a real server: publish (first, additive, destructive,
dry run, broken), versions and rollback, reducer calls (committed, failed, a bug, bad
arguments, private reducers), who may do what, the module's tables' privileges, logs,
and reducer events reaching a subscriber with their rows."""

from __future__ import annotations

import contextlib
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from tests.client_realtime.test_failover import Replica

from millpond import BadRequestError, Millpond, NotFoundError, ReducerError
from millpond.client._realtime_core import Session
from millpond.client.realtime import RealtimeError
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

CHAT = textwrap.dedent(
    '''
    from millpond.module import ReducerContext, SenderError, Identity, Timestamp
    from millpond.module import table, reducer, primary_key, index, init

    @table(public=True)
    class User:
        identity: Identity = primary_key()
        name: str | None = None

    @table(public=True)
    class Message:
        id: int = primary_key(auto_inc=True)
        sender: Identity = index()
        sent: Timestamp
        text: str

    @table
    class Note:
        id: int = primary_key()
        body: str

    @init
    def setup(ctx: ReducerContext) -> None:
        ctx.db.note.insert(Note(id=1, body="made by init"))

    @reducer
    def send_message(ctx: ReducerContext, text: str) -> int:
        """Send a message to everyone."""
        if not text:
            raise SenderError("Messages must not be empty")
        message = ctx.db.message.insert(Message(sender=ctx.sender, sent=ctx.timestamp, text=text))
        ctx.log.info("message %s sent", message.id)
        return message.id

    @reducer
    def set_name(ctx: ReducerContext, name: str) -> None:
        user = ctx.db.user.find(ctx.sender)
        if user is None:
            ctx.db.user.insert(User(identity=ctx.sender, name=name))
        else:
            user.name = name
            ctx.db.user.update(user)

    @reducer
    def crash(ctx: ReducerContext) -> None:
        ctx.db.note.insert(Note(id=2, body="never"))
        print("about to fail")
        1 / 0

    @reducer(private=True)
    def wipe(ctx: ReducerContext) -> int:
        return len(ctx.sql("DELETE FROM message RETURNING id"))
    '''
)
EDITED = CHAT.replace("    text: str\n", "    text: str\n    edited: bool = False\n", 1)


class Db:
    def __init__(self, server: ServerThread, key: str, full_name: str) -> None:
        self.url = f"{server.url}/v1/databases/{full_name}"
        self.base = server.url
        self.key = key
        self.full_name = full_name

    def __call__(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=120, **kw)

    def publish(self, source: str, **options: Any) -> httpx.Response:
        return self("POST", "/module", json={"files": {"chat.py": source}, **options})

    def call(self, reducer: str, args: Any, key: str | None = None) -> httpx.Response:
        return self("POST", f"/call/{reducer}", key, json=args)

    def sql(self, text: str, key: str | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.base}/v1/query",
            json={"database": self.full_name, "sql": text},
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=60,
        )


def published(base_url: str, key: str, full_name: str, source: str) -> Db:
    """A new public database ``full_name`` with ``source`` published as its module."""
    r = httpx.post(
        f"{base_url}/v1/databases",
        json={"name": full_name.split("/")[1], "is_private": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    db = Db(SimpleNamespace(url=base_url), key, full_name)  # type: ignore[arg-type]
    r = db.publish(source)
    assert r.status_code == 201, r.text
    return db


@contextlib.contextmanager
def two_replicas(tmp_path: Path, **env: str) -> Iterator[tuple[Replica, Replica]]:
    """Two ``millpond up`` servers, with ``env``, on one Postgres of their own."""
    external = EmbeddedPostgres(tmp_path / "pg")
    external.start()
    a = Replica(tmp_path / "a", external.url())
    b = Replica(tmp_path / "b", external.url())
    for replica in (a, b):
        replica.env |= env
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()
        external.stop()


@pytest.fixture(scope="module")
def chat(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Db:
    username, key = make_user(prefix="mod")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "chat", "is_private": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    db = Db(server, key, f"{username}/chat")
    r = db.publish(CHAT)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["version"] == 1 and first["first"] and not first["destructive"]
    assert "+ table message" in first["diff"]
    return db


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, error
    return error


def test_init_ran_and_the_definition_is_served(chat: Db) -> None:
    assert chat.sql("SELECT body FROM note").json()["data"] == [["made by init"]]
    r = chat("GET", "/module")
    assert r.status_code == 200
    body = r.json()
    assert body["version"] >= 1
    reducers = {r["name"]: r for r in body["definition"]["reducers"]}
    assert set(reducers) >= {"send_message", "set_name", "crash", "wipe"}
    assert reducers["wipe"]["private"] and reducers["send_message"]["doc"]


def test_a_call_commits_and_returns(chat: Db) -> None:
    r = chat.call("send_message", ["hello"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "committed" and isinstance(body["return"], int)
    rows = chat.sql(f"SELECT text, sender FROM message WHERE id = {body['return']}").json()
    assert rows["data"][0][0] == "hello" and len(rows["data"][0][1]) == 64
    assert chat.call("send_message", {"text": "by name"}).status_code == 200
    assert chat.call("set_name", ["ann"]).status_code == 200
    assert chat.call("set_name", ["anna"]).status_code == 200  # find + update
    assert chat.sql('SELECT name FROM "user"').json()["data"] == [["anna"]]


def test_a_failed_call_changes_nothing(chat: Db) -> None:
    before = chat.sql("SELECT count(*) FROM message").json()["data"]
    error = _error(chat.call("send_message", [""]), 422, "reducer_failed")
    assert error["message"] == "Messages must not be empty"
    assert error["details"]["status"] == "failed" and error["details"]["request_id"]
    error = _error(chat.call("crash", []), 422, "reducer_error")
    assert "ZeroDivisionError" in error["message"]
    assert "Traceback" not in error["message"]  # the traceback is the owner's, in the logs
    assert chat.sql("SELECT count(*) FROM message").json()["data"] == before
    assert chat.sql("SELECT count(*) FROM note WHERE id = 2").json()["data"] == [[0]]
    logs = chat("GET", "/module/logs").json()
    crash = [line for line in logs if line["reducer"] == "crash"]
    assert any("about to fail" in line["message"] for line in crash), crash
    assert any("ZeroDivisionError" in (line["traceback"] or "") for line in crash), crash
    assert any(line["message"].startswith("message ") for line in logs), logs


@pytest.mark.parametrize(
    ("reducer", "args", "status", "code"),
    [
        ("send_message", [1], 400, "invalid_arguments"),
        ("send_message", [], 400, "invalid_arguments"),
        ("send_message", ["a", "b"], 400, "invalid_arguments"),
        ("send_message", {"txt": "a"}, 400, "invalid_arguments"),
        ("send_message", "hi", 400, "invalid_arguments"),
        ("nope", [], 404, "reducer_not_found"),
    ],
)
def test_bad_calls_are_refused_before_the_transaction(
    chat: Db, reducer: str, args: Any, status: int, code: str
) -> None:
    before = chat.sql("SELECT count(*) FROM message").json()["data"]
    _error(chat.call(reducer, args), status, code)
    assert chat.sql("SELECT count(*) FROM message").json()["data"] == before


def test_who_may_do_what(chat: Db, make_user: Callable[..., tuple[str, str]]) -> None:
    _, stranger = make_user(prefix="modx")
    writer_name, writer = make_user(prefix="modw")
    r = chat("PUT", f"/collaborators/{writer_name}", json={"role": "write"})
    assert r.status_code in (200, 201), r.text
    # anyone may call a public database's public reducers; publishing is the owner's
    assert chat.call("send_message", ["from a stranger"], stranger).status_code == 200
    r = chat("POST", "/module", stranger, json={"files": {"chat.py": CHAT}})
    _error(r, 403, "forbidden")
    _error(chat("GET", "/module/logs", stranger), 403, "forbidden")
    _error(chat("GET", "/module/versions", writer), 403, "forbidden")
    _error(chat.call("wipe", [], writer), 403, "reducer_private")
    assert chat.call("wipe", []).status_code == 200  # the owner may
    # only reducers (and the owner) write a module's tables; a private table is not read
    r = chat.sql(
        "INSERT INTO message (sender, sent, text) VALUES (repeat('a', 64), now(), 'x')", writer
    )
    assert r.status_code == 400 and "permission denied" in r.text
    r = chat.sql("SELECT * FROM note", writer)
    assert r.status_code == 400 and "permission denied" in r.text
    assert chat.sql("SELECT count(*) FROM message", writer).status_code == 200
    r = httpx.post(
        f"{chat.base}/v1/keys",
        json={"scope": "read"},
        headers={"Authorization": f"Bearer {writer}"},
    )
    assert r.status_code == 201, r.text
    _error(chat.call("send_message", ["x"], r.json()["secret"]), 403, "read_only_key")


def test_a_private_database_hides_its_module(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    owner, key = make_user(prefix="modp")
    _, stranger = make_user(prefix="modq")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "hidden"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201
    db = Db(server, key, f"{owner}/hidden")
    _error(db("GET", "/module"), 404, "module_not_found")
    _error(db.call("x", []), 404, "module_not_found")
    for method, path in (("GET", "/module"), ("POST", "/call/x"), ("GET", "/module/versions")):
        _error(db(method, path, stranger, json=[]), 404, "database_not_found")


def test_migrations_additive_destructive_dry_run_and_rollback(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    owner, key = make_user(prefix="modm")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "mig"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201
    db = Db(server, key, f"{owner}/mig")
    assert db.publish(CHAT).status_code == 201
    assert db.call("send_message", ["kept"]).status_code == 200
    dry = db.publish(EDITED, dry_run=True)
    assert dry.status_code == 201 and dry.json()["version"] is None
    assert "+ message.edited" in dry.json()["diff"]
    assert db("GET", "/module").json()["version"] == 1  # a dry run changes nothing
    r = db.publish(EDITED)
    assert r.status_code == 201 and r.json()["version"] == 2 and not r.json()["first"]
    assert db.sql("SELECT text, edited FROM message").json()["data"] == [["kept", False]]
    assert db.sql("SELECT count(*) FROM note").json()["data"] == [[1]]  # init ran once
    # going back drops the column: destructive, refused without the flag, with the diff
    error = _error(
        db("POST", "/module/rollback", json={"version": 1}), 409, "destructive_migration"
    )
    assert "- message.edited" in error["details"]["diff"]
    r = db("POST", "/module/rollback", json={"version": 1, "allow_destructive": True})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 3
    versions = db("GET", "/module/versions").json()
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[0]["rolled_back_from"] == 1 and versions[0]["active"]
    detail = db("GET", "/module/versions/2").json()
    assert detail["files"] == {"chat.py": EDITED} and not detail["active"]
    _error(db("GET", "/module/versions/9"), 404, "version_not_found")
    assert db.sql("SELECT text FROM message").json()["data"] == [["kept"]]
    assert db.call("send_message", ["after rollback"]).status_code == 200


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({}, "invalid_module_files"),
        ({"../evil.py": "x = 1"}, "invalid_module_files"),
        ({"chat.txt": "x = 1"}, "invalid_module_files"),
        ({"a.py": "", "b.py": ""}, "invalid_module_files"),
        ({"chat.py": "def broken(:\n"}, "module_invalid"),
        ({"chat.py": "import no_such_module_anywhere\n"}, "module_invalid"),
        (
            {"chat.py": "from millpond.module import table\n@table\nclass T:\n    x: int\n"},
            "module_invalid",
        ),
    ],
)
def test_bad_uploads_are_refused(chat: Db, files: dict[str, str], code: str) -> None:
    before = chat("GET", "/module").json()["version"]
    error = _error(chat("POST", "/module", json={"files": files}), 400, code)
    if code == "module_invalid":
        assert error["details"]["message"]
    assert chat("GET", "/module").json()["version"] == before


def test_a_subscriber_gets_the_rows_with_their_reducer_event(chat: Db) -> None:
    seen: list[Any] = []
    with Millpond(chat.key, chat.base) as mp, mp.realtime(chat.full_name, callbacks="update") as rt:
        rt.subscribe(["SELECT * FROM message"])
        rt.on_reducer("send_message", seen.append)
        r = chat.call("send_message", ["live"])
        assert r.status_code == 200
        deadline = time.monotonic() + 15
        while not seen and time.monotonic() < deadline:
            rt.update(0.05)
        assert seen, "no reducer event"
        event = seen[0]
        assert event.reducer.name == "send_message" and event.reducer.args == ["live"]
        assert event.reducer.request_id == r.json()["request_id"]
        assert len(event.reducer.sender) == 64
        assert [c.new["text"] for c in event.changes] == ["live"]


def test_out_of_range_numbers_are_422(chat: Db) -> None:
    for path in (
        "/module/versions/0",
        f"/module/versions/{2**31}",
        f"/module/versions/-{2**70}",
        f"/module/logs?after={2**63}",
        "/module/logs?limit=0",
        "/module/logs?last=0",
        "/module/logs?last=1001",
    ):
        _error(chat("GET", path), 422, "validation_error")
    _error(chat("POST", "/module/rollback", json={"version": 2**31}), 422, "validation_error")


def test_calls_on_the_realtime_connection(chat: Db) -> None:
    with Millpond(chat.key, chat.base) as mp, mp.realtime(chat.full_name) as rt:
        rt.subscribe(["SELECT * FROM message"])
        events: list[Any] = []
        rt.on_reducer("send_message", events.append)
        result = rt.call("send_message", "over the socket")
        # the call's rows are in the cache (and their callbacks ran) before it returns
        assert rt.table("message").find(result.return_value)["text"] == "over the socket"
        assert events and events[-1].reducer.request_id == result.request_id
        assert events[-1].reducer.connection_id is not None
        assert result.xid == events[-1].xid
        with pytest.raises(ReducerError) as failed:
            rt.call("send_message", "")
        assert failed.value.status == "failed" and failed.value.code == "reducer_failed"
        assert failed.value.message == "Messages must not be empty"
        with pytest.raises(BadRequestError) as bad:
            rt.call("send_message", 42)
        assert bad.value.code == "invalid_arguments"
        with pytest.raises(NotFoundError):
            rt.call("nope")
        assert rt.call("set_name", name="over ws").status == "committed"


def test_a_call_is_never_queued_or_sent_twice() -> None:
    session = Session()
    job, out = session.call("send_message", ["hi"])
    assert job.done and isinstance(job.error, RealtimeError)
    assert job.error.code == "not_connected" and out.send == []
    session.connected({"type": "hello", "connection_id": "c_1"})
    job, out = session.call("send_message", ["hi"])
    assert out.send == [
        {"type": "call", "request_id": job.request_id, "reducer": "send_message", "args": ["hi"]}
    ]
    out = session.disconnected(1006)
    assert job in out.completed and isinstance(job.error, RealtimeError)
    assert job.error.code == "call_outcome_unknown"
    out = session.connected({"type": "hello", "connection_id": "c_2"})
    assert not any(m.get("type") == "call" for m in out.send)  # not sent again
    job, _ = session.call("send_message", ["hi"])
    out = session.receive({"type": "call_result", "request_id": job.request_id, "status": "x"})
    assert job in out.completed and job.answer == {
        "type": "call_result",
        "request_id": job.request_id,
        "status": "x",
    }


def test_a_publish_drops_no_call_in_flight(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    owner, key = make_user(prefix="mods")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "swap"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201
    db = Db(server, key, f"{owner}/swap")
    assert db.publish(CHAT).status_code == 201
    stop = threading.Event()
    outcomes: list[int] = []
    failures: list[str] = []

    def caller() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                r = http.post(
                    f"{db.url}/call/send_message",
                    json=["during the swap"],
                    headers={"Authorization": f"Bearer {key}"},
                )
                outcomes.append(r.status_code)
                if r.status_code != 200:
                    failures.append(r.text)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for source in (EDITED, CHAT.replace("Messages must", "Messages may not"), EDITED):
            before = len(outcomes)
            r = db.publish(source, allow_destructive=True)
            assert r.status_code == 201, r.text
            deadline = time.monotonic() + 30
            while len(outcomes) < before + 8 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert len(outcomes) > 24 and not failures, failures[:3]
    count = db.sql("SELECT count(*) FROM message").json()["data"][0][0]
    assert count == len(outcomes)  # every committed call's row, once
    assert db("GET", "/module").json()["version"] == 4


def test_the_newest_log_lines(chat: Db) -> None:
    """``last``: the newest lines, still oldest first (what ``millpond logs -n`` prints)."""
    for n in range(5):
        assert chat.call("send_message", [f"tail {n}"]).status_code == 200
    every = chat("GET", "/module/logs?limit=1000").json()
    newest = chat("GET", "/module/logs?last=3").json()
    assert [line["id"] for line in newest] == [line["id"] for line in every[-3:]]
    assert newest[-1]["message"].startswith("message ")
    oldest = chat("GET", "/module/logs?limit=3").json()
    assert [line["id"] for line in oldest] == [line["id"] for line in every[:3]]
    after = every[-2]["id"]
    assert [line["id"] for line in chat("GET", f"/module/logs?after={after}&last=5").json()] == [
        every[-1]["id"]
    ]
