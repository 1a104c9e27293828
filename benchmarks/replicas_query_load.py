"""``POST /v1/query`` through two replicas against one: what a second ``millpond up`` on
the same Postgres adds.

Starts a Postgres (embedded, in a temporary directory, standing in for an external one)
and two ``millpond up`` replicas on it (the same secret, their own ports), makes a table of
10,000 rows, then, round after round, ``wrk`` (Debian's: ``apt-get install wrk``) sends
point lookups by primary key:

* **one replica**: one ``wrk`` with ``--connections`` connections to replica A;
* **two replicas**: two ``wrk`` at once, half the connections each, one per replica (what
  a load balancer in front of both would do).

Prints requests/s and p99 per side, and last the ratio two/one (issue 14's bar: ≥ 1.6 on
a machine with enough cores; the processes of both replicas, Postgres and the load
generators share this machine's cores).

    python benchmarks/replicas_query_load.py [--time 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _harness import create_database, running_server
from http_query_load import LUA, SETUP, _wrk

from millpond.server.postgres.embedded import EmbeddedPostgres

SECRET = "replicas-benchmark-secret-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    half = max(1, args.connections // 2)
    one: list[tuple[float, float]] = []
    two: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg")
        postgres.start()
        env = {"MILLPOND_DATABASE_URL": postgres.url(), "MILLPOND_SECRET_KEY": SECRET}
        try:
            with running_server(**env) as a, running_server(**env) as b:
                create_database(a, "load", SETUP)
                script = Path(tmp) / "post.lua"
                script.write_text(LUA % {"key": a.key, "db": "admin/load"})
                urls = [f"{a.url}/v1/query", f"{b.url}/v1/query"]
                for url in urls:  # warm up both (pools, caches)
                    _wrk(url, script, 8, 1)
                for round_no in range(args.rounds):
                    for side in ("one", "two") if round_no % 2 == 0 else ("two", "one"):
                        if side == "one":
                            rps, _, p99 = _wrk(urls[0], script, args.connections, args.time)
                            one.append((rps, p99))
                        else:
                            with ThreadPoolExecutor(2) as pool:
                                runs = list(
                                    pool.map(lambda u: _wrk(u, script, half, args.time), urls)
                                )
                            rps, p99 = sum(r[0] for r in runs), max(r[2] for r in runs)
                            two.append((rps, p99))
                        print(
                            f"  round {round_no + 1} {side} replica(s): {rps:8.0f}/s"
                            f" p99 {p99:7.2f} ms",
                            flush=True,
                        )
        finally:
            postgres.stop()
    for name, runs in (("one replica", one), ("two replicas", two)):
        rps = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        print(f"{name:>13}: {rps:8.0f} req/s, p99 {p99:7.2f} ms (median of {len(runs)})")
    ratio = statistics.median(r[0] for r in two) / statistics.median(r[0] for r in one)
    print(f"ratio two replicas vs one ({args.connections} connections): {ratio:.2f}")


if __name__ == "__main__":
    main()
