"""Scheduled reducer lateness: 1,000 one-shot schedules due within the same second while a
100 ms interval reducer runs for 60 s, side by side with a hand-rolled scheduler.

* **millpond**: a ``millpond up`` server (its default two workers per module). A reducer
  inserts 1,000 rows into a schedule table, due 2 s later, one per millisecond over one
  second; an interval row every 100 ms runs all along. Each scheduled run inserts
  ``(name, ctx.due, now())`` — ``now()`` is its transaction's start — so lateness is
  ``now() - due``, measured by Postgres's clock on both sides.
* **anchor**: the same 1,000 due times and a 100 ms tick (for 10 s), run by this process
  with ``asyncio`` timers, each an ``INSERT`` on one of two persistent psycopg
  connections to the same Postgres — what an in-process scheduler with no claims, no
  sandbox and no retries costs.

It checks that no run is missing or duplicated (one-shots by name, ticks by intended
time, against the anchored grid) and prints p50/p99 lateness of both.

    python benchmarks/schedule_lateness.py [--seconds 60] [--burst 1000]

Last line: ``ratio vs hand-rolled (one-shot p99 lateness): X.XX`` (goal: millpond's p99
under 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import time
from collections import Counter

import psycopg
from _harness import Server, create_database, percentile, running_server

UTC = datetime.UTC
TICK = datetime.timedelta(milliseconds=100)

MODULE = """
import datetime
from millpond.module import ReducerContext, ScheduleAt, Timestamp, table, reducer, primary_key

@table(scheduled="fire")
class Alarm:
    scheduled_id: int = primary_key(auto_inc=True)
    scheduled_at: ScheduleAt
    name: str

@table
class Ran:
    id: int = primary_key(auto_inc=True)
    name: str
    due: Timestamp
    started: Timestamp

@reducer
def fire(ctx: ReducerContext, row: Alarm) -> None:
    ctx.sql("INSERT INTO ran (name, due, started) VALUES (%s, %s, now())", [row.name, ctx.due])

@reducer
def burst(ctx: ReducerContext, at: Timestamp, count: int) -> None:
    for i in range(count):
        ctx.schedule(fire, at=at + datetime.timedelta(milliseconds=i * 1000 / count),
                     name=f"once-{i}")

@reducer
def ticking(ctx: ReducerContext, ms: int) -> int:
    return ctx.schedule(fire, every=datetime.timedelta(milliseconds=ms), name="tick").scheduled_id

@reducer
def stop(ctx: ReducerContext, scheduled_id: int) -> None:
    row = ctx.db.alarm.find(scheduled_id)
    if row is not None:
        ctx.db.alarm.delete(row)
"""


def _call(server: Server, reducer: str, args: list[object]) -> object:
    with server.client() as http:
        r = http.post(f"/v1/databases/admin/alarms/call/{reducer}", json=args)
        r.raise_for_status()
        return r.json()["return"]


def _lateness(rows: list[tuple[str, datetime.datetime, datetime.datetime]]) -> list[float]:
    return [(started - due).total_seconds() * 1000 for _, due, started in rows]


def _check(rows: list[tuple[str, datetime.datetime, datetime.datetime]], burst: int) -> str:
    once = [r for r in rows if r[0].startswith("once-")]
    ticks = sorted(r[1] for r in rows if r[0] == "tick")
    names = Counter(r[0] for r in once)
    missing_once = burst - len(names)
    duplicated = sum(n - 1 for n in names.values()) + sum(n - 1 for n in Counter(ticks).values())
    grid = round((ticks[-1] - ticks[0]) / TICK) + 1 if ticks else 0
    off_grid = sum((t - ticks[0]) % TICK != datetime.timedelta(0) for t in ticks)
    missed_ticks = grid - len(set(ticks))
    return (
        f"one-shots missing {missing_once}, duplicated runs {duplicated}, ticks {len(ticks)}"
        f" of {grid} on the grid (missed {missed_ticks}, off the grid {off_grid})"
    )


def _line(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no runs"
    return (
        f"{name}: n={len(values)} p50 {statistics.median(values):.2f} ms,"
        f" p99 {percentile(values, 0.99):.2f} ms, max {max(values):.2f} ms"
    )


def run_millpond(server: Server, seconds: float, burst: int) -> dict[str, list[float]]:
    pg_name = create_database(server, "alarms", "SELECT 1")
    with server.client() as http:
        r = http.post("/v1/databases/admin/alarms/module", json={"files": {"alarms.py": MODULE}})
        r.raise_for_status()
    url = server.superuser_url(pg_name)
    tick_id = _call(server, "ticking", [100])
    time.sleep(min(5.0, seconds / 4))
    at = datetime.datetime.now(UTC) + datetime.timedelta(seconds=2)
    _call(server, "burst", [at.isoformat(), burst])
    time.sleep(max(0.0, seconds - min(5.0, seconds / 4)))
    _call(server, "stop", [tick_id])
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM ran WHERE name LIKE 'once-%'").fetchone()
            if row is not None and row[0] >= burst:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        rows = conn.execute("SELECT name, due, started FROM ran").fetchall()
        stat = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    print("millpond:", _check(rows, burst))
    if stat is not None:  # a serialization failure's retry is a rollback
        print(f"millpond: transactions committed {stat[0]}, rolled back {stat[1]}")
    return {
        "once": _lateness([r for r in rows if r[0] != "tick"]),
        "tick": _lateness([r for r in rows if r[0] == "tick"]),
    }


async def run_anchor(url: str, seconds: float, burst: int) -> dict[str, list[float]]:
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(2)]
    await conns[0].execute(
        "CREATE TABLE anchor_ran (name text, due timestamptz, started timestamptz)"
    )
    loop = asyncio.get_running_loop()
    free: asyncio.Queue[psycopg.AsyncConnection[tuple[object, ...]]] = asyncio.Queue()
    for conn in conns:
        free.put_nowait(conn)
    tasks: list[asyncio.Task[None]] = []

    async def fire(name: str, due: datetime.datetime) -> None:
        conn = await free.get()
        try:
            await conn.execute(
                "INSERT INTO anchor_ran VALUES (%s, %s, clock_timestamp())", (name, due)
            )
        finally:
            free.put_nowait(conn)

    def start_fire(name: str, due: datetime.datetime) -> None:
        tasks.append(asyncio.create_task(fire(name, due)))

    def at(due: datetime.datetime, name: str) -> None:
        delay = (due - datetime.datetime.now(UTC)).total_seconds()
        loop.call_later(max(0.0, delay), start_fire, name, due)

    start = datetime.datetime.now(UTC) + TICK
    for k in range(int(seconds / TICK.total_seconds())):
        at(start + k * TICK, "tick")
    burst_at = start + datetime.timedelta(seconds=min(2.0, seconds / 4))
    for i in range(burst):
        at(burst_at + datetime.timedelta(milliseconds=i * 1000 / burst), f"once-{i}")
    await asyncio.sleep(seconds + 3)
    await asyncio.gather(*tasks)
    cur = await conns[0].execute("SELECT name, due, started FROM anchor_ran")
    rows = await cur.fetchall()
    for conn in conns:
        await conn.close()
    print("anchor:", _check(rows, burst))
    return {
        "once": _lateness([r for r in rows if r[0] != "tick"]),
        "tick": _lateness([r for r in rows if r[0] == "tick"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the ticks run")
    parser.add_argument("--burst", type=int, default=1000, help="one-shots due in one second")
    args = parser.parse_args()
    with running_server() as server:
        ours = run_millpond(server, args.seconds, args.burst)
        anchor_url = server.superuser_url(create_database(server, "anchor", "SELECT 1"))
        theirs = asyncio.run(run_anchor(anchor_url, min(args.seconds, 10), args.burst))
    for name, result in (("millpond", ours), ("hand-rolled", theirs)):
        print(_line(f"{name} one-shot lateness", result["once"]))
        print(_line(f"{name} 100 ms interval lateness", result["tick"]))
    ratio = percentile(ours["once"], 0.99) / max(percentile(theirs["once"], 0.99), 1e-3)
    print(f"ratio vs hand-rolled (one-shot p99 lateness): {ratio:.2f}")


if __name__ == "__main__":
    main()
