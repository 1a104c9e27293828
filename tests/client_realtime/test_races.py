"""Each interleaving that once left a client cache different from Postgres, forced on
purpose through the fault-injection seams (``millpond.faults``) and Postgres itself,
instead of hoped for in the consistency test.

1. A transaction T that the subscribe's snapshot sees, but that reaches the hub after
   the subscription registered (the stream was behind): its changes must reach the
   connection's older queries *before* the initial rows (which already hold T's
   effect). Released after them, a row T moved from an older query into the new one
   arrived as a delete and removed the row the initial rows had just brought ("the
   cache misses a row" of the consistency test).
2. A transaction already streamed (so delivered to the connection before its subscribe,
   or to nobody) but not yet visible when the snapshot is taken: committed in the WAL
   but still in Postgres' running set. Its rows would be in neither the initial rows nor
   the stream: the snapshot must be read again. Postgres is made to hold a committed
   transaction in that state with synchronous replication to a standby that never
   comes (the commit record is flushed and streamed, the transaction waits before it
   becomes visible).
3. A subscribe on a connection whose stream is held lets no transaction through to it
   before its initial rows are known to be positioned (the barrier: with nothing else
   committing, the subscribe still completes once the stream passes the snapshot).
4. A TRUNCATE (no row images, not MVCC-safe) against a subscribe: seen by the snapshot
   but still in the stream, committed after the snapshot while the subscribe waits,
   committed between the snapshot and its read (which then reads the emptied table),
   and while the connection is lost; in both callback modes.
5. A hub's first subscribe, just after its slot was created (a new hub, or the first
   after Postgres restarted): a transaction whose commit record precedes the slot's
   consistent point is never streamed, and it may still be invisible to the snapshot
   (between its commit record and leaving the running set). The snapshot must be read
   again until it sees every transaction the slot's own snapshot saw.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from _waiting import wait_until
from millpond import Millpond, faults
from millpond.client.realtime import Event, Realtime
from millpond.server.realtime.pgoutput import Transaction
from millpond.server.testing import Proxy, ServerThread

from .conftest import FAST, Database, make_database

SCHEMA = "CREATE TABLE msgs (id int8 PRIMARY KEY, room int4, body text); CREATE TABLE pad (n int)"


class StreamGate:
    """Holds a hub's stream at the first transaction that changes a row, until opened
    (``hub.before_dispatch``): the WAL stream running behind, on purpose."""

    def __init__(self, pg_name: str) -> None:
        self.pg_name = pg_name
        self.held = threading.Event()
        self.opened = threading.Event()
        self.held_tx: Transaction | None = None

    async def __call__(self, hub: Any, tx: Transaction) -> None:
        if hub.pg_name != self.pg_name or self.opened.is_set() or not tx.changes:
            return
        self.held_tx = tx
        self.held.set()
        await asyncio.get_running_loop().run_in_executor(None, self.opened.wait, 30)


class Seen:
    """Records the snapshots the hub takes for one database (``hub.after_snapshot``)
    and its re-reads (``hub.snapshot_retry``)."""

    def __init__(self, pg_name: str) -> None:
        self.pg_name = pg_name
        self.snapshots: list[Any] = []
        self.retries: list[str] = []
        self.taken = threading.Event()
        self.retried = threading.Event()

    def snapshot(self, hub: Any, client: Any, snapshot: Any) -> None:
        if hub.pg_name == self.pg_name:
            self.snapshots.append(snapshot)
            self.taken.set()

    def retry(self, hub: Any, client: Any, snapshot: Any, reason: str) -> None:
        if hub.pg_name == self.pg_name:
            self.retries.append(reason)
            self.retried.set()


@pytest.fixture
def db(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> Database:
    username, key = make_user(prefix="rtrace")
    return make_database(
        server.url,
        server.admin_key,
        username,
        key,
        server.settings.data_dir,
        SCHEMA,
    )


@pytest.fixture
def seen(db: Database) -> Iterator[Seen]:
    record = Seen(db.pg_name)
    with (
        faults.installed("hub.after_snapshot", record.snapshot),
        faults.installed("hub.snapshot_retry", record.retry),
    ):
        yield record


def _row(rt: Realtime, key: int) -> dict[str, Any] | None:
    found = rt.table("msgs").find(key)
    return None if found is None else found.to_dict()


def _subscribe_in_thread(rt: Realtime, sql: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["ids"] = rt.subscribe(sql, timeout=30)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


MOVES = [
    pytest.param(
        "SELECT * FROM msgs WHERE room = 1",
        "SELECT * FROM msgs WHERE room = 2",
        "UPDATE msgs SET room = 2 WHERE id = 1",
        id="equality-to-equality",
    ),
    pytest.param(
        "SELECT * FROM msgs WHERE room IN (1, 3)",
        "SELECT * FROM msgs",
        "UPDATE msgs SET room = 5 WHERE id = 1",
        id="extra-query-to-all-rows",
    ),
    pytest.param(
        "SELECT * FROM msgs WHERE room = 1",
        "SELECT * FROM msgs WHERE room > 1",
        "DELETE FROM msgs WHERE id = 1; INSERT INTO msgs VALUES (1, 7, 'again')",
        id="delete-and-insert-into-range",
    ),
]


@pytest.mark.parametrize(("old", "new", "move"), MOVES)
def test_a_row_moved_into_the_new_query_by_a_transaction_the_snapshot_saw(
    db: Database, seen: Seen, old: str, new: str, move: str
) -> None:
    with db.client() as mp, mp.realtime(db.name, callbacks="thread") as rt:
        events: list[Event] = []
        rt.on_transaction(events.append)
        rt.subscribe(old)
        db.sql("INSERT INTO msgs VALUES (1, 1, 'moving')")
        wait_until(lambda: _row(rt, 1) is not None)
        gate = StreamGate(db.pg_name)
        with faults.installed("hub.before_dispatch", gate):
            db.sql(move)  # T: committed, visible, but held before the hub fans it out
            assert gate.held.wait(10)
            db.sql("INSERT INTO pad VALUES (1)")  # more WAL: the snapshot's position is past T
            seen.taken.clear()
            thread, result = _subscribe_in_thread(rt, new)
            assert seen.taken.wait(10)  # the snapshot (it sees T) is read
            gate.opened.set()  # now the stream goes on: T reaches the hub
            thread.join(30)
        assert "error" not in result, result
        moved = db.sql("SELECT * FROM msgs WHERE id = 1")[0]
        db.sql("INSERT INTO msgs VALUES (100, 2, 'marker')")
        wait_until(lambda: _row(rt, 100) is not None)
        assert _row(rt, 1) == moved
        xids = [e.xid for e in events]
        assert len(xids) == len(set(xids)), "a transaction delivered twice"
        lsns = [e.lsn_int for e in events]
        assert lsns == sorted(lsns), "out of commit order"


def test_the_subscribe_waits_for_the_stream_to_pass_its_snapshot(db: Database, seen: Seen) -> None:
    """The stream held at T (which the snapshot sees): the subscribe is not answered
    before T reached the hub, and T then arrives before the initial rows, for the older
    query only."""
    with db.client() as mp, mp.realtime(db.name, callbacks="thread") as rt:
        order: list[str] = []
        rt.on_transaction(lambda e: order.append(f"tx {e.xid}"))
        rt.on_subscription_applied(lambda e: order.append("applied"))
        rt.subscribe("SELECT * FROM msgs WHERE room = 1")
        db.sql("INSERT INTO msgs VALUES (1, 1, 'a')")
        wait_until(lambda: _row(rt, 1) is not None)
        order.clear()
        gate = StreamGate(db.pg_name)
        with faults.installed("hub.before_dispatch", gate):
            db.sql("UPDATE msgs SET body = 'b' WHERE id = 1")
            assert gate.held.wait(10)
            seen.taken.clear()
            thread, result = _subscribe_in_thread(rt, "SELECT * FROM msgs WHERE room = 2")
            assert seen.taken.wait(10)
            thread.join(0.5)  # a bounded look: it must still be waiting for the stream
            assert thread.is_alive() and order == []
            gate.opened.set()
            thread.join(30)
        assert "error" not in result, result
        assert gate.held_tx is not None
        assert order == [f"tx {gate.held_tx.xid}", "applied"]
        assert _row(rt, 1) == {"id": 1, "room": 1, "body": "b"}


@pytest.fixture
def synchronous_standby(db: Database) -> Iterator[None]:
    """Commits of sessions that ask for ``synchronous_commit = on`` wait for a standby
    that never connects; every other session commits locally as before."""

    def configure(names: str | None) -> None:
        with psycopg.connect(db.pg_url, autocommit=True) as conn:
            if names is None:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                conn.execute("ALTER SYSTEM RESET synchronous_commit")
            else:
                conn.execute("ALTER SYSTEM SET synchronous_commit = 'local'")
                conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            conn.execute("SELECT pg_reload_conf()")

    configure("millpond_no_such_standby")
    try:
        yield
    finally:
        configure(None)


def test_a_streamed_transaction_not_yet_visible_makes_the_snapshot_read_again(
    db: Database, seen: Seen, synchronous_standby: None
) -> None:
    streamed = threading.Event()
    writer: dict[str, Any] = {}

    def observe(hub: Any, tx: Transaction) -> None:
        if hub.pg_name == db.pg_name and tx.changes:
            writer["xid"] = tx.xid
            streamed.set()

    def write() -> None:
        with psycopg.connect(db.pg_url, autocommit=True) as conn:
            writer["pid"] = conn.info.backend_pid
            conn.execute("SET synchronous_commit = on")
            # committed and streamed at once; visible only once the wait is cancelled
            conn.execute("INSERT INTO msgs VALUES (7, 1, 'in between')")

    with db.client() as mp, mp.realtime(db.name, callbacks="thread") as rt:
        rt.subscribe("SELECT * FROM msgs WHERE room = 99")  # the hub streams from now on
        with faults.installed("hub.before_dispatch", observe):
            thread = threading.Thread(target=write)
            thread.start()
            assert streamed.wait(20)
            assert db.sql("SELECT count(*) AS n FROM msgs")[0]["n"] == 0  # not visible
            sub, result = _subscribe_in_thread(rt, "SELECT * FROM msgs WHERE room = 1")
            assert seen.retried.wait(20), seen.snapshots  # the snapshot missed it: read again
            with psycopg.connect(db.pg_url, autocommit=True) as conn:
                conn.execute("SELECT pg_cancel_backend(%s)", (writer["pid"],))
            thread.join(20)
            sub.join(30)
        assert "error" not in result, result
        assert any(str(writer["xid"]) in reason for reason in seen.retries), seen.retries
        assert _row(rt, 7) == {"id": 7, "room": 1, "body": "in between"}


class SnapshotGate:
    """Holds the subscribes of one database before their snapshot (``hub.before_snapshot``)
    once armed, until opened."""

    def __init__(self, pg_name: str) -> None:
        self.pg_name = pg_name
        self.armed = threading.Event()
        self.held = threading.Event()
        self.opened = threading.Event()

    async def __call__(self, hub: Any, client: Any) -> None:
        if hub.pg_name != self.pg_name or not self.armed.is_set() or self.opened.is_set():
            return
        self.held.set()
        await asyncio.get_running_loop().run_in_executor(None, self.opened.wait, 30)


def test_a_lost_connections_queued_transaction_then_the_reconciliation(
    server: ServerThread, db: Database
) -> None:
    """A transaction received on a connection that is then lost, still queued when the
    client reconnects (``update()`` not called): the cache applies it, then reconciles
    with the rows as of the new connection's snapshot (which saw what changed while it
    was away): in that order, each change once."""
    port = int(server.url.rsplit(":", 1)[1])
    inputs: list[str] = []
    changes: list[tuple[str, str, int]] = []
    gate = SnapshotGate(db.pg_name)
    with (
        Proxy(port) as proxy,
        Millpond(db.key, proxy.url) as mp,
        mp.realtime(db.name, reconnect_backoff=FAST) as rt,
        faults.installed("hub.before_snapshot", gate),
    ):

        def observe(cache: Any, item: Any) -> None:
            if cache is rt._cache:
                inputs.append(type(item).__name__)

        rt.table("msgs").on_row_update(
            lambda op, old, new, event: changes.append((event.kind, op, (new or old)["id"]))
        )
        with faults.installed("client.before_input", observe):
            rt.subscribe("SELECT * FROM msgs")
            inputs.clear()
            db.sql("INSERT INTO msgs VALUES (1, 1, 'one')")
            wait_until(lambda: rt._inbox.qsize() > 0)  # received, queued, not applied
            gate.armed.set()
            assert proxy.cut()
            assert gate.held.wait(20)  # reconnected: the resubscribe waits before its snapshot
            db.sql("DELETE FROM msgs WHERE id = 1; INSERT INTO msgs VALUES (2, 1, 'two')")
            gate.opened.set()
            wait_until(lambda: rt.table("msgs").find(2) is not None, step=lambda: rt.update(0.05))
    assert inputs == [
        "TransactionInput",
        "Disconnected",
        "Connected",
        "ResyncBegin",
        "Applied",
    ], inputs
    # the reconciliation: rows sent again first, then the rows gone meanwhile
    assert changes == [
        ("transaction", "insert", 1),
        ("resubscribe", "insert", 2),
        ("resubscribe", "delete", 1),
    ], changes


# -- TRUNCATE against a subscribe ---------------------------------------------------------
# TRUNCATE is not MVCC-safe and has no row images: a subscribe's snapshot may see it or
# not, and a snapshot taken before it may still read the emptied table. Each way, the
# older queries' rows must go and the new query's rows be the ones Postgres has.

OLDER = "SELECT * FROM msgs WHERE room = 1"
NEWER = "SELECT * FROM msgs WHERE room = 2"
MODES = ["thread", "update"]


def _cache(rt: Realtime) -> dict[int, dict[str, Any]]:
    return {row["id"]: row.to_dict() for row in rt.table("msgs")}


def _settled(db: Database, rt: Realtime, mode: str) -> dict[int, dict[str, Any]]:
    """The cache once a marker written last reached it, and what Postgres' rows of
    both queries are then."""
    step = (lambda: rt.update(0.05)) if mode == "update" else None
    db.sql("INSERT INTO msgs VALUES (1000, 1, 'marker')")
    wait_until(lambda: _row(rt, 1000) is not None, step=step)
    want = {r["id"]: r for sql in (OLDER, NEWER) for r in db.sql(sql)}
    assert _cache(rt) == want
    return want


def _filled(db: Database, rt: Realtime, mode: str) -> None:
    step = (lambda: rt.update(0.05)) if mode == "update" else None
    rt.subscribe(OLDER)
    db.sql("INSERT INTO msgs VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 1, 'c')")
    wait_until(lambda: set(_cache(rt)) == {1, 3}, step=step)


@pytest.mark.parametrize("mode", MODES)
def test_a_truncate_the_snapshot_saw_empties_the_older_query(
    db: Database, seen: Seen, mode: str
) -> None:
    """The stream behind: TRUNCATE (and an insert after it) committed before the
    snapshot, reaching the hub while the subscribe waits."""
    with db.client() as mp, mp.realtime(db.name, callbacks=mode) as rt:
        _filled(db, rt, mode)
        gate = StreamGate(db.pg_name)
        with faults.installed("hub.before_dispatch", gate):
            db.sql("TRUNCATE msgs")
            assert gate.held.wait(10)
            db.sql("INSERT INTO msgs VALUES (4, 2, 'after'), (5, 1, 'after')")
            seen.taken.clear()
            thread, result = _subscribe_in_thread(rt, NEWER)
            assert seen.taken.wait(10)
            gate.opened.set()
            thread.join(30)
        assert "error" not in result, result
        assert set(_settled(db, rt, mode)) == {4, 5, 1000}


class TruncateAfterSnapshot:
    """At the first snapshot of one database (``hub.after_snapshot``): TRUNCATE and
    insert, which the snapshot does not see, committed and dispatched (held for the
    subscribing connection) before the hub goes on."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.held = False

    def _write(self) -> int:
        with psycopg.connect(self.db.pg_url, autocommit=True) as conn, conn.transaction():
            conn.execute("TRUNCATE msgs")
            conn.execute("INSERT INTO msgs VALUES (6, 2, 'new'), (7, 1, 'new')")
            row = conn.execute("SELECT pg_current_xact_id()::text::int8").fetchone()
        assert row is not None
        return int(row[0]) & 0xFFFFFFFF

    async def __call__(self, hub: Any, client: Any, snapshot: Any) -> None:
        if hub.pg_name != self.db.pg_name or self.held:
            return
        xid = await asyncio.get_running_loop().run_in_executor(None, self._write)
        self.held = await hub.wait_dispatched(xid, 10) and client.syncing is not None


@pytest.mark.parametrize("mode", MODES)
def test_a_truncate_after_the_snapshot_empties_the_new_query_too(db: Database, mode: str) -> None:
    with db.client() as mp, mp.realtime(db.name, callbacks=mode) as rt:
        _filled(db, rt, mode)
        hook = TruncateAfterSnapshot(db)
        with faults.installed("hub.after_snapshot", hook):
            rt.subscribe(NEWER, timeout=30)
        assert hook.held
        assert set(_settled(db, rt, mode)) == {6, 7, 1000}


def _waiting_on_lock(db: Database) -> bool:
    with psycopg.connect(db.pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'msgs'::regclass"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("mode", MODES)
def test_a_truncate_between_the_snapshot_and_the_read(db: Database, mode: str) -> None:
    """The snapshot is taken, then the read waits for a TRUNCATE's lock: it reads the
    emptied table (TRUNCATE is not MVCC-safe), not the rows its snapshot had; the
    TRUNCATE, which the snapshot does not see, follows the initial rows."""
    with db.client() as mp, mp.realtime(db.name, callbacks=mode) as rt:
        _filled(db, rt, mode)
        with psycopg.connect(db.pg_url) as writer:
            writer.execute("LOCK TABLE msgs IN ACCESS EXCLUSIVE MODE")
            thread, result = _subscribe_in_thread(rt, NEWER)
            wait_until(lambda: _waiting_on_lock(db))
            writer.execute("TRUNCATE msgs")
            writer.execute("INSERT INTO msgs VALUES (8, 2, 'new'), (9, 1, 'new')")
            writer.commit()
            thread.join(30)
        assert "error" not in result, result
        assert set(_settled(db, rt, mode)) == {8, 9, 1000}


@pytest.mark.parametrize("mode", MODES)
def test_a_truncate_while_the_connection_was_lost(
    server: ServerThread, db: Database, mode: str
) -> None:
    """TRUNCATE and inserts while the client reconnects (its resubscribe held before the
    snapshot): the reconciliation drops every row of before, keeps the new ones."""
    port = int(server.url.rsplit(":", 1)[1])
    gate = SnapshotGate(db.pg_name)
    with (
        Proxy(port) as proxy,
        Millpond(db.key, proxy.url) as mp,
        mp.realtime(db.name, callbacks=mode, reconnect_backoff=FAST) as rt,
        faults.installed("hub.before_snapshot", gate),
    ):
        _filled(db, rt, mode)
        rt.subscribe(NEWER)
        assert set(_cache(rt)) == {1, 2, 3}
        gate.armed.set()
        assert proxy.cut()
        assert gate.held.wait(20)
        db.sql("TRUNCATE msgs; INSERT INTO msgs VALUES (10, 1, 'new'), (11, 3, 'new')")
        gate.opened.set()
        assert set(_settled(db, rt, mode)) == {10, 1000}


def _walsender_waits_for(db: Database, xid: int) -> bool:
    """The slot being created waits for transaction ``xid`` to end (its initial phases)."""
    with psycopg.connect(db.pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE a.backend_type = 'walsender' AND NOT l.granted"
            " AND l.locktype = 'transactionid' AND l.transactionid = %s::text::xid",
            (xid,),
        ).fetchone()
    return bool(row and row[0])


def _open_xact(db: Database) -> tuple[psycopg.Connection[Any], int]:
    conn = psycopg.connect(db.pg_url)
    conn.execute("INSERT INTO pad VALUES (1)")
    row = conn.execute("SELECT pg_current_xact_id()::text::int8").fetchone()
    assert row is not None
    return conn, int(row[0])


def test_a_commit_before_the_slots_consistent_point_not_yet_visible(
    db: Database, seen: Seen, synchronous_standby: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot of a new hub becomes consistent with transaction T committed in the WAL
    before its consistent point (so never streamed) but still running to snapshots.
    Postgres holds T there with a synchronous standby that never comes, and the
    snapshot's own check of the commit log is switched off: that is the instant between
    T's commit record and its commit-log entry, which that check cannot see. The
    subscribe must not use a snapshot without T: it reads again until T is visible."""
    from millpond.server.realtime import service

    blind = service._SNAPSHOT_SQL.split("EXISTS")[0] + "false"
    monkeypatch.setattr(service, "_SNAPSHOT_SQL", blind)
    writer: dict[str, Any] = {}

    def commit_held() -> None:
        with psycopg.connect(db.pg_url) as conn:
            writer["pid"] = conn.info.backend_pid
            conn.execute("SET synchronous_commit = on")
            conn.execute("INSERT INTO msgs VALUES (7, 1, 'before the slot')")
            row = conn.execute("SELECT pg_current_xact_id()::text::int8").fetchone()
            writer["xid"] = row and row[0]
            conn.commit()

    def held_at_commit() -> bool:
        with psycopg.connect(db.pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event = 'SyncRep'",
                (writer.get("pid", 0),),
            ).fetchone()
        return bool(row and row[0])

    with db.client() as mp, mp.realtime(db.name, callbacks="thread") as rt:
        first, first_xid = _open_xact(db)  # running when the slot is created
        second, second_xid = None, 0
        try:
            sub, result = _subscribe_in_thread(rt, "SELECT * FROM msgs WHERE room = 1")
            wait_until(lambda: _walsender_waits_for(db, first_xid), timeout=30)
            second, second_xid = _open_xact(db)  # running at the slot's next phase
            first.commit()
            wait_until(lambda: _walsender_waits_for(db, second_xid), timeout=30)
            held = threading.Thread(target=commit_held)  # T: begins after that phase began
            held.start()
            wait_until(held_at_commit, timeout=30)
            second.commit()  # the slot is consistent at once, with T committed before it
            assert seen.retried.wait(30), seen.snapshots  # a snapshot without T: read again
            with psycopg.connect(db.pg_url, autocommit=True) as conn:
                conn.execute("SELECT pg_cancel_backend(%s)", (writer["pid"],))
            held.join(20)
            sub.join(30)
        finally:
            first.close()
            if second is not None:
                second.close()
        assert "error" not in result, result
        missed = f"transaction {writer['xid']} committed before the stream started"
        assert any(missed in reason for reason in seen.retries), seen.retries
        wait_until(lambda: _row(rt, 7) is not None, timeout=10)
        assert _row(rt, 7) == {"id": 7, "room": 1, "body": "before the slot"}
