"""The realtime client against the real server: sync (``update()`` and thread callbacks)
and async clients see inserts, updates and deletes with the right callbacks; indexes,
unsubscribe, schedule, refusals and fatal close codes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from _waiting import wait_until
from millpond import AsyncMillpond, Millpond, RealtimeError, SubscriptionError
from millpond.client.realtime import Event, Row

from .conftest import FAST, Database


def test_sync_client_with_update(mp: Millpond, database: Database) -> None:
    database.sql("INSERT INTO msgs VALUES (1, 7, 'hello', 1.5), (2, 8, 'other', 2)")
    with mp.realtime(database.name, reconnect_backoff=FAST) as rt:
        assert rt.connected and rt.callbacks == "update"
        log: list[tuple[Any, ...]] = []
        threads: set[int] = set()
        errors: list[BaseException] = []
        rt.on_error(errors.append)
        msgs = rt.db.msgs
        msgs.on_insert(
            lambda row: (log.append(("insert", row.id)), threads.add(threading.get_ident()))
        )
        msgs.on_update(lambda old, new: log.append(("update", old.body, new.body)))
        msgs.on_delete(lambda row: log.append(("delete", row.id)))
        events: list[Event] = []
        rt.on_transaction(events.append)
        applied: list[Event] = []
        rt.on_subscription_applied(applied.append)

        (qid,) = rt.subscribe(["SELECT * FROM msgs WHERE room = 7"])
        # subscribe() ran update(): the rows are there, their callbacks ran here
        assert [r.to_dict() for r in msgs] == [
            {"id": 1, "room": 7, "body": "hello", "score": "1.5"}
        ]
        assert log == [("insert", 1)] and applied[0].query_ids == (qid,)
        assert rt.queries == {qid: "SELECT * FROM msgs WHERE room = 7"}

        database.sql("INSERT INTO msgs VALUES (3, 7, 'new', NULL), (4, 8, 'elsewhere', 0)")
        time.sleep(0.3)
        assert msgs.count() == 1, "the cache changes only in update()"
        wait_until(lambda: msgs.count() == 2, step=lambda: rt.update(0.1))
        database.sql("UPDATE msgs SET body = 'edited' WHERE id = 3")
        database.sql("UPDATE msgs SET room = 8 WHERE id = 1")  # leaves the query: a delete
        database.sql("UPDATE msgs SET room = 7 WHERE id = 4")  # enters it: an insert
        database.sql("DELETE FROM msgs WHERE id = 3")
        wait_until(lambda: len(events) == 5, step=lambda: rt.update(0.1))
        assert log == [
            ("insert", 1),
            ("insert", 3),
            ("update", "new", "edited"),
            ("delete", 1),
            ("insert", 4),
            ("delete", 3),
        ]
        assert threads == {threading.get_ident()}
        assert [r.id for r in msgs] == [4] and msgs.find(4) == Row(
            {"id": 4, "room": 7, "body": "elsewhere", "score": "0"}
        )
        lsns = [e.lsn_int or 0 for e in events]
        assert lsns == sorted(set(lsns)) and lsns[0] > 0
        assert rt.last_lsn == events[-1].lsn
        assert errors == []


def test_filter_by_uses_the_equality_index(mp: Millpond, database: Database) -> None:
    database.sql(
        "INSERT INTO msgs SELECT i, i % 5, 'b' || (i % 3), i FROM generate_series(1, 200) i"
    )
    with mp.realtime(database.name) as rt:
        rt.subscribe(
            ["SELECT * FROM msgs WHERE room IN (1, 2)", "SELECT * FROM msgs WHERE id < 10"]
        )
        msgs = rt.table("msgs")
        assert msgs.count() == 80 + 5  # rooms 1 and 2, and ids 3, 4, 5, 8, 9
        assert msgs.indexed_columns == {"room"}
        table = rt._cache.tables["msgs"]
        assert {r.id for r in msgs.filter_by(room=1)} == set(range(1, 201, 5))
        assert table.scans == 0
        assert len(msgs.filter_by(room=2, body="b0")) == len(
            [i for i in range(2, 201, 5) if i % 3 == 0]
        )
        assert table.scans == 0
        assert {r.id for r in msgs.filter_by(body="b1", score="5")} == set()  # no index: a scan
        assert table.scans == 1
        rt.unsubscribe("SELECT * FROM msgs WHERE room IN (1, 2)")
        assert msgs.indexed_columns == frozenset() and sorted(r.id for r in msgs) == list(
            range(1, 10)
        )


def test_thread_callbacks(mp: Millpond, database: Database) -> None:
    with mp.realtime(database.name, callbacks="thread") as rt:
        seen: list[tuple[str, int]] = []
        rt.db.msgs.on_row_update(
            lambda op, old, new, event: seen.append((threading.current_thread().name, event.xid))
        )
        rt.subscribe("SELECT * FROM msgs")
        database.sql("INSERT INTO msgs VALUES (1, 1, 'a', 1)")
        wait_until(lambda: rt.db.msgs.count() == 1)  # no update(): the thread applied it
        assert rt.update(0.01) == 0
        wait_until(lambda: len(seen) == 1)
        assert seen[0][0] == "millpond-realtime" and isinstance(seen[0][1], int)

        blocked: list[BaseException] = []

        def subscribe_from_callback(row: Row) -> None:
            try:
                rt.subscribe("SELECT * FROM msgs WHERE room = 2")
            except RuntimeError as exc:
                blocked.append(exc)

        rt.db.msgs.on_insert(subscribe_from_callback)
        database.sql("INSERT INTO msgs VALUES (2, 2, 'b', 2)")
        wait_until(lambda: len(blocked) == 1)
    assert not rt.connected and rt.closed


def test_async_client(database: Database) -> None:
    async def main() -> None:
        async with AsyncMillpond(database.key, database.base_url) as amp:
            rt = await amp.realtime(database.name, reconnect_backoff=FAST)
            async with rt:
                loop_thread = threading.get_ident()
                changes: list[tuple[str, Any, Any, str]] = []
                rt.db.msgs.on_row_update(
                    lambda op, old, new, event: changes.append(
                        (op, old and old.id, new and new.body, event.kind)
                    )
                )
                threads: set[int] = set()
                done = asyncio.Event()
                rt.on_transaction(lambda e: (threads.add(threading.get_ident()), done.set()))
                await rt.subscribe(["SELECT * FROM msgs WHERE body LIKE 'a%'"])
                await asyncio.to_thread(
                    database.sql,
                    "INSERT INTO msgs VALUES (1, 1, 'apple', 1), (2, 1, 'banana', 2)",
                )
                await asyncio.wait_for(done.wait(), 15)
                assert [r.body for r in rt.db.msgs] == ["apple"]
                done.clear()
                await asyncio.to_thread(database.sql, "UPDATE msgs SET body = 'avocado'")
                await asyncio.wait_for(done.wait(), 15)
                assert sorted(r.body for r in rt.db.msgs) == ["avocado", "avocado"]
                assert changes == [
                    ("insert", None, "apple", "transaction"),
                    ("update", 1, "avocado", "transaction"),
                    ("insert", None, "avocado", "transaction"),
                ]
                assert threads == {loop_thread}
                await rt.unsubscribe(["SELECT * FROM msgs WHERE body LIKE 'a%'"])
                assert rt.db.msgs.count() == 0 and changes[-1][3] == "unsubscribe"
            assert rt.closed
            with pytest.raises(RealtimeError):
                await rt.subscribe("SELECT * FROM msgs")

    asyncio.run(main())


def test_direct_writes_in_multi_row_transactions(mp: Millpond, database: Database) -> None:
    with mp.realtime(database.name) as rt:
        rt.subscribe("SELECT * FROM msgs WHERE room BETWEEN 1 AND 5")
        events: list[Event] = []
        rt.on_transaction(events.append)
        with psycopg.connect(database.pg_url) as conn:
            with conn.transaction():
                conn.execute("INSERT INTO msgs SELECT i, i, 'x', i FROM generate_series(1, 8) i")
            with conn.transaction():
                conn.execute("UPDATE msgs SET room = room + 3")  # 1,2 stay; 3-5 leave; 6-8 no
                conn.execute("DELETE FROM msgs WHERE id = 1")
                conn.execute("INSERT INTO msgs VALUES (1, 2, 'back', 0)")  # same key again
        wait_until(lambda: len(events) == 2, step=lambda: rt.update(0.1))
        # one net change per row: 1 was updated, deleted and inserted again
        assert sorted((c.op, (c.new or c.old or {})["id"]) for c in events[1].changes) == [
            ("delete", 3),
            ("delete", 4),
            ("delete", 5),
            ("update", 1),
            ("update", 2),
        ]
        assert {r.id: (r.room, r.body) for r in rt.db.msgs} == {1: (2, "back"), 2: (5, "x")}
        assert events[0].lsn_int is not None and events[1].lsn_int is not None
        assert events[0].lsn_int < events[1].lsn_int


def test_schedule(mp: Millpond, database: Database) -> None:
    with mp.realtime(database.name) as rt:
        ran: list[tuple[str, int]] = []
        rt.schedule(0.05, lambda tag: ran.append((tag, threading.get_ident())), "update")
        cancelled = rt.schedule(0.05, ran.append, "cancelled")
        cancelled.cancel()
        time.sleep(0.2)
        assert ran == []  # due, but waits for update()
        wait_until(lambda: len(ran) == 1, step=lambda: rt.update(0.05))
        assert ran == [("update", threading.get_ident())]
    with mp.realtime(database.name, callbacks="thread") as rt:
        names: list[str] = []
        rt.schedule(0.01, lambda: names.append(threading.current_thread().name))
        wait_until(lambda: names == ["millpond-realtime"])

    async def main() -> None:
        async with (
            AsyncMillpond(database.key, database.base_url) as amp,
            await amp.realtime(database.name) as art,
        ):
            fired = asyncio.Event()
            start = time.monotonic()
            art.schedule(0.1, fired.set)
            await asyncio.wait_for(fired.wait(), 5)
            assert time.monotonic() - start >= 0.09

    asyncio.run(main())


def test_refused_subscriptions_raise(mp: Millpond, database: Database) -> None:
    with mp.realtime(database.name) as rt:
        with pytest.raises(SubscriptionError) as info:
            rt.subscribe(["SELECT * FROM msgs", "SELECT * FROM nope"])
        assert info.value.code == "unknown_table" and "nope" in info.value.message
        assert rt.queries == {}  # nothing changed
        with pytest.raises(SubscriptionError) as info:
            rt.subscribe("SELECT id FROM msgs")
        assert info.value.code == "unsupported_query"
        with pytest.raises(ValueError):
            rt.unsubscribe("SELECT * FROM msgs")
        rt.subscribe("SELECT * FROM msgs")  # still usable
        assert list(rt.queries.values()) == ["SELECT * FROM msgs"]


def test_fatal_close_codes(database: Database, make_user: Any, base_url: str) -> None:
    with Millpond("mp_wrong", base_url) as bad, pytest.raises(RealtimeError) as info:
        bad.realtime(database.name)
    assert info.value.close_code == 4001 and info.value.code == "unauthorized"
    _, stranger = make_user(prefix="rtcstranger")
    with Millpond(stranger, base_url) as other, pytest.raises(RealtimeError) as info:
        other.realtime(database.name)
    assert info.value.close_code == 4004

    async def main() -> None:
        async with AsyncMillpond("mp_wrong", base_url) as amp:
            with pytest.raises(RealtimeError) as info:
                await amp.realtime(database.name)
            assert info.value.close_code == 4001

    asyncio.run(main())
