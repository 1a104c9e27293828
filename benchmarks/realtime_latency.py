"""Realtime: commit-to-client latency, fan-out at 10,000 subscriptions, sustained
throughput, and the polling a user would build otherwise — side by side.

Runs ``millpond up`` in a subprocess; clients are raw protocol clients (asyncio
``websockets``) in this process; writes go straight to Postgres with psycopg.

1. one subscriber (``room = 0``): latency from the writer's commit returning to the
   subscriber receiving the transaction, p50/p99; and the same to the SDK's ``on_insert``
   callback (``AsyncRealtime``, cache updated first);
2. 100 connections x 100 queries each (``room = k``, 10,000 disjoint subscriptions):
   the same latency for writes to random rooms (goal: p50 within 1.5x of 1.);
3. sustained row changes/s at that size: 20,000 rows in 100-row transactions to random
   rooms, from the first commit to the last row received, written by one writer in this
   process (goal: > 20,000/s on a quiet machine), then again by ``--writers`` processes
   of their own at once, as fast as they can, competing with the server, Postgres and
   the receivers for the cores (goal: > 10,000/s);
4. the alternative: 1,000 clients polling ``WHERE room = k AND id > last`` every 100 ms
   over a pool of 20 direct connections — delivery latency and the queries/s it costs;
5. row-level security: the same table with RLS on (a policy showing even rooms), the
   subscribers a read collaborator (the owner bypasses RLS): 1. to 3. again, so what the
   per-transaction visibility check costs shows next to the rows without RLS.

    python benchmarks/realtime_latency.py [--writes 300] [--writers 4]
        [--cases single,fanout,polling,rls]

Last line: ratio of polling p50 latency to realtime p50 latency (at 10,000 subs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import time
from typing import Any

import psycopg
import websockets
from _harness import Server, cpu_seconds, cpu_shares, create_database, running_server, summary
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from millpond import AsyncMillpond

SETUP = (
    "CREATE TABLE events (id bigserial PRIMARY KEY, room int NOT NULL, payload text);"
    "CREATE TABLE events_rls (id bigserial PRIMARY KEY, room int NOT NULL, payload text);"
    "ALTER TABLE events_rls ENABLE ROW LEVEL SECURITY;"
    "CREATE POLICY even_rooms ON events_rls FOR SELECT USING (room % 2 = 0)"
)
ROOMS = 10_000
CASES = ("single", "fanout", "polling", "rls")


class Receiver:
    """Raw protocol connections; records when each event id arrives."""

    def __init__(self, key: str | None = None, table: str = "events") -> None:
        self.key = key
        self.table = table
        self.arrived: dict[int, float] = {}
        self.rows = 0
        self.all_rows = asyncio.Event()
        self.expect_rows = 0

    async def connect(self, server: Server, queries: list[str]) -> Any:
        url = server.url.replace("http://", "ws://") + "/v1/realtime/admin/rt"
        ws = await websockets.connect(
            url,
            additional_headers={"Authorization": f"Bearer {self.key or server.key}"},
            max_size=None,
        )
        await ws.recv()  # hello
        await ws.send(json.dumps({"type": "subscribe", "request_id": "s", "queries": queries}))
        while json.loads(await ws.recv())["type"] != "subscription_applied":
            pass
        asyncio.get_running_loop().create_task(self._listen(ws))
        return ws

    async def _listen(self, ws: Any) -> None:
        try:
            async for text in ws:
                message = json.loads(text)
                if message["type"] == "ping":
                    await ws.send('{"type":"pong"}')
                if message["type"] != "transaction":
                    continue
                now = time.perf_counter()
                for row in message["tables"].get(self.table, {}).get("inserts", []):
                    self.arrived.setdefault(row["id"], now)
                    self.rows += 1
                if self.expect_rows and self.rows >= self.expect_rows:
                    self.all_rows.set()
        except websockets.ConnectionClosed:
            pass


async def latencies(
    writer: psycopg.AsyncConnection[Any], receiver: Receiver, rooms: list[int], n: int
) -> list[float]:
    committed: dict[int, float] = {}
    insert = sql.SQL("INSERT INTO {} (room) VALUES (%s) RETURNING id").format(
        sql.Identifier(receiver.table)
    )
    for _ in range(n):
        cur = await writer.execute(insert, (random.choice(rooms),))
        row = await cur.fetchone()
        assert row is not None
        committed[row[0]] = time.perf_counter()
        await asyncio.sleep(0.005)
    deadline = time.monotonic() + 10
    while len([i for i in committed if i in receiver.arrived]) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    missing = [i for i in committed if i not in receiver.arrived]
    assert not missing, f"{len(missing)} events never arrived"
    return [(receiver.arrived[i] - t) * 1000 for i, t in committed.items()]


async def sdk_latencies(
    server: Server, writer: psycopg.AsyncConnection[Any], n: int
) -> list[float]:
    """Commit to the SDK's ``on_insert`` callback (AsyncRealtime: callbacks on the loop)."""
    arrived: dict[int, float] = {}
    async with AsyncMillpond(api_key=server.key, base_url=server.url) as amp:
        rt = await amp.realtime("admin/rt")
        async with rt:
            rt.table("events").on_insert(
                lambda row: arrived.setdefault(row["id"], time.perf_counter())
            )
            await rt.subscribe(["SELECT * FROM events WHERE room = 1"])
            committed: dict[int, float] = {}
            for _ in range(n):
                cur = await writer.execute("INSERT INTO events (room) VALUES (1) RETURNING id")
                row = await cur.fetchone()
                assert row is not None
                committed[row[0]] = time.perf_counter()
                await asyncio.sleep(0.005)
            deadline = time.monotonic() + 10
            while len(arrived) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
    return [(arrived[i] - t) * 1000 for i, t in committed.items() if i in arrived]


async def throughput(
    writer: psycopg.AsyncConnection[Any], receiver: Receiver, rows: int, batch: int, step: int = 1
) -> float:
    """Rows received per second; ``step``: rooms written are multiples of it (2 with RLS:
    every row visible, so the subscriber receives what is written, after the check)."""
    receiver.rows = 0
    receiver.expect_rows = rows
    receiver.all_rows.clear()
    insert = sql.SQL("INSERT INTO {} (room) SELECT unnest(%s::int[])").format(
        sql.Identifier(receiver.table)
    )
    started = time.perf_counter()
    for _ in range(rows // batch):
        rooms = [random.randrange(0, ROOMS, step) for _ in range(batch)]
        await writer.execute(insert, (rooms,))
    await asyncio.wait_for(receiver.all_rows.wait(), timeout=120)
    return rows / (time.perf_counter() - started)


def _write_rows(
    url: str, table: str, rows: int, batch: int, step: int, signals: tuple[Any, Any, Any]
) -> None:
    """A competing writer, in a process of its own: ``rows`` rows in ``batch``-row
    transactions to random rooms, as fast as Postgres takes them. ``signals``: released
    once connected, then it waits for the start, and after writing for the end (so that
    its interpreter's exit does not fall in the measured time)."""
    ready, start, end = signals
    insert = sql.SQL("INSERT INTO {} (room) SELECT unnest(%s::int[])").format(sql.Identifier(table))
    with psycopg.connect(url, autocommit=True) as conn:
        ready.release()
        start.wait()
        for _ in range(rows // batch):
            conn.execute(insert, ([random.randrange(0, ROOMS, step) for _ in range(batch)],))
    end.wait()


async def competing_throughput(
    server_pid: int, url: str, receiver: Receiver, rows: int, batch: int, writers: int, step: int
) -> float:
    """Rows received per second while ``writers`` processes write ``rows`` between them;
    prints who used the cores meanwhile (a share of one core per group of processes)."""
    receiver.rows = 0
    receiver.expect_rows = rows
    receiver.all_rows.clear()
    spawn = multiprocessing.get_context("spawn")
    ready, start, end = spawn.Semaphore(0), spawn.Event(), spawn.Event()
    share = rows // writers
    args = (url, receiver.table, share, batch, step, (ready, start, end))
    procs = [spawn.Process(target=_write_rows, args=args) for _ in range(writers)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every process started and connected: its start-up is not measured
        await asyncio.to_thread(ready.acquire)
    writer_pids = {proc.pid for proc in procs}
    groups = {
        "server": lambda pid, _: pid == server_pid,
        "WAL sender": lambda _, command: command.startswith("postgres: walsender"),
        "Postgres": lambda _, command: command.startswith("postgres"),
        "writers": lambda pid, _: pid in writer_pids,
        "receivers": lambda pid, _: pid == os.getpid(),
    }
    before = cpu_seconds(groups)
    started = time.perf_counter()
    start.set()
    await asyncio.wait_for(receiver.all_rows.wait(), timeout=120)
    elapsed = time.perf_counter() - started
    print(f"{'CPU while competing':>28}: {cpu_shares(before, cpu_seconds(groups), elapsed)}")
    end.set()
    for proc in procs:
        await asyncio.to_thread(proc.join)
        assert proc.exitcode == 0, f"a writer failed ({proc.exitcode})"
    return share * writers / elapsed


async def polling(
    pool: AsyncConnectionPool[Any], writer: psycopg.AsyncConnection[Any], n: int
) -> tuple[list[float], float]:
    clients = 1000
    last = {room: 0 for room in range(clients)}
    seen: dict[int, float] = {}
    queries = 0
    stop = asyncio.Event()
    cur = await writer.execute("SELECT coalesce(max(id), 0) FROM events")
    start_id = (await cur.fetchone() or (0,))[0]
    for room in last:
        last[room] = start_id

    async def poll(room: int) -> None:
        nonlocal queries
        await asyncio.sleep(random.random() * 0.1)
        while not stop.is_set():
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id FROM events WHERE room = %s AND id > %s", (room, last[room])
                )
                queries += 1
                for (event_id,) in await cur.fetchall():
                    seen.setdefault(event_id, time.perf_counter())
                    last[room] = max(last[room], event_id)
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(poll(room)) for room in range(clients)]
    await asyncio.sleep(1)
    q0, t0 = queries, time.perf_counter()
    committed: dict[int, float] = {}
    for _ in range(n):
        cur = await writer.execute(
            "INSERT INTO events (room) VALUES (%s) RETURNING id", (random.randrange(clients),)
        )
        row = await cur.fetchone()
        assert row is not None
        committed[row[0]] = time.perf_counter()
        await asyncio.sleep(0.005)
    await asyncio.sleep(1)
    rate = (queries - q0) / (time.perf_counter() - t0)
    stop.set()
    await asyncio.gather(*tasks)
    return [(seen[i] - t) * 1000 for i, t in committed.items() if i in seen], rate


async def run(server: Server, writes: int, writers: int, cases: set[str]) -> None:
    pg_name = create_database(server, "rt", SETUP)
    url = server.superuser_url(pg_name)
    writer = await psycopg.AsyncConnection.connect(url, autocommit=True)
    single = fanned = [0.0]
    if "single" in cases:
        single = await one_subscriber(server, writer, Receiver(), writes, "")
        print(summary("1 subscriber, SDK callback", await sdk_latencies(server, writer, writes)))
    if "fanout" in cases:
        fanned = await fan_out(server, writer, Receiver(), writes, "", 1, (writers, url))
    if "polling" in cases:
        async with AsyncConnectionPool(url, min_size=20, max_size=20, open=False) as pool:
            await pool.open(wait=True)
            polled, qps = await polling(pool, writer, writes)
        print(summary("polling, 1,000 clients/100ms", polled))
        print(f"{'polling load on Postgres':>28}: {qps:,.0f} queries/s (realtime: 0 extra queries)")
        if "fanout" in cases:
            ratio = statistics.median(polled) / statistics.median(fanned)
            print(f"ratio vs polling (p50 latency, polling / realtime): {ratio:.2f}")
    if "single" in cases and "fanout" in cases:
        print(
            f"fan-out p50 vs single: {statistics.median(fanned) / statistics.median(single):.2f}x"
            " (goal <= 1.5); throughput goal > 5,000 rows/s"
        )
    if "rls" in cases:
        reader = Receiver(read_collaborator(server, "rt"), "events_rls")
        await one_subscriber(server, writer, reader, writes, "RLS, ")
        reader = Receiver(reader.key, "events_rls")
        await fan_out(server, writer, reader, writes, "RLS, ", 2, (writers, url))
    await writer.close()


async def one_subscriber(
    server: Server,
    writer: psycopg.AsyncConnection[Any],
    receiver: Receiver,
    writes: int,
    label: str,
) -> list[float]:
    table = receiver.table
    ws = await receiver.connect(server, [f"SELECT * FROM {table} WHERE room = 0"])
    single = await latencies(writer, receiver, [0], writes)
    await ws.close()
    print(summary(f"{label}1 subscriber", single))
    return single


async def fan_out(
    server: Server,
    writer: psycopg.AsyncConnection[Any],
    receiver: Receiver,
    writes: int,
    label: str,
    step: int,
    competing: tuple[int, str],
) -> list[float]:
    """100 connections x 100 queries; latency of writes to random rooms (multiples of
    ``step``), then sustained throughput: one writer, then ``competing``'s number of
    processes, connecting to its URL."""
    sockets = []
    table = receiver.table
    for c in range(100):
        queries = [f"SELECT * FROM {table} WHERE room = {c * 100 + q}" for q in range(100)]
        sockets.append(await receiver.connect(server, queries))
    fanned = await latencies(writer, receiver, list(range(0, ROOMS, step)), writes)
    print(summary(f"{label}10,000 subscriptions", fanned))
    rate = await throughput(writer, receiver, 20_000, 100, step)
    print(f"{label + 'sustained at 10,000 subs':>28}: {rate:,.0f} rows/s (1 writer)")
    writers, url = competing
    if writers:
        rate = await competing_throughput(server.pid, url, receiver, 20_000, 100, writers, step)
        print(
            f"{label + 'sustained at 10,000 subs':>28}: {rate:,.0f} rows/s"
            f" ({writers} writer processes competing)"
        )
    for s in sockets:
        await s.close()
    return fanned


def read_collaborator(server: Server, db: str) -> str:
    """A new user with read access to ``admin/<db>``: its key."""
    with server.client() as http:
        user = f"reader-{random.randrange(10**6)}"
        r = http.post("/v1/users", json={"username": user})
        r.raise_for_status()
        key = r.json()["api_key"]["secret"]
        path = f"/v1/databases/admin/{db}/collaborators/{user}"
        http.put(path, json={"role": "read"}).raise_for_status()
    return str(key)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument(
        "--writers", type=int, default=4, help="competing writer processes (0: none)"
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated: " + ",".join(CASES)
    )
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    if not cases <= set(CASES):
        parser.error(f"unknown case(s): {', '.join(sorted(cases - set(CASES)))}")
    # the RLS case subscribes as a non-admin user: 100 sockets of one account
    with running_server(
        MILLPOND_POOL_MAX_SIZE="20", MILLPOND_ACCOUNT_MAX_REALTIME_CONNECTIONS="1000"
    ) as server:
        asyncio.run(run(server, args.writes, args.writers, cases))


if __name__ == "__main__":
    main()
