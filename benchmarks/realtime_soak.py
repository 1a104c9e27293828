"""Realtime soak: 1,000 subscribed SDK clients on one server, 200 row changes per second
for 10 minutes, with a network cut every second — delivery latency, server memory, and
whether every client cache still equals Postgres at the end.

Runs ``millpond up`` in a subprocess. The clients are ``AsyncRealtime`` instances (one
WebSocket each) on one event loop in this process, spread over 20 TCP proxies
(``millpond.server.testing.Proxy``) hosted by a helper process (each proxy runs a
thread of its own: in this process they would keep the clients' loop waiting for the
GIL). Client ``c`` subscribes to ``room = c % 100`` (so a change reaches ~10 clients),
one in ten also to an ``OR`` query, one in ten to a ``BETWEEN`` range, and every
client to the one-row ``marks`` table. Two writer processes write straight to Postgres
with psycopg (the superuser URL, autocommit), paced by a schedule (slot ``i`` at
``start + i / rate``: no drift accumulates): inserts, updates (most moving the row to
another room) and deletes, one row per transaction. Each write returns its xid; the
writer notes when its commit returned, and a delivery's latency is the client's row
callback (cache already updated) minus that time. Changes a client gets from
reconciling after a reconnect (``event.kind == "resubscribe"``) are counted apart, not
as deliveries. About every second one random proxy is cut (its ~50 clients reconnect,
resubscribe and reconcile by themselves).

At the end the writers stop, one marker row is written, every client must see it (a
bounded wait), and every client's cache is compared with what its queries return from
Postgres: the number of divergent caches must be 0.

    python benchmarks/realtime_soak.py [--minutes 10] [--clients 1000] [--rate 200]

Last line: the ratio of the server's RSS at the end to its RSS once every client had
subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import resource
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import psycopg
from _harness import Server, create_database, rss_kb, running_server
from psycopg.rows import dict_row

from millpond import AsyncMillpond
from millpond.backoff import Backoff
from millpond.client.realtime import AsyncRealtime, ConnectInfo, DisconnectInfo, Event
from millpond.server.testing import Proxy

DB = "admin/soak"
ROOMS = 100
VALS = 1000
INITIAL_ROWS = 2000
PROXIES = 20
WRITERS = 2
CONNECTING = 50
"""Clients connecting and subscribing at once at the start."""
HISTORY = 200
"""Row changes each client remembers, to show them for a divergent row."""
MARKER_WAIT = 120.0
BACKOFF = Backoff(base=0.2, cap=4.0)
SETUP = (
    "CREATE TABLE items (id int8 PRIMARY KEY, room int4 NOT NULL, val int4 NOT NULL,"
    " ver int8 NOT NULL, payload text);"
    "CREATE TABLE marks (id int4 PRIMARY KEY, n int8 NOT NULL);"
    "INSERT INTO marks VALUES (1, 0);"
    f"INSERT INTO items SELECT i, i % {ROOMS}, (i * 7919) % {VALS}, 0, md5(i::text)"
    f" FROM generate_series(1, {INITIAL_ROWS}) i"
)
MARKS = "SELECT * FROM marks"
XID = "RETURNING (txid_current() & 4294967295)"
"""The 32-bit xid the server's ``transaction`` message (``event.xid``) carries."""


class Hist:
    """Latencies in ms, in buckets 1% wide: quantiles without keeping every sample."""

    STEP = math.log(1.01)

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.n = 0
        self.negative = 0
        self.max = 0.0

    def add(self, ms: float) -> None:
        self.negative += ms < 0
        self.max = max(self.max, ms)
        self.buckets[math.floor(math.log(max(ms, 0.001)) / self.STEP)] += 1
        self.n += 1

    def merge(self, other: Hist) -> None:
        self.buckets.update(other.buckets)
        self.n += other.n
        self.negative += other.negative
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen > q * self.n:
                return math.exp((bucket + 0.5) * self.STEP)
        return math.nan

    def text(self) -> str:
        return f"p50 {self.quantile(0.5):.2f} ms p99 {self.quantile(0.99):.2f} ms"


def merged(hists: Iterable[Hist]) -> Hist:
    total = Hist()
    for hist in hists:
        total.merge(hist)
    return total


class Stats:
    """Everything measured; written by the drain thread (``committed``, ``written``)
    and by the callbacks on the loop."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.committed: dict[int, float] = {}
        """xid → perf_counter() when the writer's commit returned."""
        self.written = [0] * WRITERS
        self.late = [0] * WRITERS
        """Slots a writer started more than 10 ms after their scheduled time."""
        self.proxy_cpu = 0.0
        self.cpu = (0.0, 0.0, 0.0)
        """While writing: this process' CPU seconds, its main thread's (the event loop
        with the clients), and the wall-clock seconds."""
        self.minutes: dict[int, Hist] = {}
        self.lag: dict[int, Hist] = {}
        self.pending: list[tuple[int, float]] = []
        self.deliveries = 0
        self.reconnects = 0
        self.reconciliations = 0
        self.resubscribe: dict[int, Hist] = {}
        """From a reconnect's hello to its queries applied again, by minute."""
        self.reconciled_rows = 0
        self.out_of_order = 0
        self.cuts = 0
        self.cut_connections = 0
        self.disconnects: Counter[int] = Counter()
        self.reasons: Counter[tuple[int, str]] = Counter()
        """Close codes other than 1006 (a lost connection), with their reasons."""
        self.errors: list[str] = []

    def minute(self, now: float | None = None) -> int:
        now = time.perf_counter() if now is None else now
        return max(0, int((now - self.start) // 60))

    def delivered(self, xid: int | None, now: float) -> None:
        self.deliveries += 1
        sent = self.committed.get(xid) if xid is not None else None
        if sent is None:  # the callback beat the writer thread: match it later
            self.pending.append((xid or 0, now))
            return
        self.minutes.setdefault(self.minute(now), Hist()).add((now - sent) * 1000)

    def match_pending(self) -> int:
        """Give the early deliveries their latency; how many still have no commit."""
        pending, self.pending = self.pending, []
        for xid, now in pending:
            sent = self.committed.get(xid)
            if sent is None:
                self.pending.append((xid, now))
            else:
                self.minutes.setdefault(self.minute(now), Hist()).add((now - sent) * 1000)
        return len(self.pending)


class Client:
    """One ``AsyncRealtime`` and what its callbacks saw."""

    def __init__(self, n: int, queries: list[str], stats: Stats) -> None:
        self.n = n
        self.queries = queries
        self.stats = stats
        self.rt: AsyncRealtime | None = None
        self.history: deque[tuple[Any, ...]] = deque(maxlen=HISTORY)
        self.connection: str | None = None
        self.last_lsn = -1
        self.last_close: tuple[int, str] | None = None
        self.reconnected: float | None = None
        """When the connection came up again, until its queries are applied again."""

    def attach(self, rt: AsyncRealtime) -> None:
        self.rt = rt
        rt.table("items").on_row_update(self.changed)
        rt.on_transaction(self.transaction)
        rt.on_subscription_applied(self.applied)
        rt.on_connect(self.connected)
        rt.on_disconnect(self.disconnected)
        rt.on_error(lambda error: self.stats.errors.append(f"client {self.n}: {error!r}"))

    def changed(self, op: str, old: Any, new: Any, event: Event) -> None:
        now = time.perf_counter()
        row = new if new is not None else old
        connection = self.rt.connection_id if self.rt is not None else None
        self.history.append((event.kind, op, row["id"], event.xid, event.lsn, connection, new))
        if event.kind == "transaction":
            self.stats.delivered(event.xid, now)
        elif event.kind == "resubscribe":
            self.stats.reconciled_rows += 1

    def transaction(self, event: Event) -> None:
        lsn = event.lsn_int or 0
        connection = self.rt.connection_id if self.rt is not None else None
        if connection == self.connection and lsn <= self.last_lsn:
            self.stats.out_of_order += 1
        self.connection, self.last_lsn = connection, lsn

    def applied(self, event: Event) -> None:
        if event.kind != "resubscribe":
            return
        self.stats.reconciliations += 1
        if self.reconnected is not None:
            seconds = time.perf_counter() - self.reconnected
            self.stats.resubscribe.setdefault(self.stats.minute(), Hist()).add(seconds * 1000)
            self.reconnected = None

    def connected(self, info: ConnectInfo) -> None:
        self.stats.reconnects += info.reconnect
        self.reconnected = time.perf_counter()

    def disconnected(self, info: DisconnectInfo) -> None:
        self.stats.disconnects[info.code] += 1
        if info.code != 1006:
            self.stats.reasons[info.code, info.reason[:100]] += 1
        self.last_close = (info.code, info.reason)

    def live(self) -> bool:
        """Connected, with its queries applied on this connection."""
        return self.rt is not None and self.rt.connected and self.reconnected is None

    def marker(self) -> int | None:
        mark = self.rt.table("marks").find(1) if self.rt is not None else None
        return None if mark is None else int(mark["n"])

    def cache(self) -> dict[int, dict[str, Any]]:
        assert self.rt is not None
        return {row["id"]: row.to_dict() for row in self.rt.table("items")}


def client_queries(n: int, rng: random.Random) -> list[str]:
    queries = [f"SELECT * FROM items WHERE room = {n % ROOMS}"]
    if n % 10 == 3:
        room, val = rng.randrange(ROOMS), rng.randrange(VALS)
        queries.append(f"SELECT * FROM items WHERE room = {room} OR val = {val}")
    elif n % 10 == 7:
        low = rng.randrange(VALS - 10)
        queries.append(f"SELECT * FROM items WHERE val BETWEEN {low} AND {low + 9}")
    return [*queries, MARKS]


# -- the writers (processes) -----------------------------------------------------------------


class Writer:
    """Writer ``j`` of ``WRITERS``, in a process of its own (so that the time it notes
    when a commit returns is not late by this process' GIL): owns the ids ``≡ j (mod
    WRITERS)`` and the schedule slots ``≡ j``, each one row change in its own
    transaction; puts ``(j, xid, commit returned, late)`` for each on ``queue``, then
    ``(j, None, 0, False)``. ``perf_counter`` is the system's monotonic clock, the same
    in every process."""

    def __init__(self, j: int, url: str, queue: Any) -> None:
        self.j = j
        self.url = url
        self.queue = queue
        self.rng = random.Random(j)
        self.ids = [i for i in range(1, INITIAL_ROWS + 1) if i % WRITERS == j]
        self.next_id = INITIAL_ROWS + 1 + (j - INITIAL_ROWS - 1) % WRITERS

    def run(self, start: float, slots: int, rate: float) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for slot in range(self.j, slots, WRITERS):
                    delay = start + slot / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    xid = self.change(conn, slot)
                    self.queue.put((self.j, xid, time.perf_counter(), delay < -0.01))
        finally:
            self.queue.put((self.j, None, 0.0, False))

    def change(self, conn: psycopg.Connection[Any], slot: int) -> int:
        rng, r = self.rng, self.rng.random()
        room, val = rng.randrange(ROOMS), rng.randrange(VALS)
        if r < 0.25 or not self.ids:
            row_id, self.next_id = self.next_id, self.next_id + WRITERS
            self.ids.append(row_id)
            query = f"INSERT INTO items VALUES (%s, %s, %s, %s, md5(%s::text)) {XID}"
            return self.execute(conn, query, (row_id, room, val, slot, str(slot)))
        k = rng.randrange(len(self.ids))
        row_id = self.ids[k]
        if r < 0.6:  # move to another room (a delete for some clients, an insert for others)
            query = f"UPDATE items SET room = %s, val = %s, ver = %s WHERE id = %s {XID}"
            return self.execute(conn, query, (room, val, slot, row_id))
        if r < 0.75:  # stay in the room
            query = f"UPDATE items SET val = %s, ver = %s WHERE id = %s {XID}"
            return self.execute(conn, query, (val, slot, row_id))
        self.ids[k] = self.ids[-1]
        self.ids.pop()
        return self.execute(conn, f"DELETE FROM items WHERE id = %s {XID}", (row_id,))

    @staticmethod
    def execute(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> int:
        row = conn.execute(query.encode(), params).fetchone()
        assert row is not None, query
        return int(row[0])


# -- process figures ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    kb = rss_kb(pid)
    return math.nan if kb is None else kb / 1024


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` (None: this process, all its threads)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Progress:
    """The once-a-minute line."""

    def __init__(self, stats: Stats, server: Server, proxies: int, clients: list[Client]) -> None:
        self.stats = stats
        self.clients = clients
        self.pids = (None, proxies, server.pid)
        self.server = server
        self.at = time.perf_counter()
        self.cpu = tuple(cpu_seconds(pid) for pid in self.pids)

    def line(self) -> str:
        stats, now = self.stats, time.perf_counter()
        cpu = tuple(cpu_seconds(pid) for pid in self.pids)
        span = max(now - self.at, 1e-9)
        clients, proxies, server = ((b - a) / span for a, b in zip(self.cpu, cpu, strict=True))
        self.at, self.cpu = now, cpu
        stats.match_pending()
        minute = stats.minute(now - 1)
        elapsed = now - stats.start
        lag = stats.lag.get(minute, Hist())
        resubscribe = stats.resubscribe.get(minute, Hist())
        live = sum(c.live() for c in self.clients)
        return (
            f"[{int(elapsed // 60):2d}:{int(elapsed % 60):02d}] written {sum(stats.written):,}"
            f" (late {sum(stats.late):,})  deliveries {stats.deliveries:,}"
            f"  so far {merged(stats.minutes.values()).text()}"
            f"  server RSS {rss_mb(self.server.pid):.0f} MB"
            f"  reconnects {stats.reconnects:,} (cuts {stats.cuts})  live clients {live:,}"
            f" (resubscribe p50 {resubscribe.quantile(0.5):.0f} ms)"
            f"  | CPU clients {clients:.0%} proxies {proxies:.0%} server {server:.0%}"
            f"  loop lag p99 {lag.quantile(0.99):.1f} ms  load {os.getloadavg()[0]:.2f}"
        )


# -- the run -------------------------------------------------------------------------------------


async def connect_all(clients: list[Client], amps: list[AsyncMillpond]) -> None:
    gate = asyncio.Semaphore(CONNECTING)

    async def one(client: Client) -> None:
        async with gate:
            amp = amps[client.n % len(amps)]
            rt = await amp.realtime(DB, reconnect_backoff=BACKOFF, timeout=60)
            client.attach(rt)
            await rt.subscribe(client.queries, timeout=300)

    await asyncio.gather(*(one(client) for client in clients))


def proxy_process(target: int, n: int, conn: Any) -> None:
    """(The helper process.) ``n`` proxies to ``target``: sends their ports, then cuts
    proxy ``i`` for each ``i`` received (answering how many connections it cut), until
    None."""
    proxies = [Proxy(target).__enter__() for _ in range(n)]
    try:
        conn.send([proxy.port for proxy in proxies])
        while (i := conn.recv()) is not None:
            conn.send(proxies[i].cut())
    finally:
        for proxy in proxies:
            proxy.__exit__()


class Proxies:
    """The proxies, in a helper process."""

    def __init__(self, target: int, n: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.conn, child = spawn.Pipe()
        self.process = spawn.Process(target=proxy_process, args=(target, n, child), daemon=True)
        self.process.start()
        assert self.process.pid is not None
        self.pid = self.process.pid
        if not self.conn.poll(60):
            raise SystemExit("the proxies did not start")
        self.urls = [f"http://127.0.0.1:{port}" for port in self.conn.recv()]

    def cut(self, i: int) -> int:
        """(Blocking.) Cut proxy ``i``; how many connections it carried."""
        self.conn.send(i)
        return int(self.conn.recv())

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()


async def cut_proxies(proxies: Proxies, stats: Stats, stop: asyncio.Event) -> None:
    rng = random.Random()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(0.5, 1.5))
        except TimeoutError:
            i = rng.randrange(len(proxies.urls))
            stats.cut_connections += await asyncio.to_thread(proxies.cut, i)
            stats.cuts += 1


async def watch_loop(stats: Stats, stop: asyncio.Event) -> None:
    """How late the event loop wakes up (the clients' own delay)."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.05)
        now = time.perf_counter()
        stats.lag.setdefault(stats.minute(now), Hist()).add((now - before - 0.05) * 1000)


def write_process(j: int, url: str, queue: Any, start: float, slots: int, rate: float) -> None:
    Writer(j, url, queue).run(start, slots, rate)


def drain(queue: Any, stats: Stats) -> None:
    """(A thread.) The writers' commits into ``stats``, until both are done."""
    running = WRITERS
    while running:
        j, xid, committed, late = queue.get()
        if xid is None:
            running -= 1
            continue
        stats.committed[xid] = committed
        stats.written[j] += 1
        stats.late[j] += late


async def write_for(
    progress: Progress, url: str, stats: Stats, minutes: float, rate: float
) -> None:
    """Write on schedule for ``minutes`` (cutting proxies meanwhile, elsewhere); a
    progress line every minute and at the end."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    slots = int(minutes * 60 * rate)
    stats.start = time.perf_counter() + 2  # the writers' processes start meanwhile
    writers = [
        spawn.Process(target=write_process, args=(j, url, queue, stats.start, slots, rate))
        for j in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    drained = threading.Thread(target=drain, args=(queue, stats), name="drain")
    drained.start()
    cpu, loop_cpu, wall = cpu_seconds(None), time.thread_time(), time.perf_counter()
    try:
        tick, printed = 1, 0.0
        while drained.is_alive():
            await asyncio.sleep(0.5)
            if time.perf_counter() >= stats.start + 60 * tick:
                print(progress.line(), flush=True)
                tick, printed = tick + 1, time.perf_counter()
        if time.perf_counter() - printed > 5:
            print(progress.line(), flush=True)
        stats.cpu = (
            cpu_seconds(None) - cpu,
            time.thread_time() - loop_cpu,
            time.perf_counter() - wall,
        )
    finally:
        for writer in writers:
            if writer.is_alive():
                writer.terminate()
            writer.join()


async def wait_for_marker(clients: list[Client], url: str) -> tuple[int, float, list[Client]]:
    """Write the marker; wait (bounded) until every client has it: (marker, seconds,
    clients that never saw it)."""
    marker = random.randrange(1, 1 << 40)
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("UPDATE marks SET n = %s WHERE id = 1", (marker,))
    deadline = time.monotonic() + MARKER_WAIT
    waiting = clients
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        waiting = [c for c in waiting if c.marker() != marker]
    return marker, time.perf_counter() - started, waiting


def expected(url: str, clients: list[Client]) -> dict[str, dict[int, dict[str, Any]]]:
    """What each distinct query returns from Postgres now, by id (one snapshot)."""
    queries = {q for c in clients for q in c.queries if q != MARKS}
    results: dict[str, dict[int, dict[str, Any]]] = {}
    with psycopg.connect(url, row_factory=dict_row) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for query in sorted(queries):
            results[query] = {row["id"]: row for row in conn.execute(query.encode())}
    return results


def divergence(client: Client, results: dict[str, dict[int, dict[str, Any]]]) -> str | None:
    """None if the client's cache equals its queries' rows; else the differences, with
    the changes the client remembers for those rows."""
    assert client.rt is not None
    want: dict[int, dict[str, Any]] = {}
    for query in client.queries:
        want.update(results.get(query, {}))
    have = client.cache()
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(i for i in set(want) & set(have) if want[i] != have[i])
    subscribed = sorted(client.rt.queries.values())
    if not (missing or extra or wrong) and subscribed == sorted(client.queries):
        return None
    lines = [
        f"client {client.n} (queries {subscribed}, wanted {client.queries}, "
        f"connected {client.rt.connected}, last close {client.last_close}): "
        f"missing {missing[:20]}, extra {extra[:20]}, different {wrong[:20]}"
    ]
    for row_id in (missing + extra + wrong)[:10]:
        lines.append(f"  row {row_id}: Postgres {want.get(row_id)}, cache {have.get(row_id)}")
        seen = [h for h in client.history if h[2] == row_id]
        for kind, op, _, xid, lsn, connection, new in seen or [("(none remembered)",) * 7]:
            lines.append(f"    {kind} {op} xid {xid} lsn {lsn} on {connection}: {new}")
    return "\n".join(lines)


def report_end(
    stats: Stats, server: Server, rss_start: float, minutes: float, divergent: list[str]
) -> None:
    unmatched = stats.match_pending()
    overall = merged(stats.minutes.values())
    last = max(0, math.ceil(minutes) - 1)  # the last minute of writing (and after)
    last_minute = merged(hist for minute, hist in stats.minutes.items() if minute >= last)
    print(f"divergent caches: {len(divergent)}")
    for text in divergent[:5]:
        print(text)
    print(f"row changes written: {sum(stats.written):,} (late slots: {sum(stats.late):,})")
    print(
        f"deliveries: {stats.deliveries:,}  (reconciliations after reconnects: "
        f"{stats.reconciliations:,}, rows they changed: {stats.reconciled_rows:,}; not counted)"
    )
    print(f"delivery latency, overall:     {overall.text()}  max {overall.max:.1f} ms")
    print(f"delivery latency, last minute of writing: {last_minute.text()}  (n={last_minute.n:,})")
    print(
        f"  callbacks that ran before the writer saw its commit: {overall.negative:,};"
        f" deliveries with no matching commit: {unmatched}"
    )
    print(f"transactions out of LSN order on a connection: {stats.out_of_order}")
    resubscribe = merged(stats.resubscribe.values())
    print(
        f"resubscribe after a reconnect, hello to queries applied: p50"
        f" {resubscribe.quantile(0.5):.0f} ms p99 {resubscribe.quantile(0.99):.0f} ms"
        f" (n={resubscribe.n:,})"
    )
    print(
        f"reconnects: {stats.reconnects:,}  (proxy cuts {stats.cuts:,}, connections cut "
        f"{stats.cut_connections:,}; close codes {dict(stats.disconnects.most_common())})"
    )
    for (code, reason), count in stats.reasons.most_common(5):
        print(f"  closed {count:,} times with {code}: {reason}")
    cpu, loop_cpu, wall = stats.cpu
    print(
        f"this process' CPU while writing: {cpu / wall:.0%} of a core over {wall:.0f} s"
        f" (the event loop with the clients {loop_cpu / wall:.0%},"
        f" its other threads {(cpu - loop_cpu) / wall:.0%}); the proxies' process"
        f" {stats.proxy_cpu / wall:.0%}"
    )
    for error in stats.errors[:5]:
        print(f"client error ({len(stats.errors)} in all): {error}")
    rss_end = rss_mb(server.pid)
    print(f"server RSS: start {rss_start:.0f} MB, end {rss_end:.0f} MB")
    print(f"ratio (server RSS end/start): {rss_end / rss_start:.2f}")


async def soak(server: Server, args: argparse.Namespace) -> None:
    url = server.superuser_url(create_database(server, "soak", SETUP))
    port = int(server.url.rsplit(":", 1)[1])
    stats = Stats()
    rng = random.Random(7)
    clients = [Client(n, client_queries(n, rng), stats) for n in range(args.clients)]
    proxies = Proxies(port, PROXIES)
    amps = [AsyncMillpond(server.key, url) for url in proxies.urls]
    stop = asyncio.Event()
    watch = asyncio.create_task(watch_loop(stats, stop))
    try:
        started = time.perf_counter()
        await connect_all(clients, amps)
        subscriptions = sum(len(c.queries) for c in clients)
        print(
            f"{len(clients):,} clients ({subscriptions:,} subscriptions) over {PROXIES} proxies"
            f" subscribed in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        rss_start = rss_mb(server.pid)
        print(
            f"server RSS at start: {rss_start:.0f} MB; writing {args.rate:g} changes/s"
            f" for {args.minutes:g} min",
            flush=True,
        )
        cutting = asyncio.create_task(cut_proxies(proxies, stats, stop))
        proxy_cpu = cpu_seconds(proxies.pid)
        progress = Progress(stats, server, proxies.pid, clients)
        await write_for(progress, url, stats, args.minutes, args.rate)
        stats.proxy_cpu = cpu_seconds(proxies.pid) - proxy_cpu
        stop.set()
        await cutting
        marker, seconds, never = await wait_for_marker(clients, url)
        print(
            f"marker {marker}: seen by {len(clients) - len(never):,} of {len(clients):,}"
            f" clients within {seconds:.1f} s"
        )
        for client in never[:10]:
            print(f"  never saw it: client {client.n}, last close {client.last_close}")
        results = expected(url, clients)
        divergent = [d for d in (divergence(c, results) for c in clients) if d is not None]
        report_end(stats, server, rss_start, args.minutes, divergent)
    finally:
        stop.set()
        await watch
        await asyncio.gather(*(c.rt.aclose() for c in clients if c.rt is not None))
        for amp in amps:
            await amp.aclose()
        proxies.close()


def raise_fd_limit(clients: int) -> None:
    """Each client holds a descriptor here, two in the proxies' process and one in the
    server, which inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * clients + 1024
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="row changes per second")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    raise_fd_limit(args.clients)
    # all clients use the admin key: one account, so its connection limit must allow
    # them, and a reconnect may briefly overlap the connection it replaces
    limit = str(2 * args.clients + 100)
    env = {"MILLPOND_ACCOUNT_MAX_REALTIME_CONNECTIONS": limit, "MILLPOND_GATEWAY_ENABLED": "false"}
    with running_server(**env) as server:
        asyncio.run(soak(server, args))


if __name__ == "__main__":
    main()
