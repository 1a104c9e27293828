"""Realtime delivery through the SDK's ways of receiving, side by side with a raw
WebSocket client: commit → the row in the client's hands, p50/p99.

Runs ``millpond up`` in a subprocess; a writer (psycopg, this process) inserts rows one by
one into a subscribed table and notes when each commit returned; each receiver runs in a
process of its own (as an application would: the writer does not share its GIL) and
notes when each row reached it, on the same monotonic clock:

- ``raw``: a ``websockets`` client reading the protocol itself (the anchor);
- ``update-busy``: the sync client, ``callbacks="update"``, in the natural loop
  ``while True: rt.update()``;
- ``update-timeout``: the same with ``rt.update(timeout=0.1)``;
- ``thread``: the sync client with ``callbacks="thread"``;
- ``async``: ``AsyncRealtime``, callbacks on its event loop.

    python benchmarks/sdk_delivery.py [--writes 300] [--modes raw,update-busy,...]

Last line: the largest difference of an SDK mode's p50 from the raw p50, in ms (the bar:
every mode within 1 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
from _harness import Server, create_database, percentile, running_server

MODES = ("raw", "update-busy", "update-timeout", "thread", "async")
SETUP = "CREATE TABLE events (id bigserial PRIMARY KEY, room int NOT NULL)"
QUERY = "SELECT * FROM events WHERE room = {room}"
"""Each mode its own room: no row of another mode's run is in its initial rows."""


def now_ms() -> float:
    return time.monotonic_ns() / 1e6


# -- receivers (each in its own process) ---------------------------------------------------


def receive(mode: str, url: str, key: str, expect: int) -> None:
    query = QUERY.format(room=MODES.index(mode))
    """Print "ready", then one "id ms" line per row as it arrives; exit after ``expect``."""
    seen = 0
    done = threading.Event()

    def arrived(row: dict[str, Any]) -> None:
        nonlocal seen
        print(f"{row['id']} {now_ms()}", flush=True)
        seen += 1
        if seen >= expect:
            done.set()

    if mode == "raw":
        asyncio.run(_raw(url, key, query, expect))
        return
    if mode == "async":
        asyncio.run(_async(url, key, query, arrived, done))
        return
    from millpond import Millpond

    with Millpond(api_key=key, base_url=url) as mp:
        callbacks = "thread" if mode == "thread" else "update"
        with mp.realtime("admin/sdk", callbacks=callbacks) as rt:
            rt.table("events").on_insert(arrived)
            rt.subscribe([query])
            print("ready", flush=True)
            if mode == "thread":
                done.wait()
            elif mode == "update-busy":
                while not done.is_set():
                    rt.update()
            else:
                while not done.is_set():
                    rt.update(timeout=0.1)


async def _raw(url: str, key: str, query: str, expect: int) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://") + "/v1/realtime/admin/sdk"
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "request_id": "s", "queries": [query]}))
        while json.loads(await ws.recv())["type"] != "subscription_applied":
            pass
        print("ready", flush=True)
        seen = 0
        async for text in ws:
            t = now_ms()
            message = json.loads(text)
            if message["type"] == "ping":
                await ws.send('{"type":"pong"}')
            for row in message.get("tables", {}).get("events", {}).get("inserts", []):
                print(f"{row['id']} {t}", flush=True)
                seen += 1
            if seen >= expect:
                return


async def _async(url: str, key: str, query: str, arrived: Any, done: threading.Event) -> None:
    from millpond import AsyncMillpond

    async with AsyncMillpond(api_key=key, base_url=url) as amp:
        rt = await amp.realtime("admin/sdk")
        async with rt:
            rt.table("events").on_insert(arrived)
            await rt.subscribe([query])
            print("ready", flush=True)
            while not done.is_set():
                await asyncio.sleep(0.05)


# -- the writer ----------------------------------------------------------------------------


def measure(server: Server, pg_name: str, mode: str, writes: int) -> list[float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--receiver", mode, server.url, server.key, str(writes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    assert first == "ready", (mode, first)
    committed: dict[int, float] = {}
    with psycopg.connect(server.superuser_url(pg_name), autocommit=True) as conn:
        for _ in range(writes):
            insert = "INSERT INTO events (room) VALUES (%s) RETURNING id"
            row = conn.execute(insert, (MODES.index(mode),)).fetchone()
            assert row is not None
            committed[row[0]] = now_ms()
            time.sleep(0.005)
    arrived: dict[int, float] = {}
    for line in proc.stdout:
        ident, t = line.split()
        arrived[int(ident)] = float(t)
    proc.wait(60)
    missing = [i for i in committed if i not in arrived]
    assert not missing, f"{mode}: {len(missing)} rows never arrived"
    return [arrived[i] - t for i, t in committed.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--receiver", nargs=4, metavar=("MODE", "URL", "KEY", "N"))
    args = parser.parse_args()
    if args.receiver:
        mode, url, key, n = args.receiver
        receive(mode, url, key, int(n))
        return
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"modes are {', '.join(MODES)}")
    with running_server() as server:
        pg_name = create_database(server, "sdk", SETUP)
        medians: dict[str, float] = {}
        for mode in ["raw", *[m for m in modes if m != "raw"]]:
            values = measure(server, pg_name, mode, args.writes)
            medians[mode] = statistics.median(values)
            print(
                f"{mode:>15}: p50 {medians[mode]:7.3f} ms  p99 {percentile(values, 0.99):7.3f} ms"
                f"  (n={len(values)})",
                flush=True,
            )
    worst = max(medians[m] - medians["raw"] for m in medians if m != "raw")
    print(f"largest SDK p50 above raw (ms): {worst:.3f}")


if __name__ == "__main__":
    main()
