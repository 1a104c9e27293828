"""Publishing a new module version while 8 callers call ``transfer`` without pause.

Same server, module and 10,000 accounts as ``reducer_transfer.py``. Callers are asyncio
tasks in this process (kept-alive HTTP/1.1, the minimal client of
``reducer_transfer.py``), each recording when every call ended and how. After a
``--before`` second baseline, three versions are published one after the other, with
``--between`` seconds between them:

* v2: the reducer's code changes (no migration);
* v3: a new table (``audit``: additive);
* v4: a column appended to ``accounts`` (``note text``, nullable: additive; its
  ``ALTER TABLE`` takes the table's lock while the calls run).

Prints each publish's wall time, its ``swap_ms`` (the replica starting the new workers)
and diff, the failed calls (must be 0), and calls per second before, during each publish
(from the request to its answer) and after.

    python benchmarks/reducer_publish.py [--callers 8] [--before 3] [--between 3]

Last line: ``ratio calls/s during publish vs before: X.XX``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from _harness import Server, running_server
from reducer_transfer import DB, MODULE, HttpCaller, Picker, _code, setup_bank

VERSIONS = {
    2: MODULE.replace("# VERSION 1", "# VERSION 2\n    assert amount > 0"),
    3: MODULE.replace("# VERSION 1", "# VERSION 3")
    + "\n\n@table(name='audit')\nclass Audit:\n    id: int = primary_key(auto_inc=True)\n"
    "    note: str\n",
}
VERSIONS[4] = VERSIONS[3].replace(
    "    balance: int\n", "    balance: int\n    note: str | None = None\n"
)


@dataclass
class Calls:
    ends: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    failure_times: list[float] = field(default_factory=list)


async def call_until(server: Server, stop: asyncio.Event, calls: Calls) -> None:
    caller = HttpCaller(server, f"/v1/databases/{DB}/call/transfer")
    await caller.connect()
    picker = Picker("uniform")
    try:
        while not stop.is_set():
            status, body = await caller.call([picker.pick(), picker.pick(), 1])
            now = time.perf_counter()
            if status == 200:
                calls.ends.append(now)
            else:
                calls.failures[_code(body, status)] += 1
                calls.failure_times.append(now)
    finally:
        await caller.close()


@dataclass
class Publish:
    version: int
    started: float
    ended: float
    result: dict[str, Any]


async def publish_all(server: Server, args: argparse.Namespace) -> tuple[Calls, list[Publish]]:
    calls, stop = Calls(), asyncio.Event()
    tasks = [asyncio.create_task(call_until(server, stop, calls)) for _ in range(args.callers)]
    publishes: list[Publish] = []
    headers = {"Authorization": f"Bearer {server.key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as http:
        await asyncio.sleep(args.before)
        for version, source in VERSIONS.items():
            started = time.perf_counter()
            r = await http.post(f"/v1/databases/{DB}/module", json={"files": {"bank.py": source}})
            ended = time.perf_counter()
            if r.status_code != 201:
                raise SystemExit(f"publishing v{version} failed: {r.status_code} {r.text}")
            publishes.append(Publish(version, started, ended, r.json()))
            await asyncio.sleep(args.between)
    stop.set()
    await asyncio.gather(*tasks)
    return calls, publishes


def rate(ends: list[float], start: float, end: float) -> float:
    return sum(1 for t in ends if start <= t < end) / (end - start) if end > start else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--before", type=float, default=3.0, help="seconds of baseline")
    parser.add_argument("--between", type=float, default=3.0, help="seconds between publishes")
    args = parser.parse_args()
    secret = secrets.token_urlsafe(32)
    with running_server(MILLPOND_SECRET_KEY=secret) as server:
        setup_bank(server, secret)
        calls, publishes = asyncio.run(publish_all(server, args))
    first = min(calls.ends)
    baseline = rate(calls.ends, first, publishes[0].started)
    print(f"{args.callers} callers, uniform transfers; baseline {baseline:.0f} calls/s")
    print(
        f"{'version':>7} {'publish ms':>10} {'swap_ms':>8} {'calls/s during':>14}"
        f" {'calls/s next 1 s':>16}  diff"
    )
    during = []
    for p in publishes:
        in_window = rate(calls.ends, p.started, p.ended)
        during.append(in_window)
        diff = p.result.get("diff") or "(no migration)"
        print(
            f"{p.version:>7} {(p.ended - p.started) * 1000:>10.1f}"
            f" {p.result.get('swap_ms') or 0:>8.1f} {in_window:>14.0f}"
            f" {rate(calls.ends, p.ended, p.ended + 1):>16.0f}  {json.dumps(diff)}"
        )
    failed = sum(calls.failures.values())
    print(f"calls: {len(calls.ends)} committed, {failed} failed {dict(calls.failures) or ''}")
    windows = [(p.started, p.ended) for p in publishes]
    in_windows = sum(1 for t in calls.failure_times if any(a <= t < b for a, b in windows))
    if failed:
        print(f"  of the failures, {in_windows} ended inside a publish window")
    ratio = statistics.median(during) / baseline
    print(f"ratio calls/s during publish vs before: {ratio:.2f}")


if __name__ == "__main__":
    main()
