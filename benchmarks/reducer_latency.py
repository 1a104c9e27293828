"""Reducer latency: call -> the caller's outcome and call -> another client's row callback,
side by side with the same transaction run directly with psycopg.

Same server, module and 10,000 accounts as ``reducer_transfer.py``. A subscriber (the
SDK's ``AsyncRealtime``) subscribes to ``accounts`` rows 9,999 and 10,000; each probe
moves 1 from account 10,000 to 9,999, so the new balance of 10,000 names the probe in
the row callback. Probes alternate:

* **reducer**: ``POST …/call/transfer`` over a kept-alive HTTP/1.1 connection (the
  minimal client of ``reducer_transfer.py``; ``--sdk`` adds the SDK's ``amp.call``);
* **direct SQL** (the anchor): the statements a worker runs for that call, on a
  persistent psycopg connection as the same ``_reducer`` role over the Unix socket —
  ``BEGIN ISOLATION LEVEL SERIALIZABLE`` with the ``set_config``s, two prepared
  ``SELECT``s, two prepared ``UPDATE``s, the ``pg_logical_emit_message`` of the same
  event with ``COMMIT``.

Each probe measures from its start to its own return (the caller's outcome, or COMMIT
returning) and to the subscriber's ``on_row_update`` callback, and waits for the callback
before the next probe. **Low load**: nothing else runs. **Under load**: 8 background
callers in another process call ``transfer`` on the other accounts without pause.

    python benchmarks/reducer_latency.py [--probes 300] [--load-callers 8] [--sdk]

Last line: ``ratio vs direct SQL (call → outcome p50, low load): X.XX`` (goal: both p50s
below 2 ms at low load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from _harness import Server, percentile, running_server
from psycopg import sql
from reducer_transfer import ACCOUNTS, DB, Bank, HttpCaller, run_callers, setup_bank

from millpond import AsyncMillpond

SOURCE, TARGET = ACCOUNTS, ACCOUNTS - 1


@dataclass
class Probes:
    outcome_ms: list[float] = field(default_factory=list)
    callback_ms: list[float] = field(default_factory=list)


class Subscriber:
    """Arrival times of account ``SOURCE``'s new balances (row callbacks)."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.with_event = 0

    def on_row_update(self, op: str, old: Any, new: Any, event: Any) -> None:
        if new is None or new["id"] != SOURCE:
            return
        now = time.perf_counter()
        if event.reducer is not None:
            self.with_event += 1
        balance = int(new["balance"])
        self.arrived[balance] = now
        future = self.waiting.pop(balance, None)
        if future is not None and not future.done():
            future.set_result(now)

    async def wait(self, balance: int, timeout: float = 10) -> float:
        if balance in self.arrived:
            return self.arrived.pop(balance)
        future = asyncio.get_running_loop().create_future()
        self.waiting[balance] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.arrived.pop(balance, None)


class Direct:
    """The worker's statements for one ``transfer`` call, on one connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.sender = secrets.token_hex(32)

    async def transfer(self, from_id: int, to_id: int, amount: int) -> None:
        conn = self.conn
        request_id = secrets.token_hex(16)
        await conn.execute(
            sql.SQL(
                "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT set_config('millpond.sender', {},"
                " true), set_config('millpond.connection_id', '', true),"
                " set_config('millpond.request_id', {}, true)"
            ).format(sql.Literal(self.sender), sql.Literal(request_id))
        )
        find = "SELECT id, balance FROM public.accounts WHERE id = %s"
        source = await (await conn.execute(find, [from_id], prepare=True)).fetchone()
        target = await (await conn.execute(find, [to_id], prepare=True)).fetchone()
        assert source is not None and target is not None
        update = (
            "UPDATE public.accounts SET id = %s, balance = %s WHERE id = %s RETURNING id, balance"
        )
        await conn.execute(update, [from_id, source[1] - amount, from_id], prepare=True)
        await conn.execute(update, [to_id, target[1] + amount, to_id], prepare=True)
        event = {
            "reducer": "transfer",
            "args": [from_id, to_id, amount],
            "sender": self.sender,
            "connection_id": None,
            "request_id": request_id,
            "timestamp": datetime.now(UTC).isoformat(),
            "status": "committed",
        }
        text = json.dumps(event, separators=(",", ":"))
        await conn.execute(
            sql.SQL(
                "SELECT pg_catalog.pg_logical_emit_message(true, 'millpond.reducer', {}::text);"
                " COMMIT"
            ).format(sql.Literal(text))
        )


def background(url: str, key: str, data_dir: str, callers: int) -> None:
    """8 callers calling ``transfer`` without pause on accounts 1..ACCOUNTS-2 (a process
    of its own, so that they do not share this process's event loop)."""
    server = Server(url, Path(data_dir), key)
    asyncio.run(run_callers(server, callers, "uniform", 3600, upper=ACCOUNTS - 2))


async def probe(
    server: Server, bank: Bank, probes: int, use_sdk: bool
) -> tuple[dict[str, Probes], int]:
    results = {"reducer": Probes(), "direct SQL": Probes()}
    if use_sdk:
        results["reducer (SDK amp.call)"] = Probes()
    subscriber = Subscriber()
    conninfo = (
        f"host={bank.socket_dir} port=5432 dbname={bank.pg_name} user={bank.role}"
        f" password={bank.password}"
    )
    async with (
        AsyncMillpond(api_key=server.key, base_url=server.url) as amp,
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn,
    ):
        rt = await amp.realtime(DB)
        async with rt:
            rt.table("accounts").on_row_update(subscriber.on_row_update)
            await rt.subscribe([f"SELECT * FROM accounts WHERE id IN ({SOURCE}, {TARGET})"])
            row = await (
                await conn.execute("SELECT balance FROM accounts WHERE id = %s", [SOURCE])
            ).fetchone()
            assert row is not None
            balance = int(row[0])
            caller = HttpCaller(server, f"/v1/databases/{DB}/call/transfer")
            await caller.connect()
            direct = Direct(conn)
            kinds = list(results)
            for i in range(probes + 10):  # the first 10 warm up
                kind = kinds[i % len(kinds)]
                started = time.perf_counter()
                if kind == "reducer":
                    status, body = await caller.call([SOURCE, TARGET, 1])
                    assert status == 200, body
                elif kind == "direct SQL":
                    await direct.transfer(SOURCE, TARGET, 1)
                else:
                    await amp.call(DB, "transfer", SOURCE, TARGET, 1)
                returned = time.perf_counter()
                balance -= 1
                arrived = await subscriber.wait(balance)
                if i >= 10:
                    results[kind].outcome_ms.append((returned - started) * 1000)
                    results[kind].callback_ms.append((arrived - started) * 1000)
            await caller.close()
    return results, subscriber.with_event


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<44} p50 {statistics.median(values):7.3f} ms"
        f"  p99 {percentile(values, 0.99):7.3f} ms  max {max(values):8.1f} ms  (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=300, help="probes per kind and load")
    parser.add_argument("--load-callers", type=int, default=8)
    parser.add_argument("--sdk", action="store_true", help="also probe with the SDK's amp.call")
    args = parser.parse_args()
    secret = secrets.token_urlsafe(32)
    table: dict[str, dict[str, Probes]] = {}
    with running_server(MILLPOND_SECRET_KEY=secret) as server:
        bank = setup_bank(server, secret)
        per_kind = args.probes * (3 if args.sdk else 2)
        table["low load"], events = asyncio.run(probe(server, bank, per_kind, args.sdk))
        load = multiprocessing.get_context("spawn").Process(
            target=background,
            args=(server.url, server.key, str(server.data_dir), args.load_callers),
            daemon=True,
        )
        load.start()
        try:
            time.sleep(2)  # the background callers connect and get going
            table[f"under load ({args.load_callers} callers)"], more = asyncio.run(
                probe(server, bank, per_kind, args.sdk)
            )
            events += more
        finally:
            load.terminate()
            load.join(10)
    for load_name, results in table.items():
        print(f"\n{load_name}")
        for kind, probes in results.items():
            print(line(f"{kind}: call → outcome", probes.outcome_ms))
            print(line(f"{kind}: call → row callback", probes.callback_ms))
    print(f"\nrow callbacks with a reducer event: {events} (every probe's: the direct SQL's too)")
    low = table["low load"]
    ratio = statistics.median(low["reducer"].outcome_ms) / statistics.median(
        low["direct SQL"].outcome_ms
    )
    print(f"ratio vs direct SQL (call → outcome p50, low load): {ratio:.2f}")


if __name__ == "__main__":
    main()
