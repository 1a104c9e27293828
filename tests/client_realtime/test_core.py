"""The sans-I/O core with hand-made server messages: the session's requests and ids, the
cache (keys, indexes, net changes), callbacks (after the cache, in order, removable),
reconciliation after a reconnect, and the cleanup after an unsubscribe."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from millpond.client._realtime_core import (
    Cache,
    Event,
    Output,
    RealtimeError,
    Row,
    RowChange,
    Session,
    SubscriptionError,
    TableView,
    parse_lsn,
)

COLUMNS = [
    {"name": "id", "type": "int8"},
    {"name": "room", "type": "int4"},
    {"name": "body", "type": "text"},
    {"name": "score", "type": "numeric"},
]


def row(id: int, room: int = 7, body: str = "x", score: str | None = None) -> dict[str, Any]:
    return {"id": id, "room": room, "body": body, "score": score}


class Harness:
    """A session and a cache wired as a driver wires them, with the messages sent."""

    def __init__(self) -> None:
        self.session = Session()
        self.cache = Cache()
        self.sent: list[dict[str, Any]] = []
        self.log: list[Any] = []
        self.errors: list[BaseException] = []
        self.cache.add_callback("error", self.errors.append)

    def run(self, out: Output) -> Output:
        for item in out.inputs:
            self.cache.process(item)
        self.sent.extend(out.send)
        return out

    def hello(self, connection_id: str = "c1") -> Output:
        return self.run(
            self.session.connected(
                {"type": "hello", "connection_id": connection_id, "heartbeat_interval_ms": 1000}
            )
        )

    def receive(self, message: dict[str, Any]) -> Output:
        return self.run(self.session.receive(message))

    def last_sent(self) -> dict[str, Any]:
        return self.sent[-1]

    def applied(
        self,
        queries: list[tuple[str, str]],
        rows: list[dict[str, Any]],
        *,
        table: str = "msgs",
        key: tuple[str, ...] = ("id",),
        columns: list[dict[str, str]] = COLUMNS,
    ) -> Output:
        """Answer the last subscribe with ``queries`` (server id, canonical sql)."""
        request = self.last_sent()
        assert request["type"] == "subscribe"
        return self.receive(
            {
                "type": "subscription_applied",
                "request_id": request["request_id"],
                "queries": [{"query_id": q, "sql": s, "table": table} for q, s in queries],
                "tables": {table: {"columns": columns, "key": list(key), "rows": rows}},
            }
        )

    def subscribe(
        self, sql: str, server_id: str, rows: list[dict[str, Any]], **kwargs: Any
    ) -> list[str]:
        job, out = self.session.subscribe([sql])
        self.run(out)
        self.applied([(server_id, sql)], rows, **kwargs)
        assert job.done and job.error is None and job.result is not None
        return job.result

    def transaction(self, lsn: str = "0/10", xid: int = 1, **tables: Any) -> Output:
        return self.receive(
            {
                "type": "transaction",
                "lsn": lsn,
                "xid": xid,
                "commit_time": "2026-01-02T03:04:05.123456+00:00",
                "tables": tables,
            }
        )

    def table(self, name: str = "msgs") -> TableView:
        return TableView(self.cache, name)

    def on_changes(self, name: str = "msgs") -> list[tuple[str, Any, Any]]:
        seen: list[tuple[str, Any, Any]] = []
        self.table(name).on_row_update(lambda op, old, new, event: seen.append((op, old, new)))
        return seen


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.hello()
    return harness


def ids(view: TableView) -> list[int]:
    return sorted(r["id"] for r in view.iter())


# -- the session ---------------------------------------------------------------------------


def test_requests_wait_for_the_connection_and_go_one_at_a_time() -> None:
    h = Harness()
    first, out = h.session.subscribe(["SELECT * FROM msgs WHERE room = 7"])
    assert out.send == [] and not first.done
    second, out = h.session.subscribe(["SELECT * FROM msgs WHERE room = 8"])
    assert out.send == []
    h.hello()
    assert h.sent == [
        {"type": "subscribe", "request_id": "r1", "queries": ["SELECT * FROM msgs WHERE room = 7"]}
    ]
    h.applied([("qa", "SELECT * FROM msgs WHERE room = 7")], [row(1)])
    assert first.done and first.result == ["qa"]
    assert h.last_sent()["queries"] == ["SELECT * FROM msgs WHERE room = 8"]
    h.applied([("qb", "SELECT * FROM msgs WHERE room = 8")], [row(2, room=8)])
    assert second.result == ["qb"]
    assert h.session.queries.keys() == {"qa", "qb"}
    assert ids(h.table()) == [1, 2]


def test_subscribing_again_gives_the_same_id(h: Harness) -> None:
    assert h.subscribe("SELECT * FROM msgs", "q1", [row(1)]) == ["q1"]
    job, out = h.session.subscribe(["select * from msgs"])
    h.run(out)
    h.receive(
        {
            "type": "subscription_applied",
            "request_id": h.last_sent()["request_id"],
            "queries": [{"query_id": "q1", "sql": "SELECT * FROM msgs", "table": "msgs"}],
            "tables": {},
        }
    )
    assert job.result == ["q1"] and list(h.session.queries) == ["q1"]
    assert h.session.resolve("select * from msgs") == "q1"  # the canonical text finds it too
    assert h.session.resolve("SELECT * FROM msgs") == "q1"


def test_refusals_raise_typed_errors_and_change_nothing(h: Harness) -> None:
    job, out = h.session.subscribe(["SELECT id FROM msgs"])
    h.run(out)
    h.receive(
        {
            "type": "error",
            "request_id": h.last_sent()["request_id"],
            "code": "unsupported_query",
            "message": "only SELECT * is supported",
        }
    )
    assert isinstance(job.error, SubscriptionError)
    assert job.error.code == "unsupported_query" and job.error.queries == ("SELECT id FROM msgs",)
    assert h.session.queries == {}
    with pytest.raises(ValueError, match="not subscribed"):
        h.session.unsubscribe(["q404"])
    with pytest.raises(ValueError):
        h.session.subscribe([])
    h.receive({"type": "error", "request_id": None, "code": "bad_message", "message": "?"})
    assert isinstance(h.errors[-1], RealtimeError) and h.errors[-1].code == "bad_message"


def test_heartbeats(h: Harness) -> None:
    assert h.receive({"type": "ping"}).send == [{"type": "pong"}]
    assert h.session.ping() == {"type": "ping", "request_id": "p1"}
    assert h.receive({"type": "pong", "request_id": "p1"}).send == []
    assert h.receive({"type": "from_the_future"}).send == []


def test_fatal_close_fails_pending_requests() -> None:
    h = Harness()
    job, out = h.session.subscribe(["SELECT * FROM msgs"])
    out = h.run(h.session.disconnected(4001, "unauthorized"))
    assert isinstance(out.fatal, RealtimeError) and out.fatal.close_code == 4001
    assert job.done and job.error is out.fatal
    assert h.errors == [out.fatal]
    with pytest.raises(RealtimeError):
        h.session.subscribe(["SELECT * FROM msgs"])


def test_a_request_in_flight_is_sent_again_after_a_reconnect(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs WHERE room = 7", "q1", [row(1)])
    job, out = h.session.subscribe(["SELECT * FROM msgs WHERE room = 8"])
    h.run(out)
    h.run(h.session.disconnected(1006))
    h.hello("c2")
    # first the resubscription, alone; then the request that was cut off
    assert h.last_sent()["queries"] == ["SELECT * FROM msgs WHERE room = 7"]
    h.applied([("q9", "SELECT * FROM msgs WHERE room = 7")], [row(1)])
    assert h.last_sent()["queries"] == ["SELECT * FROM msgs WHERE room = 8"]
    h.applied([("q10", "SELECT * FROM msgs WHERE room = 8")], [])
    assert job.result == ["q10"]
    assert set(h.session.queries) == {"q1", "q10"}  # q1 keeps its id across connections
    job, out = h.session.unsubscribe(["q1"])
    h.run(out)
    assert h.last_sent()["query_ids"] == ["q9"]  # ... and is sent with the server's new id


def test_unsubscribe_while_disconnected_is_immediate(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs WHERE room = 7", "q1", [row(1)])
    h.run(h.session.disconnected(1006))
    job, out = h.session.unsubscribe(["q1"])
    h.run(out)
    assert job.done and job.result == ["q1"] and h.table().count() == 0
    sent = len(h.sent)
    h.hello("c2")
    assert len(h.sent) == sent  # nothing to resubscribe


# -- the cache -------------------------------------------------------------------------------


def test_reads_by_key_and_by_index(h: Harness) -> None:
    h.subscribe(
        "SELECT * FROM msgs WHERE room IN (7, 8)",
        "q1",
        [row(1), row(2, room=8, score="1.50"), row(3, body="y")],
    )
    msgs = h.table()
    assert msgs.count() == len(msgs) == 3
    assert msgs.key == ("id",) and msgs.columns["score"] == "numeric"
    found = msgs.find(2)
    assert isinstance(found, Row) and found.room == 8 and found["score"] == "1.50"
    assert found == row(2, room=8, score="1.50")
    with pytest.raises(AttributeError):
        found.room = 9  # type: ignore[misc]
    assert msgs.find(99) is None
    assert msgs.indexed_columns == {"room"}
    table = h.cache.tables["msgs"]
    assert sorted(r.id for r in msgs.filter_by(room=7)) == [1, 3]
    assert msgs.filter_by(room="8") == []  # '8' is not 8: pass values, not SQL literals
    assert [r.id for r in msgs.filter_by(room=7, body="y")] == [3]
    assert table.scans == 0
    assert [r.id for r in msgs.filter_by(score=Decimal("1.5"))] == [2]  # numeric equality
    assert [r.id for r in msgs.filter_by(score="1.500")] == [2]
    assert table.scans == 2
    assert sorted(r.id for r in msgs.filter_by(score=None)) == [1, 3]  # None finds NULLs
    h.transaction(msgs={"updates": [{"old": row(1), "new": row(1, room=8)}]})
    assert sorted(r.id for r in msgs.filter_by(room=8)) == [1, 2]  # the index follows


def test_composite_and_missing_keys(h: Harness) -> None:
    columns = [{"name": "a", "type": "int4"}, {"name": "b", "type": "text"}]
    _job, out = h.session.subscribe(["SELECT * FROM pairs"])
    h.run(out)
    h.applied(
        [("q1", "SELECT * FROM pairs")],
        [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}],
        table="pairs",
        key=("a", "b"),
        columns=columns,
    )
    pairs = h.table("public.pairs")
    assert pairs.find(1, "y") == {"a": 1, "b": "y"} == pairs.find((1, "y"))
    with pytest.raises(TypeError):
        pairs.find(1)


def test_callbacks_run_after_the_whole_transaction_is_in_the_cache(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs", "q1", [row(1), row(2)])
    msgs = h.table()
    log: list[Any] = []

    def snapshot(label: str) -> Callable[..., None]:
        def callback(*args: Any) -> None:
            log.append((label, ids(msgs)))

        return callback

    msgs.on_insert(snapshot("insert"))
    msgs.on_update(snapshot("update"))
    msgs.on_delete(snapshot("delete"))
    msgs.on_row_update(lambda op, old, new, event: log.append(("row", op, event.kind)))
    events: list[Event] = []
    h.cache.add_callback("transaction", events.append)
    h.transaction(
        "0/1D525B0",
        816,
        msgs={
            "inserts": [row(3), row(4)],
            "updates": [{"old": row(1), "new": row(1, body="edited")}],
            "deletes": [row(2)],
        },
    )
    after = [1, 3, 4]
    assert log == [
        ("delete", after),
        ("row", "delete", "transaction"),
        ("update", after),
        ("row", "update", "transaction"),
        ("insert", after),
        ("row", "insert", "transaction"),
        ("insert", after),
        ("row", "insert", "transaction"),
    ]
    (event,) = events
    assert (event.lsn, event.xid, event.lsn_int) == ("0/1D525B0", 816, 0x1D525B0)
    assert event.commit_time is not None and event.commit_time.microsecond == 123456
    assert [c.op for c in event.changes] == ["delete", "update", "insert", "insert"]
    assert h.cache.last_lsn == "0/1D525B0"
    assert parse_lsn("1/0") == 1 << 32


def test_a_row_changed_several_times_in_a_transaction_gets_its_net_change(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs", "q1", [row(1), row(2)])
    seen = h.on_changes()
    h.transaction(
        msgs={
            # 1: deleted and inserted again; 2: updated twice; 3: inserted, updated, deleted;
            # 4: inserted then updated
            "inserts": [row(1, body="again"), row(3), row(4)],
            "updates": [
                {"old": row(2), "new": row(2, body="b")},
                {"old": row(2, body="b"), "new": row(2, body="c")},
                {"old": row(3), "new": row(3, body="3b")},
                {"old": row(4), "new": row(4, body="4b")},
            ],
            "deletes": [row(1), row(3, body="3b")],
        }
    )
    assert seen == [
        ("update", row(1), row(1, body="again")),
        ("update", row(2), row(2, body="c")),
        ("insert", None, row(4, body="4b")),
    ]
    assert h.table().find(2) == row(2, body="c") and h.table().find(3) is None


def test_an_update_of_the_key_and_truncate(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs", "q1", [row(1), row(2)])
    seen = h.on_changes()
    h.transaction(msgs={"updates": [{"old": row(1), "new": row(10)}]})
    assert seen == [("delete", row(1), None), ("insert", None, row(10))]
    h.transaction(msgs={"truncated": True, "inserts": [row(5)]})
    assert ids(h.table()) == [5]


def test_keyless_tables_count_identical_rows(h: Harness) -> None:
    columns = [{"name": "tag", "type": "text"}, {"name": "n", "type": "int4"}]
    _job, out = h.session.subscribe(["SELECT * FROM tags WHERE n > 0", "SELECT * FROM tags"])
    h.run(out)
    a, b = {"tag": "a", "n": 1}, {"tag": "b", "n": 0}
    # two copies of a, one of b; both queries match a, so the server sent a four times
    h.applied(
        [("q1", "SELECT * FROM tags WHERE n > 0"), ("q2", "SELECT * FROM tags")],
        [a, a, a, b, a],
        table="tags",
        key=(),
        columns=columns,
    )
    tags = h.table("tags")
    assert tags.count() == 3 and tags.filter_by(tag="a") == [a, a]
    with pytest.raises(TypeError, match="no primary key"):
        tags.find("a")
    seen = h.on_changes("tags")
    h.transaction(tags={"deletes": [a], "inserts": [b]})
    assert seen == [("delete", a, None), ("insert", None, b)]
    assert sorted(r["tag"] for r in tags) == ["a", "b", "b"]
    _job, out = h.session.unsubscribe(["q2"])
    h.run(out)
    h.receive({"type": "unsubscribed", "request_id": h.last_sent()["request_id"]})
    assert list(tags) == [a]


def test_unsubscribe_drops_the_rows_no_remaining_query_matches(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs WHERE room = 7", "q7", [row(1), row(2)])
    h.subscribe("SELECT * FROM msgs WHERE id < 3 OR room = 8", "qlow", [row(1), row(2), row(3, 8)])
    assert h.table().indexed_columns == {"room"}
    seen = h.on_changes()
    events: list[Event] = []
    h.table().on_row_update(lambda op, old, new, event: events.append(event))
    job, out = h.session.unsubscribe(["SELECT * FROM msgs WHERE id < 3 OR room = 8"])
    h.run(out)
    assert h.last_sent() == {"type": "unsubscribe", "request_id": "r3", "query_ids": ["qlow"]}
    assert ids(h.table()) == [1, 2, 3]  # not before the server says so
    h.receive({"type": "unsubscribed", "request_id": "r3", "query_ids": ["qlow"]})
    assert job.done and ids(h.table()) == [1, 2]
    assert seen == [("delete", row(3, 8), None)]
    assert events[0].kind == "unsubscribe" and events[0].query_ids == ("qlow",)
    h.run(h.session.unsubscribe(["q7"])[1])
    h.receive({"type": "unsubscribed", "request_id": "r4", "query_ids": ["q7"]})
    assert h.table().count() == 0 and h.table().indexed_columns == frozenset()


def test_handles_remove_callbacks(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs", "q1", [])
    calls: list[str] = []
    first = h.table().on_insert(lambda r: calls.append("first"))
    second = h.table().on_insert(lambda r: (calls.append("second"), first.remove()))
    h.transaction(msgs={"inserts": [row(1), row(2)]})
    assert calls == ["first", "second", "second"]  # removed during the dispatch: gone at once
    second.remove()
    second.remove()  # twice is fine
    h.transaction(msgs={"inserts": [row(3)]})
    assert calls == ["first", "second", "second"]


def test_callback_errors_go_to_on_error(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs", "q1", [])
    h.table().on_insert(lambda r: 1 / 0)
    later: list[Row] = []
    h.table().on_insert(later.append)
    h.transaction(msgs={"inserts": [row(1)]})
    assert isinstance(h.errors[0], ZeroDivisionError) and later == [row(1)]


def test_subscription_rows_are_inserts_then_subscription_applied(h: Harness) -> None:
    log: list[Any] = []
    h.table().on_insert(lambda r: log.append(("insert", r["id"])))
    h.cache.add_callback(
        "subscription_applied", lambda e: log.append((e.kind, e.query_ids, len(e.changes)))
    )
    h.subscribe("SELECT * FROM msgs", "q1", [row(1), row(2)])
    assert log == [("insert", 1), ("insert", 2), ("subscribe", ("q1",), 2)]


# -- reconnect and reconciliation ---------------------------------------------------------------


def test_a_reconnect_reconciles_the_cache(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs WHERE room = 7", "q7", [row(1), row(2), row(3)])
    h.subscribe("SELECT * FROM msgs WHERE room = 8", "q8", [row(4, 8)])
    seen = h.on_changes()
    applied: list[Event] = []
    h.cache.add_callback("subscription_applied", applied.append)
    connects: list[Any] = []
    h.cache.add_callback("connect", connects.append)
    disconnects: list[Any] = []
    h.cache.add_callback("disconnect", disconnects.append)
    h.run(h.session.disconnected(4010, "server_shutdown"))
    assert disconnects[0].code == 4010 and disconnects[0].reconnecting
    assert ids(h.table()) == [1, 2, 3, 4]  # offline, the cache keeps what it had
    h.hello("c2")
    assert connects[0].reconnect and connects[0].connection_id == "c2"
    assert h.last_sent()["queries"] == [
        "SELECT * FROM msgs WHERE room = 7",
        "SELECT * FROM msgs WHERE room = 8",
    ]
    # meanwhile: 1 unchanged, 2 changed, 3 deleted, 4 moved to room 7, 5 new
    h.applied(
        [("n7", "SELECT * FROM msgs WHERE room = 7"), ("n8", "SELECT * FROM msgs WHERE room = 8")],
        [row(1), row(2, body="changed"), row(4, 7), row(5, 8)],
    )
    assert sorted(seen, key=lambda s: (s[0], str(s[1]))) == [
        ("delete", row(3), None),
        ("insert", None, row(5, 8)),
        ("update", row(2), row(2, body="changed")),
        ("update", row(4, 8), row(4, 7)),
    ]
    assert ids(h.table()) == [1, 2, 4, 5]
    assert applied[-1].kind == "resubscribe" and set(applied[-1].query_ids) == {"q7", "q8"}
    assert h.table().indexed_columns == {"room"}
    assert sorted(r.id for r in h.table().filter_by(room=7)) == [1, 2, 4]


def test_a_query_that_cannot_be_resubscribed_is_dropped(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs WHERE room = 7", "q7", [row(1)])
    h.subscribe(
        "SELECT * FROM other",
        "qo",
        [{"id": 9, "room": 1, "body": "", "score": None}],
        table="other",
    )
    user_job, _ = h.session.subscribe(["SELECT * FROM msgs WHERE room = 9"])
    h.run(h.session.disconnected(1006))
    h.hello("c2")
    bulk = h.last_sent()
    assert len(bulk["queries"]) == 2
    h.receive(
        {
            "type": "error",
            "request_id": bulk["request_id"],
            "code": "unknown_table",
            "message": 'table "public.other" does not exist',
        }
    )
    assert h.last_sent()["queries"] == ["SELECT * FROM msgs WHERE room = 7"]  # one at a time
    h.applied([("n7", "SELECT * FROM msgs WHERE room = 7")], [row(1, body="new")])
    assert h.table("other").count() == 1  # not final yet
    h.receive(
        {
            "type": "error",
            "request_id": h.last_sent()["request_id"],
            "code": "unknown_table",
            "message": "gone",
        }
    )
    assert isinstance(h.errors[-1], SubscriptionError) and h.errors[-1].code == "unknown_table"
    assert set(h.session.queries) == {"q7"}
    assert h.table("other").count() == 0  # reconciled: its rows are gone
    assert h.table().find(1) == row(1, body="new")
    assert h.last_sent()["queries"] == ["SELECT * FROM msgs WHERE room = 9"]  # then the user's
    assert not user_job.done


def test_transactions_during_a_resubscription(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs WHERE room = 7", "q7", [row(1), row(2)])
    h.subscribe("SELECT * FROM msgs WHERE room = 8", "q8", [row(3, 8), row(4, 8)])
    h.run(h.session.disconnected(1006))
    h.hello("c2")
    bulk = h.last_sent()
    h.receive({"type": "error", "request_id": bulk["request_id"], "code": "x", "message": "y"})
    h.applied([("n7", "SELECT * FROM msgs WHERE room = 7")], [row(1), row(2)])
    seen = h.on_changes()
    # for the first query only: 3 moves into room 7 (the cache still has its stale copy)
    h.transaction(msgs={"inserts": [row(3, 7)], "deletes": [row(1)]})
    assert seen == [("delete", row(1), None), ("update", row(3, 8), row(3, 7))]
    h.applied([("n8", "SELECT * FROM msgs WHERE room = 8")], [])
    assert ids(h.table()) == [2, 3]  # 4 went while we were away
    assert seen[-1] == ("delete", row(4, 8), None)


def test_a_resubscription_cut_short_with_nothing_left_to_resubscribe(h: Harness) -> None:
    h.subscribe("SELECT * FROM msgs", "q1", [row(1)])
    h.run(h.session.disconnected(1006))
    h.hello("c2")  # resubscribing...
    h.run(h.session.disconnected(1006))  # ... cut short
    h.run(h.session.unsubscribe(["q1"])[1])
    h.hello("c3")
    assert h.table().count() == 0 and all(not t.stale for t in h.cache.tables.values())


def test_row_changes_are_plain_values() -> None:
    change = RowChange("t", "insert", None, Row({"a": 1}))
    assert change.new is not None and change.new.to_dict() == {"a": 1}
    assert repr(change.new) == "Row({'a': 1})"


def test_sync_and_async_clients_have_one_surface() -> None:
    import inspect

    from millpond.client.realtime import AsyncRealtime, Realtime

    def surface(cls: type) -> dict[str, Any]:
        return {n: v for n, v in vars(cls).items() if not n.startswith("_") or n == "__init__"}

    sync, async_ = surface(Realtime), surface(AsyncRealtime)
    assert set(sync) - {"close", "update", "_main"} == set(async_) - {"aclose"}
    for name, value in async_.items():
        if name == "aclose" or not callable(value):
            continue
        sync_params = list(inspect.signature(sync[name]).parameters)
        async_params = [p for p in inspect.signature(value).parameters if p != "_deliver"]
        assert sync_params == async_params, name
        coroutine = name in ("connect", "subscribe", "unsubscribe", "call")
        assert inspect.iscoroutinefunction(value) == coroutine, name
        assert not inspect.iscoroutinefunction(sync[name])
