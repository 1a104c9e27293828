"""Reducer throughput: a ``transfer`` reducer vs the same transaction as a pgbench script.

Starts ``millpond up`` in a subprocess, creates ``admin/bank`` and publishes a module with
``accounts(id int8 primary key, balance int8)`` (10,000 rows seeded by ``@init``) and
``transfer(from_id, to_id, amount)``: it reads both accounts (``ctx.db.accounts.find``),
checks the balance and updates both (``ctx.db.accounts.update``), SERIALIZABLE (the
default; serialization failures and deadlocks are retried by the worker).

The anchor is pgbench against the same database, as the same role the workers log in as
(the database's ``_reducer`` role, over the Unix socket), running the very statements a
call runs in its worker: ``BEGIN ISOLATION LEVEL SERIALIZABLE``, the three
``set_config`` of the call's context, the two ``SELECT``s and two ``UPDATE``s the table
handles prepare, the ``pg_logical_emit_message`` of the reducer event (same JSON) and
``COMMIT`` — with ``-M prepared`` and ``--max-tries`` (retries), the same clients and the
same duration. pgbench sends one statement per round trip (8); a worker batches
``BEGIN`` with ``set_config`` and the event with ``COMMIT`` (6 round trips).

Callers are asyncio tasks in this process, each with its own kept-alive HTTP/1.1
connection and a minimal client (no httpx: its per-request cost would be measured, not
the server's). The client's CPU use is printed per case so that it can be checked not
to be the bottleneck. Account choice is uniform or Zipf (``random_zipfian(1, 10000,
1.5)`` in pgbench, the same distribution in Python). Balances are 10^12: no call fails
for lack of money, so every non-200 answer is counted as a failure.

    python benchmarks/reducer_transfer.py [--time 5] [--rounds 1] [--callers 1,8,32] [--workers N]

Last line: ``ratio vs pgbench (uniform, 8 callers): X.XX`` (goal: >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import Server, running_server
from gateway_pgbench import pgbench_binary

from millpond.server.postgres import provision
from millpond.server.postgres.embedded import PORT, EmbeddedPostgres

ACCOUNTS = 10_000
BALANCE = 10**12
ZIPF_S = 1.5
DB = "admin/bank"
KEEP_ALIVE_S = 4.0
"""A connection idle longer is opened again (uvicorn closes them after 5 s)."""

MODULE = textwrap.dedent(
    """
    from millpond.module import ReducerContext, SenderError, init, primary_key, reducer, table

    @table(name="accounts", public=True)
    class Account:
        id: int = primary_key()
        balance: int

    @init
    def seed(ctx: ReducerContext) -> None:
        ctx.sql(
            "INSERT INTO accounts (id, balance)"
            " SELECT g, %s FROM generate_series(1, %s) AS g",
            [BALANCE, ACCOUNTS],
        )

    @reducer
    def transfer(ctx: ReducerContext, from_id: int, to_id: int, amount: int) -> None:
        if from_id == to_id:
            return
        source = ctx.db.accounts.find(from_id)
        target = ctx.db.accounts.find(to_id)
        if source is None or target is None:
            raise SenderError("no such account")
        if source.balance < amount:
            raise SenderError("insufficient balance")
        source.balance -= amount
        target.balance += amount
        ctx.db.accounts.update(source)
        ctx.db.accounts.update(target)
        # VERSION 1
    """
).replace("BALANCE, ACCOUNTS", f"{BALANCE}, {ACCOUNTS}")

PGBENCH_SCRIPT = """\
\\set from_id {choice}
\\set to_id {choice}
\\set amount 1
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT set_config('millpond.sender', :sender, true), \
set_config('millpond.connection_id', '', true), set_config('millpond.request_id', :rid, true);
\\if :from_id != :to_id
SELECT id, balance AS from_balance FROM public.accounts WHERE id = :from_id \\gset
SELECT id, balance AS to_balance FROM public.accounts WHERE id = :to_id \\gset
\\if :from_balance >= :amount
\\set new_from :from_balance - :amount
\\set new_to :to_balance + :amount
UPDATE public.accounts SET id = :from_id, balance = :new_from WHERE id = :from_id \
RETURNING id, balance;
UPDATE public.accounts SET id = :to_id, balance = :new_to WHERE id = :to_id \
RETURNING id, balance;
\\endif
\\endif
SELECT pg_catalog.pg_logical_emit_message(true, 'millpond.reducer', format(\
'{{"reducer":"transfer","args":[%s,%s,%s],"sender":"%s","connection_id":%s,\
"request_id":"%s","timestamp":"%s","status":"committed"}}', \
:from_id::int8, :to_id::int8, :amount::int8, :sender::text, 'null', :rid::text, :ts::text));
COMMIT;
"""
CHOICES = {
    "uniform": f"random(1, {ACCOUNTS})",
    "zipf": f"random_zipfian(1, {ACCOUNTS}, {ZIPF_S})",
}


# -- the callers: a minimal HTTP/1.1 client over kept-alive asyncio streams -------------------


class Picker:
    """Account ids, uniform or Zipf(s) on 1..ACCOUNTS (pgbench's ``random_zipfian``:
    P(k) proportional to k^-s)."""

    def __init__(self, distribution: str, upper: int = ACCOUNTS) -> None:
        self.rng = random.Random()
        self.upper = upper
        self.ids = range(1, upper + 1)
        self.cum: list[float] | None = None
        if distribution == "zipf":
            self.cum = list(itertools.accumulate(k**-ZIPF_S for k in self.ids))

    def pick(self) -> int:
        if self.cum is None:
            return self.rng.randint(1, self.upper)
        return self.rng.choices(self.ids, cum_weights=self.cum)[0]


class HttpCaller:
    """One kept-alive connection; ``call`` returns (status, body)."""

    def __init__(self, server: Server, path: str) -> None:
        parts = urlsplit(server.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.used = time.perf_counter()

    async def call(self, args: Any) -> tuple[int, bytes]:
        if time.perf_counter() - self.used > KEEP_ALIVE_S:  # the server may have closed it
            await self.close()
            await self.connect()
        assert self.reader is not None and self.writer is not None
        body = json.dumps(args, separators=(",", ":")).encode()
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.used = time.perf_counter()
        status = int(head[9:12])
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if match is None:
            raise RuntimeError(f"no Content-Length in the answer: {head!r}")
        return status, await self.reader.readexactly(int(match.group(1)))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


@dataclass
class Tally:
    calls: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)


async def caller_loop(caller: HttpCaller, picker: Picker, stop_at: float, tally: Tally) -> None:
    while time.perf_counter() < stop_at:
        status, body = await caller.call([picker.pick(), picker.pick(), 1])
        if status == 200:
            tally.calls += 1
            tally.retries += int(json.loads(body).get("retries") or 0)
        else:
            tally.failures[_code(body, status)] += 1


def _code(body: bytes, status: int) -> str:
    try:
        return f"{status} {json.loads(body)['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(status)


async def run_callers(
    server: Server, clients: int, distribution: str, seconds: float, upper: int = ACCOUNTS
) -> tuple[float, Tally, float]:
    """Calls per second, the tally, and the client's CPU use (share of one core);
    accounts are drawn from 1..``upper``."""
    path = f"/v1/databases/{DB}/call/transfer"
    callers = [HttpCaller(server, path) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in callers))
    tally = Tally()
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop_at = t0 + seconds
    try:
        await asyncio.gather(
            *(caller_loop(c, Picker(distribution, upper), stop_at, tally) for c in callers)
        )
    finally:
        elapsed = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0) / elapsed
        await asyncio.gather(*(c.close() for c in callers))
    return tally.calls / elapsed, tally, cpu


# -- setup and pgbench -----------------------------------------------------------------------


@dataclass
class Bank:
    pg_name: str
    role: str
    password: str
    socket_dir: Path

    def connect_args(self) -> list[str]:
        return ["-h", str(self.socket_dir), "-p", str(PORT), "-U", self.role, self.pg_name]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}


def publish(server: Server, source: str = MODULE) -> dict[str, Any]:
    with server.client() as http:
        r = http.post(f"/v1/databases/{DB}/module", json={"files": {"bank.py": source}})
        if r.status_code != 201:
            raise SystemExit(f"publish failed: {r.status_code} {r.text}")
        return dict(r.json())


def setup_bank(server: Server, secret: str) -> Bank:
    with server.client() as http:
        http.post("/v1/databases", json={"name": "bank"}).raise_for_status()
        publish(server)
        r = http.post("/v1/query", json={"database": DB, "sql": "SELECT current_database()"})
        r.raise_for_status()
        pg_name = str(r.json()["data"][0][0])
        r = http.post(f"/v1/databases/{DB}/call/transfer", json=[1, 2, 1])
        r.raise_for_status()  # starts the workers
    role = provision.DatabaseRoles(pg_name).role("reducer")
    password = provision.role_password(secret.encode(), role)
    return Bank(pg_name, role, password, EmbeddedPostgres(server.data_dir).socket_dir)


def run_pgbench(
    bank: Bank, script: Path, clients: int, seconds: int
) -> tuple[float, int, int, int]:
    """tps, transactions, failed transactions, retries."""
    cmd = [
        pgbench_binary(),
        "-n",
        "-M",
        "prepared",
        "--max-tries=21",  # the workers' module_serialization_retries (20) + 1
        "-T",
        str(seconds),
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-f",
        str(script),
        "-D",
        f"sender={secrets.token_hex(32)}",
        "-D",
        f"rid={secrets.token_hex(16)}",
        "-D",
        f"ts={datetime.now(UTC).isoformat()}",
        *bank.connect_args(),
    ]
    result = subprocess.run(cmd, env=bank.env(), capture_output=True, text=True, check=False)
    if result.returncode not in (0, 2) or "tps = " not in result.stdout:
        raise SystemExit(f"pgbench failed:\n{result.stdout}\n{result.stderr}")

    def number(pattern: str) -> int:
        found = re.search(pattern, result.stdout)
        return int(found.group(1)) if found else 0

    tps = float(re.search(r"tps = ([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    return (
        tps,
        number(r"number of transactions actually processed: (\d+)"),
        number(r"number of failed transactions: (\d+)"),
        number(r"total number of retries: (\d+)"),
    )


# -- main ------------------------------------------------------------------------------------


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) so far of process ``pid`` and of its live children."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(p: int | str) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # it ended meanwhile
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += (task / "children").read_text().split()
    return seconds(pid), sum(seconds(c) for c in children)


@dataclass
class Case:
    reducer_tps: list[float] = field(default_factory=list)
    pgbench_tps: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    """CPU time of the server process per call (ms)."""
    worker_ms: list[float] = field(default_factory=list)
    """CPU time of its child processes (the module workers) per call (ms)."""
    failures: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    retries: int = 0
    pgbench_txns: int = 0
    pgbench_failed: int = 0
    pgbench_retries: int = 0


def measure(
    server: Server, bank: Bank, scripts: dict[str, Path], args: argparse.Namespace
) -> dict[tuple[str, int], Case]:
    cases: dict[tuple[str, int], Case] = {}
    for distribution in scripts:  # warm up both sides
        asyncio.run(run_callers(server, 8, distribution, 1.0))
        run_pgbench(bank, scripts[distribution], 8, 1)
    for round_no in range(args.rounds):
        for distribution, script in scripts.items():
            for clients in args.callers:
                case = cases.setdefault((distribution, clients), Case())
                sides = ["reducer", "pgbench"]
                for side in sides if round_no % 2 == 0 else sides[::-1]:
                    if side == "reducer":
                        before = _cpu(server.pid)
                        tps, tally, cpu = asyncio.run(
                            run_callers(server, clients, distribution, args.time)
                        )
                        after = _cpu(server.pid)
                        per_call = 1000 / max(tally.calls, 1)
                        case.server_ms.append((after[0] - before[0]) * per_call)
                        case.worker_ms.append((after[1] - before[1]) * per_call)
                        case.reducer_tps.append(tps)
                        case.client_cpu.append(cpu)
                        case.failures.update(tally.failures)
                        case.calls += tally.calls
                        case.retries += tally.retries
                    else:
                        tps, txns, failed, retries = run_pgbench(bank, script, clients, args.time)
                        case.pgbench_tps.append(tps)
                        case.pgbench_txns += txns
                        case.pgbench_failed += failed
                        case.pgbench_retries += retries
                print(
                    f"  {distribution:<8} {clients:>3} callers: reducer"
                    f" {case.reducer_tps[-1]:8.0f}/s  pgbench {case.pgbench_tps[-1]:8.0f}/s",
                    flush=True,
                )
        print(f"round {round_no + 1}/{args.rounds} done", flush=True)
    return cases


def report(cases: dict[tuple[str, int], Case], args: argparse.Namespace) -> None:
    print(
        f"\ntransfer on {ACCOUNTS:,} accounts, SERIALIZABLE, {args.time} s per run,"
        f" median of {args.rounds} round(s)"
    )
    print(
        f"{'accounts':<8} {'callers':>7} {'reducer tps':>12} {'pgbench tps':>12} {'ratio':>6}"
        f" {'client cpu':>10} {'server ms':>9} {'workers ms':>10}"
        f" {'failed calls':>12} {'retries/call':>12}"
        f" {'pgbench failed':>14} {'pgbench retries/txn':>19}"
    )
    for (distribution, clients), case in cases.items():
        reducer, anchor = statistics.median(case.reducer_tps), statistics.median(case.pgbench_tps)
        failed = sum(case.failures.values())
        print(
            f"{distribution:<8} {clients:>7} {reducer:>12.0f} {anchor:>12.0f}"
            f" {reducer / anchor:>6.2f} {statistics.median(case.client_cpu):>9.0%}"
            f" {statistics.median(case.server_ms):>10.3f}"
            f" {statistics.median(case.worker_ms):>10.3f}"
            f" {failed:>12} {case.retries / max(case.calls, 1):>12.3f}"
            f" {case.pgbench_failed:>14} {case.pgbench_retries / max(case.pgbench_txns, 1):>19.3f}"
        )
        if case.failures:
            print(f"{'':>17} failures: {dict(case.failures)}")
    print("client cpu: this process's CPU time / wall time (1 core = 100%)")
    print("server ms, workers ms: CPU time per call of the server process, of its children")
    print()
    for distribution in ("uniform", "zipf"):
        for clients in args.callers:
            case = cases[(distribution, clients)]
            ratio = statistics.median(case.reducer_tps) / statistics.median(case.pgbench_tps)
            print(f"ratio vs pgbench ({distribution}, {clients} callers): {ratio:.2f}")
    headline = cases.get(("uniform", 8))
    if headline is not None:
        ratio = statistics.median(headline.reducer_tps) / statistics.median(headline.pgbench_tps)
        print(f"ratio vs pgbench (uniform, 8 callers): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--callers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--workers", type=int, default=0, help="module_workers (0: default)")
    args = parser.parse_args()
    secret = secrets.token_urlsafe(32)
    env = {"MILLPOND_SECRET_KEY": secret}
    if args.workers:
        env["MILLPOND_MODULE_WORKERS"] = str(args.workers)
    with running_server(**env) as server, tempfile.TemporaryDirectory() as tmp:
        bank = setup_bank(server, secret)
        scripts = {}
        for distribution, choice in CHOICES.items():
            scripts[distribution] = Path(tmp) / f"transfer_{distribution}.sql"
            scripts[distribution].write_text(PGBENCH_SCRIPT.format(choice=choice))
        cases = measure(server, bank, scripts, args)
    report(cases, args)


if __name__ == "__main__":
    main()
