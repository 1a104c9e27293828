"""The machinery of the realtime consistency tests (``test_consistency.py``, one server;
``test_failover.py``, two replicas, a replica killed and Postgres restarted): random
writers, clients that subscribe, unsubscribe, reopen and lose their network at random, and
the final comparison of every cache with Postgres."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from millpond import AsyncMillpond, Millpond
from millpond.backoff import Backoff
from millpond.client.realtime import AsyncRealtime, Event, Realtime
from millpond.server.testing import Proxy

from .conftest import Database

WRITE_SECONDS = 5.0
IDS = 60
BIG = 100_000
TRUNCATE_XID = "SELECT pg_current_xact_id()::text"
"""Ends a TRUNCATE's transaction: its xid, for the report."""
"""Ids of the rows the occasional 10,000-row transaction inserts (and a later one deletes)."""
SCHEMA = (
    "CREATE TABLE items (id int8 PRIMARY KEY, grp int4 NOT NULL, val int4, tag text);"
    "CREATE TABLE marks (id int4 PRIMARY KEY, n int8 NOT NULL);"
    "INSERT INTO items SELECT i, i % 6, (i * 7) % 100, 'x' FROM generate_series(1, 30) i"
)
MARKS = "SELECT * FROM marks"
EXTRA = [
    "SELECT * FROM items WHERE grp IN (3, 4)",
    "SELECT * FROM items WHERE val < 30 AND tag IS NOT NULL",
    "SELECT * FROM items WHERE id > 40",
]
BACKOFF = Backoff(base=0.02, cap=0.25)


@dataclass
class Spec:
    name: str
    kind: str  # "update", "thread" or "async"
    queries: list[str]


SPECS = [
    Spec("equality", "update", ["SELECT * FROM items WHERE grp = 2"]),
    Spec("range", "thread", ["SELECT * FROM items WHERE val BETWEEN 20 AND 60"]),
    Spec("or", "async", ["SELECT * FROM items WHERE grp = 1 OR tag = 'x'"]),
    Spec("all", "async", ["SELECT * FROM items"]),
]


@dataclass
class Record:
    """What one client saw, across its connections (``epoch``: connection number)."""

    spec: Spec
    rng: random.Random
    epoch: int = 0
    delivered: list[tuple[int, int, int, bool]] = field(default_factory=list)
    """(epoch, lsn, xid, whether it came right after a subscription_applied)"""
    after_applied: bool = False
    violations: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    final: dict[int, dict[str, Any]] | None = None
    final_queries: list[str] = field(default_factory=list)
    failure: BaseException | None = None
    final_marks: dict[int, dict[str, Any]] = field(default_factory=dict)
    mirror: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The rows of ``items`` as the current client's row callbacks alone tell them
    (insert, update, delete): what an application that never reads the cache would hold.
    It must end equal to the cache — no change reaches the cache without a callback."""
    final_mirror: dict[int, dict[str, Any]] | None = None
    marked: int | None = None
    """The marker as the last event's callbacks saw it: with ``callbacks="thread"`` the
    cache is updated before an event's callbacks run, on another thread, so the marker in
    the cache alone does not mean the row callbacks (the mirror) have caught up (a resync
    that brought the marker with thousands of rows was sampled half-way)."""
    history: dict[int, list[str]] = field(default_factory=dict)
    """Every change the cache made to each row of ``items`` (id → lines): the event that
    made it (transaction with its lsn and xid, initial rows, reconciliation, unsubscribe),
    on which connection."""

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def attach(self, rt: Realtime | AsyncRealtime) -> None:
        """Record a new connection's transactions and check each callback's view."""
        self.epoch += 1
        self.count("connections")
        mirror: dict[int, dict[str, Any]] = {}
        self.mirror = mirror  # a new client starts with an empty cache
        self.marked = None

        def reconnected(info: Any) -> None:
            if info.reconnect:
                self.epoch += 1
                self.count("reconnects")

        def marks_seen() -> None:
            # an event's callbacks (these) run after its row callbacks, once the cache
            # already holds it: the marker read here has reached the row callbacks too
            mark = rt.table("marks").find(1)
            self.marked = None if mark is None else mark["n"]

        def applied(event: Event) -> None:
            self.after_applied = True
            marks_seen()

        def transaction(event: Event) -> None:
            assert event.lsn_int is not None and event.xid is not None
            self.delivered.append((self.epoch, event.lsn_int, event.xid, self.after_applied))
            self.after_applied = False
            marks_seen()
            for change in event.changes:  # the cache holds the whole transaction
                row = change.new if change.new is not None else change.old
                assert row is not None
                found = rt.table(change.table).find(row["id"])
                if found != change.new:
                    self.violations.append(f"{event.lsn} {change}: the cache has {found}")

        def changed(op: str, old: Any, new: Any, event: Event) -> None:
            row = new if new is not None else old
            where = f"lsn {event.lsn} xid {event.xid}" if event.kind == "transaction" else ""
            line = f"conn {self.epoch} {event.kind} {where}: {op} {_plain(old)} -> {_plain(new)}"
            self.history.setdefault(row["id"], []).append(line)
            if op == "delete":
                if mirror.pop(row["id"], None) is None:
                    self.violations.append(f"{line}: a delete of a row never inserted")
            elif (op == "insert") == (row["id"] in mirror):
                self.violations.append(f"{line}: the callbacks so far say {mirror.get(row['id'])}")
            else:
                mirror[row["id"]] = dict(new)

        def disconnected(info: Any) -> None:  # why: the summary says each close code
            self.count(f"closed {info.code}")

        rt.on_connect(reconnected)
        rt.on_disconnect(disconnected)
        rt.on_subscription_applied(applied)
        rt.on_transaction(transaction)
        rt.table("items").on_row_update(changed)
        rt.on_error(self.errors.append)

    def divergence(self, want: dict[int, dict[str, Any]], truncates: list[int]) -> str | None:
        """None if the final cache equals ``want``; else the whole picture: which rows
        differ, Postgres' and the cache's version, and every change the cache made to
        them."""
        assert self.final is not None
        missing = sorted(set(want) - set(self.final))
        extra = sorted(set(self.final) - set(want))
        wrong = sorted(i for i in set(want) & set(self.final) if want[i] != self.final[i])
        if not (missing or extra or wrong):
            return None
        lines = [
            f"{self.spec.name} ({self.spec.kind}, queries {self.final_queries}): "
            f"missing {missing}, extra {extra}, different {wrong}"
        ]
        for epoch in sorted({e for e, _, _, _ in self.delivered}):
            lsns = [lsn for e, lsn, _, _ in self.delivered if e == epoch]
            lines.append(
                f"  conn {epoch}: {len(lsns)} transactions, lsn {min(lsns):X}..{max(lsns):X}"
            )
        for xid in truncates:
            got = [f"conn {e} at lsn {lsn:X}" for e, lsn, x, _ in self.delivered if x == xid]
            lines.append(f"  TRUNCATE xid {xid}: {', '.join(got) or 'never delivered'}")
        for i in missing + extra + wrong:
            lines.append(f"  row {i}: Postgres {want.get(i)}, cache {self.final.get(i)}")
            lines.extend(f"    {line}" for line in self.history.get(i, ["(no change seen)"]))
        return "\n".join(lines)


def _mirror_diff(mirror: dict[int, Any] | None, cache: dict[int, dict[str, Any]]) -> str:
    mirror = mirror or {}
    ids = [i for i in sorted(set(mirror) | set(cache)) if mirror.get(i) != cache.get(i)]
    return "; ".join(f"row {i}: callbacks {mirror.get(i)}, cache {cache.get(i)}" for i in ids)


def _plain(row: Any) -> Any:
    return None if row is None else dict(row)


class Writers:
    """Random writes until stopped: ``run_http`` and ``run_psycopg`` in threads."""

    def __init__(self, db: Database, seed: int, urls: list[str] | None = None) -> None:
        self.db = db
        self.seed = seed
        self.urls = urls or [db.base_url]
        """The servers the HTTP writers write through (writer n: ``urls[n % len]``)."""
        self.stop = threading.Event()
        self.committed = 0
        self.failed = 0
        self.specials: dict[str, int] = {}
        """How many truncates, large inserts and large deletes were attempted."""
        self.truncates: list[int] = []
        """The (32-bit) xids of the TRUNCATEs that committed: the report says which
        connections got them."""
        self.lock = threading.Lock()

    def statements(self, rng: random.Random) -> list[str]:
        """One transaction: one to four changes (some changing a row several times), by id
        (fewer deadlocks)."""

        def one() -> tuple[int, list[str]]:
            i = rng.randint(1, IDS)
            grp, val = rng.randint(0, 5), rng.randint(0, 99)
            tag = rng.choice(["'x'", "'y'", "'z'", "NULL"])
            row = f"({i}, {grp}, {val}, {tag})"
            kind = rng.random()
            if kind < 0.2:
                return i, [f"INSERT INTO items VALUES {row} ON CONFLICT DO NOTHING"]
            if kind < 0.3:
                return i, [
                    f"INSERT INTO items VALUES {row} ON CONFLICT (id) DO UPDATE "
                    "SET grp = excluded.grp, val = excluded.val, tag = excluded.tag"
                ]
            if kind < 0.5:  # moves rows between the clients' ranges
                return i, [f"UPDATE items SET grp = {grp}, val = {val} WHERE id = {i}"]
            if kind < 0.6:
                step = rng.randint(-20, 20)
                return i, [f"UPDATE items SET val = val + {step} WHERE id BETWEEN {i} AND {i + 4}"]
            if kind < 0.65:
                return i, [f"UPDATE items SET tag = {tag} WHERE grp = {grp}"]
            if kind < 0.75:
                return i, [f"DELETE FROM items WHERE id = {i}"]
            # one row changed several times in the transaction
            chains = [
                [f"DELETE FROM items WHERE id = {i}", f"INSERT INTO items VALUES {row}"],
                [
                    f"INSERT INTO items VALUES {row} ON CONFLICT DO NOTHING",
                    f"UPDATE items SET val = {(val + 50) % 100}, tag = 'x' WHERE id = {i}",
                ],
                [
                    f"UPDATE items SET grp = {grp} WHERE id = {i}",
                    f"UPDATE items SET val = {val}, grp = {(grp + 1) % 6} WHERE id = {i}",
                ],
                [
                    f"INSERT INTO items VALUES {row} ON CONFLICT DO NOTHING",
                    f"UPDATE items SET grp = 2 WHERE id = {i}",
                    f"DELETE FROM items WHERE id = {i}",
                ],
            ]
            return i, rng.choice(chains)

        special = rng.random()
        if special < 0.003:  # every row at once
            return [*self.special("truncate", "TRUNCATE items"), TRUNCATE_XID]
        if special < 0.005:  # a large transaction
            return self.special(
                "insert 10k",
                "INSERT INTO items SELECT g, g % 6, g % 100, 'big' "
                f"FROM generate_series({BIG}, {BIG + 9999}) g ON CONFLICT DO NOTHING",
            )
        if special < 0.009:
            return self.special("delete 10k", f"DELETE FROM items WHERE id >= {BIG}")
        count = 1 if rng.random() < 0.6 else rng.randint(2, 4)
        sqls = [sql for _, sqls in sorted(one() for _ in range(count)) for sql in sqls]
        if rng.random() < 0.15:  # the same transaction changes the other subscribed table
            mark, n = rng.randint(2, 6), rng.randint(0, 1000)
            sqls.append(
                f"INSERT INTO marks VALUES ({mark}, {n}) ON CONFLICT (id) DO UPDATE SET n = {n}"
            )
        return sqls

    def special(self, name: str, sql: str) -> list[str]:
        with self.lock:
            self.specials[name] = self.specials.get(name, 0) + 1
        return [sql]

    def truncated(self, xid: str) -> None:
        with self.lock:
            self.truncates.append(int(xid) & 0xFFFFFFFF)

    def done(self, ok: bool) -> None:
        with self.lock:
            if ok:
                self.committed += 1
            else:
                self.failed += 1

    def run_http(self, n: int) -> None:
        rng = random.Random(f"{self.seed}-http-{n}")
        headers = {"Authorization": f"Bearer {self.db.key}"}
        url = self.urls[n % len(self.urls)]
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while not self.stop.is_set():
                sql = "; ".join(self.statements(rng))  # one transaction
                try:
                    r = http.post("/v1/query", json={"database": self.db.name, "sql": sql})
                except httpx.TransportError:  # the server is down (killed, restarting)
                    self.done(False)
                    self.stop.wait(0.05)
                    continue
                # 400: a deadlock or a statement timeout; 503: Postgres is restarting
                self.done(r.status_code == 200)
                if r.status_code == 200 and sql.endswith(TRUNCATE_XID):
                    self.truncated(r.json()["data"][0][0])
                if r.status_code >= 500:
                    self.stop.wait(0.05)

    def run_psycopg(self, n: int) -> None:
        rng = random.Random(f"{self.seed}-pg-{n}")
        while not self.stop.is_set():
            try:
                conn = psycopg.connect(self.db.pg_url, options="-c deadlock_timeout=50ms")
            except psycopg.OperationalError:  # Postgres is restarting
                self.stop.wait(0.05)
                continue
            with conn:
                while not self.stop.is_set() and not conn.closed:
                    try:
                        with conn.transaction():
                            for sql in self.statements(rng):
                                cur = conn.execute(sql.encode())
                            xid = cur.fetchone() if sql == TRUNCATE_XID else None
                    except psycopg.OperationalError:  # the connection is gone
                        self.done(False)
                        break
                    except psycopg.errors.Error:  # a deadlock, or a key inserted meanwhile
                        self.done(False)
                    else:
                        self.done(True)
                        if xid is not None:
                            self.truncated(xid[0])


def client_actions(
    record: Record,
    subscribe: Callable[[list[str]], Any],
    unsubscribe: Callable[[str], Any],
    queries: Callable[[], list[str]],
    reopen: Callable[[], Any],
    proxy: Proxy,
) -> Iterator[float]:
    """One random action per step (for sync and async clients alike); yields pauses."""
    rng = record.rng
    while True:
        action = rng.random()
        if action < 0.3:
            sql = rng.choice(EXTRA)
            if sql in queries():
                unsubscribe(sql)
                record.count("unsubscribes")
            else:
                subscribe([sql])
                record.count("subscribes")
        elif action < 0.45:
            sql = rng.choice(record.spec.queries)
            unsubscribe(sql)
            subscribe([sql])
            record.count("resubscribes")
        elif action < 0.53:
            reopen()
            record.count("reopens")
        elif action < 0.7:
            record.stats["cuts"] = record.stats.get("cuts", 0) + bool(proxy.cut())
        yield rng.uniform(0.02, 0.25)


def expected_rows(db: Database, queries: list[str]) -> dict[int, dict[str, Any]]:
    """What ``queries`` return from Postgres, by id (read directly: the HTTP query API
    returns at most ``query_max_rows`` rows, fewer than a large transaction leaves)."""
    rows: dict[int, dict[str, Any]] = {}
    with psycopg.connect(db.pg_url, row_factory=psycopg.rows.dict_row) as conn:
        for sql in queries:
            for row in conn.execute(sql.encode()):
                rows[row["id"]] = row
    return rows


class Phases:
    """The test's timeline, shared with the client threads."""

    def __init__(self, n: int, timeout: float) -> None:
        self.timeout = timeout
        """How long a client's connect, subscribe or unsubscribe may wait for its answer
        (while its server or Postgres is down, it waits for them to come back)."""
        self.stop_actions = threading.Event()
        # a client reaches a barrier after its last call: allow a few calls' time
        self.ready = threading.Barrier(n + 1, timeout=3 * timeout)
        self.marker: int | None = None
        self.marked = threading.Event()
        self.compared = threading.Barrier(n + 1, timeout=3 * timeout)


def final_state(record: Record, rt: Realtime | AsyncRealtime, marker: int) -> bool:
    mark = rt.table("marks").find(1)
    if mark is None or mark["n"] != marker or record.marked != marker:
        return False
    record.final = {row["id"]: row.to_dict() for row in rt.table("items")}
    record.final_mirror = dict(record.mirror)
    record.final_marks = {row["id"]: row.to_dict() for row in rt.table("marks")}
    record.final_queries = [q for q in rt.queries.values() if q != MARKS]
    return True


def run_sync(record: Record, mp: Millpond, db: str, proxy: Proxy, phases: Phases) -> None:
    spec = record.spec
    mode = "update" if spec.kind == "update" else "thread"

    def open_client() -> Realtime:
        rt = mp.realtime(db, callbacks=mode, reconnect_backoff=BACKOFF, timeout=phases.timeout)
        record.attach(rt)
        rt.subscribe([*spec.queries, MARKS])
        return rt

    holder = [open_client()]

    def reopen() -> None:
        holder[0].close()
        holder[0] = open_client()

    try:
        steps = client_actions(
            record,
            lambda sqls: holder[0].subscribe(sqls, timeout=phases.timeout),
            lambda sql: holder[0].unsubscribe(sql, timeout=phases.timeout),
            lambda: list(holder[0].queries.values()),
            reopen,
            proxy,
        )
        while not phases.stop_actions.is_set():
            pause = next(steps)
            if mode == "update":
                holder[0].update(pause)
            else:
                time.sleep(pause)
        rt = holder[0]
        missing = [q for q in spec.queries if q not in rt.queries.values()]
        if missing:
            rt.subscribe(missing, timeout=phases.timeout)
    except BaseException as exc:
        record.failure = exc
    phases.ready.wait()
    phases.marked.wait(60)
    deadline = time.monotonic() + phases.timeout
    assert phases.marker is not None
    while not final_state(record, holder[0], phases.marker) and time.monotonic() < deadline:
        if mode == "update":
            holder[0].update(0.05)
        else:
            time.sleep(0.05)
    phases.compared.wait()
    holder[0].close()


def run_async(record: Record, key: str, url: str, db: str, proxy: Proxy, phases: Phases) -> None:
    spec = record.spec

    async def main() -> None:
        async with AsyncMillpond(key, url) as amp:

            async def open_client() -> AsyncRealtime:
                rt = await amp.realtime(db, reconnect_backoff=BACKOFF, timeout=phases.timeout)
                record.attach(rt)
                await rt.subscribe([*spec.queries, MARKS])
                return rt

            holder = [await open_client()]
            pending: list[Any] = []

            async def reopen() -> None:
                await holder[0].aclose()
                holder[0] = await open_client()

            try:
                steps = client_actions(
                    record,
                    lambda sqls: pending.append(holder[0].subscribe(sqls, timeout=phases.timeout)),
                    lambda sql: pending.append(holder[0].unsubscribe(sql, timeout=phases.timeout)),
                    lambda: list(holder[0].queries.values()),
                    lambda: pending.append(reopen()),
                    proxy,
                )
                while not phases.stop_actions.is_set():
                    pause = next(steps)
                    for call in pending:  # in order, as a sync caller would
                        await call
                    pending.clear()
                    await asyncio.sleep(pause)
                rt = holder[0]
                missing = [q for q in spec.queries if q not in rt.queries.values()]
                if missing:
                    await rt.subscribe(missing, timeout=phases.timeout)
            except BaseException as exc:
                record.failure = exc
                for call in pending:
                    call.close()
            await asyncio.to_thread(phases.ready.wait)
            await asyncio.to_thread(phases.marked.wait, 60)
            assert phases.marker is not None
            deadline = time.monotonic() + phases.timeout
            while not final_state(record, holder[0], phases.marker):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            await asyncio.to_thread(phases.compared.wait)
            await holder[0].aclose()

    asyncio.run(main())


@dataclass
class Outcome:
    """What a run left: every client's record, the writers, and what Postgres holds."""

    seed: int
    records: list[Record]
    writers: Writers
    expected: dict[str, dict[int, dict[str, Any]]]
    elapsed: float


def cut_all_halfway(proxies: list[Proxy]) -> None:
    """The default timeline: write for WRITE_SECONDS, cutting every client's network once
    halfway (at least one network loss each, however slow the run)."""
    time.sleep(WRITE_SECONDS / 2)
    for proxy in proxies:
        proxy.cut()
    time.sleep(WRITE_SECONDS / 2)


def run_scenario(
    db: Database,
    seed: int,
    targets: list[int],
    writer_urls: list[str] | None = None,
    timeline: Callable[[list[Proxy]], None] = cut_all_halfway,
    timeout: float = 60,
) -> Outcome:
    """Run the four clients (client i through a proxy to port ``targets[i]``) and the
    writers while ``timeline`` runs; then stop the writers, commit the marker (through
    ``db.base_url``), let every client catch up with it and read what Postgres holds.

    ``timeout``: how long one connect, subscribe or unsubscribe may wait (the SDK's
    default, 60 s). A subscribe answers once the WAL stream has passed its snapshot; the
    scenario's 10k-row transactions put the stream seconds behind the writers on a busy
    2-core machine, where the whole system shares this one process — measured at load 4-5:
    subscribes waiting 3-9 s for a stream that never went silent (no stall; a backlog),
    and one in about 50 runs over the 20 s this was before."""
    records = [Record(spec, random.Random(f"{seed}-{spec.name}")) for spec in SPECS]
    phases = Phases(len(records), timeout)
    writers = Writers(db, seed, writer_urls)
    started = time.monotonic()
    proxies = [Proxy(port) for port in targets]
    for proxy in proxies:
        proxy.__enter__()
    expected: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        with Millpond(db.key, proxies[0].url) as mp0, Millpond(db.key, proxies[1].url) as mp1:
            threads = [
                threading.Thread(
                    target=run_sync, args=(records[0], mp0, db.name, proxies[0], phases)
                ),
                threading.Thread(
                    target=run_sync, args=(records[1], mp1, db.name, proxies[1], phases)
                ),
                *(
                    threading.Thread(
                        target=run_async,
                        args=(record, db.key, proxy.url, db.name, proxy, phases),
                    )
                    for record, proxy in zip(records[2:], proxies[2:], strict=True)
                ),
                *(threading.Thread(target=writers.run_http, args=(n,)) for n in range(2)),
                *(threading.Thread(target=writers.run_psycopg, args=(n,)) for n in range(2)),
            ]
            for thread in threads:
                thread.start()
            try:
                timeline(proxies)
            finally:
                writers.stop.set()
                phases.stop_actions.set()
            # every write commits before the marker (a transaction still running then
            # would change Postgres after the caches were recorded)
            for thread in threads[4:]:
                thread.join(60)
            assert not any(t.is_alive() for t in threads[4:]), "a writer did not stop"
            phases.ready.wait()  # clients connected with their queries
            marker = random.Random(seed).randrange(1, 1 << 40)
            db.sql(
                f"INSERT INTO marks VALUES (1, {marker}) "
                f"ON CONFLICT (id) DO UPDATE SET n = {marker}"
            )
            phases.marker = marker
            phases.marked.set()
            # the clients wait for the marker, then record their caches; compare after
            deadline = time.monotonic() + timeout + 10
            while any(r.final is None for r in records) and time.monotonic() < deadline:
                time.sleep(0.05)
            for record in records:
                expected[record.spec.name] = expected_rows(
                    db, record.final_queries or record.spec.queries
                )
            expected[MARKS] = expected_rows(db, [MARKS])
            phases.compared.wait()
            for thread in threads[:4]:
                thread.join(30)
    finally:
        for proxy in proxies:
            proxy.__exit__()
    return Outcome(seed, records, writers, expected, time.monotonic() - started)


def check(outcome: Outcome) -> str:
    """Assert that every client ended equal to Postgres and got every connection's
    transactions in strictly increasing LSN order, none twice; the run's summary."""
    records, writers = outcome.records, outcome.writers
    context = f"(seed {outcome.seed})"
    summary = [
        f"{outcome.elapsed:.1f} s, {writers.committed} transactions committed "
        f"({writers.failed} failed); {writers.specials}; TRUNCATE xids {writers.truncates}"
    ]
    order_errors: list[str] = []
    for record in records:
        name = record.spec.name
        by_epoch: dict[int, list[tuple[int, int, bool]]] = {}
        for epoch, lsn, xid, after_applied in record.delivered:
            by_epoch.setdefault(epoch, []).append((lsn, xid, after_applied))
        for epoch, delivered in by_epoch.items():
            xids = [xid for _, xid, _ in delivered]
            if len(set(xids)) != len(xids):
                order_errors.append(f"{name} connection {epoch}: an xid twice")
            for (a, _, _), (b, _, after_applied) in itertools.pairwise(delivered):
                if a >= b:
                    where = " (right after a subscription_applied)" if after_applied else ""
                    order_errors.append(f"{name} connection {epoch}: lsn {a:X} before {b:X}{where}")
        summary.append(
            f"{name} ({record.spec.kind}): {len(record.delivered)} transactions delivered on "
            f"{len(by_epoch)} connections; {dict(sorted(record.stats.items()))}"
        )
    print("\n".join(summary))
    assert order_errors == [], f"{order_errors[:5]} {context}"
    for record in records:
        name = record.spec.name
        assert record.failure is None, f"{name} failed {context}: {record.failure!r}"
        assert record.errors == [], f"{name}: on_error got {record.errors} {context}"
        assert record.violations == [], f"{name}: {record.violations[:5]} {context}"
        assert record.final is not None, f"{name} never saw the marker {context}"
        assert set(record.spec.queries) <= set(record.final_queries)
        assert record.final_mirror == record.final, (
            f"{name}: the row callbacks do not add up to the cache {context}: "
            f"{_mirror_diff(record.final_mirror, record.final)}"
        )
    marks = outcome.expected[MARKS]
    diverging = [
        d
        for r in records
        if (d := r.divergence(outcome.expected[r.spec.name], writers.truncates)) is not None
    ]
    diverging += [
        f"{r.spec.name}: marks {r.final_marks}, Postgres {marks}"
        for r in records
        if r.final_marks != marks
    ]
    assert not diverging, f"the cache differs from Postgres {context}:\n" + "\n".join(diverging)
    return "\n".join(summary)
