"""``POST /v1/query`` under concurrency: millpond vs the least such an API does, side by side.

Starts ``millpond up`` (its own embedded Postgres) and, on the same database, the anchor
``_minimal_query.py`` (Starlette + psycopg pool, a key from a dict, the same JSON shape,
no session reset or limits: see its docstring), both on uvicorn with one worker. ``wrk``
(Debian's: ``apt-get install wrk``) then sends point lookups by primary key, a random id
each, at 1, 8 and 32 connections, to each in turn, round after round. Prints requests/s
and p50/p99 per side, the CPU a request costs each side's server process and Postgres
(read from ``/proc`` around each run), the ratio millpond/anchor per concurrency, and as
the last line the ratio at 8 connections (issue 13's bar: ≥ 0.8 at every concurrency).

    python benchmarks/http_query_load.py [--time 5] [--rounds 3] [--connections 1,8,32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import cpu_seconds, create_database, free_port, running_server

SETUP = (
    "CREATE TABLE items (id int PRIMARY KEY, name text, score numeric);"
    "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 10000) g"
)
LUA = """
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  local id = math.random(1, 10000)
  return wrk.format(nil, nil, nil,
    '{"database": "%(db)s", "sql": "SELECT id, name, score FROM items WHERE id = ' .. id .. '"}')
end
"""


def _wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) of one wrk run."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _ms(out, "50%"), _ms(out, "99%")


def _ms(out: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
    assert match is not None, out
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _anchor(dsn: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "_minimal_query:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=Path(__file__).parent,
        env={**os.environ, "MINIMAL_DSN": dsn, "MINIMAL_KEY": key},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/v1/query", content=b"{}", timeout=2)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the anchor did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32]
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    costs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with running_server() as server, tempfile.TemporaryDirectory() as tmp:
        pg_name = create_database(server, "load", SETUP)
        script = Path(tmp) / "post.lua"
        script.write_text(LUA % {"key": server.key, "db": "admin/load"})
        proc, anchor_url = _anchor(server.superuser_url(pg_name), server.key)
        groups = {
            "millpond": lambda pid, _: pid == server.pid,
            "anchor": lambda pid, _: pid == proc.pid,
            "Postgres": lambda _, command: command.startswith("postgres"),
        }
        try:
            sides = {"millpond": f"{server.url}/v1/query", "anchor": f"{anchor_url}/v1/query"}
            for url in sides.values():  # warm up both
                _wrk(url, script, 8, 1)
            for round_no in range(args.rounds):
                for connections in args.connections:
                    order = list(sides) if round_no % 2 == 0 else list(sides)[::-1]
                    for side in order:
                        before = cpu_seconds(groups)
                        got = _wrk(sides[side], script, connections, args.time)
                        after = cpu_seconds(groups)
                        results.setdefault((side, connections), []).append(got)
                        requests = got[0] * args.time
                        cost = (
                            (after[side] - before[side]) / requests * 1e6,
                            (after["Postgres"] - before["Postgres"]) / requests * 1e6,
                        )
                        costs.setdefault((side, connections), []).append(cost)
                        print(
                            f"  round {round_no + 1} {side:>8} c={connections:<3} "
                            f"{got[0]:8.0f}/s p50 {got[1]:6.2f} ms p99 {got[2]:7.2f} ms"
                            f"  CPU a request: server {cost[0]:4.0f} µs,"
                            f" Postgres {cost[1]:4.0f} µs",
                            flush=True,
                        )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"\nPOST /v1/query, point lookups, wrk -t1, {args.time} s per run, median of "
        f"{args.rounds} round(s)"
    )
    print(
        f"{'conns':>5} {'millpond/s':>11} {'anchor/s':>9} {'ratio':>6} "
        f"{'p50 ms (m/a)':>14} {'p99 ms (m/a)':>16}"
    )
    ratios = {}
    for connections in args.connections:
        ours, base = results[("millpond", connections)], results[("anchor", connections)]
        med = [statistics.median(r[i] for r in ours) for i in range(3)]
        ref = [statistics.median(r[i] for r in base) for i in range(3)]
        ratios[connections] = med[0] / ref[0]
        print(
            f"{connections:>5} {med[0]:>11.0f} {ref[0]:>9.0f} {ratios[connections]:>6.2f} "
            f"{med[1]:>6.2f}/{ref[1]:<7.2f} {med[2]:>7.2f}/{ref[2]:<8.2f}"
        )
    print("CPU a request, median (µs): server / Postgres, millpond vs anchor")
    for connections in args.connections:
        ours_cost, base_cost = costs[("millpond", connections)], costs[("anchor", connections)]
        m = [statistics.median(c[i] for c in ours_cost) for i in range(2)]
        a = [statistics.median(c[i] for c in base_cost) for i in range(2)]
        print(f"{connections:>5} {m[0]:6.0f} / {m[1]:4.0f}  vs  {a[0]:6.0f} / {a[1]:4.0f}")
    for connections, ratio in ratios.items():
        print(f"ratio vs minimal endpoint ({connections} connections): {ratio:.2f}")
    headline = ratios.get(8, next(iter(ratios.values())))
    print(f"ratio vs minimal endpoint (8 connections): {headline:.2f}")


if __name__ == "__main__":
    main()
