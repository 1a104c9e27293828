"""Realtime across many databases: what each database with live subscribers costs, and
what a subscriber gets once the server streams as many databases as it may.

One ``millpond up`` (``MILLPOND_REALTIME_MAX_STREAMS`` set to the largest size asked
for), databases ``admin/rtN`` each with a table ``events``, one subscriber per database
(a raw WebSocket, ``SELECT * FROM events``), and one writer per database straight to
Postgres (psycopg). For each size N (databases added as it grows), rows are written
round-robin over the N databases, 5 ms apart; printed per N: delivery latency (the
INSERT sent, its autocommit included → the subscriber has the row) p50/p99, the
server's Postgres connections (the benchmark's N writers left out) and WAL senders, the
server's RSS, and a WAL sender's proportional memory (smaps_rollup Pss). Then one
database more than the limit: its subscriber must be closed with 4029
``limit_exceeded`` (never 1011) while every stream is busy.

    python benchmarks/realtime_databases.py [--sizes 1,10,30] [--writes 200]

Last line: ratio of p99 latency at the largest N to p99 at N = 1 (goal: within 2x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import websockets
from _harness import Server, create_database, percentile, rss_kb, running_server

SETUP = "CREATE TABLE events (id bigserial PRIMARY KEY, payload text)"


class Subscriber:
    """One database's subscriber: when each row id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.closed: tuple[int, str] | None = None

    async def start(self, server: Server, name: str) -> None:
        url = server.url.replace("http://", "ws://") + f"/v1/realtime/admin/{name}"
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {server.key}"}, max_size=None
        )
        try:
            await ws.recv()  # hello
            await ws.send(
                json.dumps(
                    {"type": "subscribe", "request_id": "s", "queries": ["SELECT * FROM events"]}
                )
            )
            while json.loads(await ws.recv())["type"] != "subscription_applied":
                pass
        except websockets.ConnectionClosed as exc:
            self.closed = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            return
        asyncio.get_running_loop().create_task(self._listen(ws))

    async def _listen(self, ws: Any) -> None:
        try:
            async for text in ws:
                message = json.loads(text)
                if message["type"] == "ping":
                    await ws.send('{"type":"pong"}')
                elif message["type"] == "transaction":
                    now = time.perf_counter()
                    for row in message["tables"].get("events", {}).get("inserts", []):
                        self.arrived.setdefault(row["id"], now)
        except websockets.ConnectionClosed as exc:
            self.closed = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")


class Database:
    def __init__(self, server: Server, index: int) -> None:
        self.name = f"rt{index}"
        self.pg_name = create_database(server, self.name, SETUP)
        self.subscriber = Subscriber()
        self.writer: psycopg.AsyncConnection[Any] | None = None

    async def open(self, server: Server) -> None:
        await self.subscriber.start(server, self.name)
        url = server.superuser_url(self.pg_name)
        self.writer = await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def write(self) -> tuple[int, float]:
        """The row's id, and when its INSERT was sent: the latency counts the commit too
        (the subscribers share this event loop, so a row can be read before the writer
        resumes: "after the commit returned" could come out negative)."""
        assert self.writer is not None
        sent = time.perf_counter()
        cur = await self.writer.execute("INSERT INTO events (payload) VALUES ('x') RETURNING id")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), sent


async def measure(databases: list[Database], writes: int) -> list[float]:
    committed: list[tuple[Database, int, float]] = []
    for i in range(writes):
        db = databases[i % len(databases)]
        committed.append((db, *await db.write()))
        await asyncio.sleep(0.005)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        row not in db.subscriber.arrived for db, row, _ in committed
    ):
        await asyncio.sleep(0.01)
    missing = sum(row not in db.subscriber.arrived for db, row, _ in committed)
    assert not missing, f"{missing} rows never arrived"
    return [(db.subscriber.arrived[row] - at) * 1000 for db, row, at in committed]


def walsender_pss_mb(server: Server) -> float:
    """The WAL senders' mean proportional set size (shared pages counted once), in MB."""
    with psycopg.connect(server.superuser_url("postgres")) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender'"
            )
        ]
    sizes = []
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        sizes += [int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")]
    return sum(sizes) / len(sizes) / 1024 if sizes else 0.0


def connections(server: Server) -> tuple[int, int]:
    with psycopg.connect(server.superuser_url("postgres")) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE backend_type = 'walsender')"
            " FROM pg_stat_activity WHERE backend_type IN ('client backend', 'walsender')"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def run(sizes: list[int], writes: int) -> None:
    top = max(sizes)
    env = {"MILLPOND_REALTIME_MAX_STREAMS": str(top), "MILLPOND_REALTIME_IDLE_SECONDS": "600"}
    with running_server(**env) as server:
        databases: list[Database] = []
        p99: dict[int, float] = {}
        base_rss = rss_kb(server.pid) or 0
        base_conns = connections(server)[0]
        print(f"server RSS with no stream: {base_rss / 1024:.0f} MB; {base_conns} connections")
        print(
            f"{'N':>4} {'p50 ms':>8} {'p99 ms':>8} {'server conns':>12} {'walsenders':>11}"
            f" {'RSS MB':>7} {'MB/db':>6}"
            f" {'sender MB':>9}"
        )
        for size in sizes:
            while len(databases) < size:
                db = Database(server, len(databases))
                await db.open(server)
                assert db.subscriber.closed is None, db.subscriber.closed
                databases.append(db)
            latencies = await measure(databases, writes)
            conns, senders = connections(server)
            conns -= size  # the writers are the benchmark's
            rss = rss_kb(server.pid) or 0
            sender_pss = walsender_pss_mb(server)
            per_db = (rss - base_rss) / 1024 / size
            p99[size] = percentile(latencies, 0.99)
            print(
                f"{size:>4} {percentile(latencies, 0.5):>8.2f} {p99[size]:>8.2f}"
                f" {conns:>12} {senders:>11} {rss / 1024:>7.0f} {per_db:>6.1f}"
                f" {sender_pss:>9.1f}"
            )
        extra = Database(server, len(databases))
        await extra.open(server)
        closed = extra.subscriber.closed
        print(f"database {top + 1} (over MILLPOND_REALTIME_MAX_STREAMS={top}): closed {closed}")
        for db in [*databases, extra]:
            if db.writer is not None:
                await db.writer.close()
        print(f"ratio p99 at N={top} vs N=1: {p99[top] / p99[min(sizes)]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,30", help="numbers of databases")
    parser.add_argument("--writes", type=int, default=200, help="rows written per size")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    asyncio.run(run(sizes, args.writes))


if __name__ == "__main__":
    main()
