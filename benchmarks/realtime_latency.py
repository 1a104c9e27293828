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
   rooms, from the first commit to the last row received (goal: > 5,000/s);
4. the alternative: 1,000 clients polling ``WHERE room = k AND id > last`` every 100 ms
   over a pool of 20 direct connections — delivery latency and the queries/s it costs;
5. row-level security: the same table with RLS on (a policy showing even rooms), the
   subscribers a read collaborator (the owner bypasses RLS): 1. to 3. again, so what the
   per-transaction visibility check costs shows next to the rows without RLS.

    python benchmarks/realtime_latency.py [--writes 300] [--cases single,fanout,polling,rls]

Last line: ratio of polling p50 latency to realtime p50 latency (at 10,000 subs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

import psycopg
import websockets
from _harness import Server, create_database, running_server, summary
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


async def run(server: Server, writes: int, cases: set[str]) -> None:
    pg_name = create_database(server, "rt", SETUP)
    url = server.superuser_url(pg_name)
    writer = await psycopg.AsyncConnection.connect(url, autocommit=True)
    single = fanned = [0.0]
    if "single" in cases:
        single = await one_subscriber(server, writer, Receiver(), writes, "")
        print(summary("1 subscriber, SDK callback", await sdk_latencies(server, writer, writes)))
    if "fanout" in cases:
        fanned = await fan_out(server, writer, Receiver(), writes, "", 1)
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
        await fan_out(server, writer, reader, writes, "RLS, ", 2)
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
) -> list[float]:
    """100 connections x 100 queries; latency of writes to random rooms (multiples of
    ``step``), then sustained throughput."""
    sockets = []
    table = receiver.table
    for c in range(100):
        queries = [f"SELECT * FROM {table} WHERE room = {c * 100 + q}" for q in range(100)]
        sockets.append(await receiver.connect(server, queries))
    fanned = await latencies(writer, receiver, list(range(0, ROOMS, step)), writes)
    print(summary(f"{label}10,000 subscriptions", fanned))
    rate = await throughput(writer, receiver, 20_000, 100, step)
    print(f"{label + 'sustained at 10,000 subs':>28}: {rate:,.0f} rows/s")
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
        asyncio.run(run(server, args.writes, cases))


if __name__ == "__main__":
    main()
