"""HTTP query round trip vs a direct psycopg connection, side by side.

Starts ``millpond up`` in a subprocess (its own embedded Postgres in a temporary data
directory), creates a database with a 1,000-row table, then times the same small SELECT
(one row by primary key):

* **http**: ``POST /v1/query`` over a kept-alive ``httpx.Client`` (what the SDK does);
* **direct**: a persistent psycopg 3 connection to the same database (the anchor);
* **direct+connect**: a new psycopg connection per query (what a script without a pool
  pays; for context).

Interleaves the three in rounds so drift hits all alike; prints per-method medians and
p99, then the ratio http/direct as the last line.

    python benchmarks/query_roundtrip.py [--iterations 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import psycopg
from _harness import create_database, percentile, running_server

SQL = "SELECT id, name, score FROM items WHERE id = {id}"
SETUP = (
    "CREATE TABLE items (id int PRIMARY KEY, name text, score numeric);"
    "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 1000) g"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()

    with running_server() as server:
        pg_name = create_database(server, "bench", SETUP)
        url = server.superuser_url(pg_name)
        with server.client() as http, psycopg.connect(url, autocommit=True) as direct:

            def via_http(i: int) -> None:
                r = http.post(
                    "/v1/query", json={"database": "admin/bench", "sql": SQL.format(id=i)}
                )
                assert r.status_code == 200 and r.json()["data"], r.text

            def via_direct(i: int) -> None:
                assert direct.execute(SQL.format(id=i).encode()).fetchall()

            def via_connect(i: int) -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    assert conn.execute(SQL.format(id=i).encode()).fetchall()

            methods = {"http": via_http, "direct": via_direct, "direct+connect": via_connect}
            timings: dict[str, list[float]] = {name: [] for name in methods}
            for fn in methods.values():  # warm up pools and caches
                for i in range(1, 50):
                    fn(i)
            for n in range(args.iterations):
                order = list(methods.items())
                random.shuffle(order)
                for name, fn in order:
                    if name == "direct+connect" and n % 10:
                        continue  # slow; sample one round in ten
                    i = random.randint(1, 1000)
                    t0 = time.perf_counter()
                    fn(i)
                    timings[name].append((time.perf_counter() - t0) * 1000)
            for name, values in timings.items():
                print(
                    f"{name:>15}: median {statistics.median(values):.3f} ms"
                    f"  p99 {percentile(values, 0.99):.3f} ms  (n={len(values)})"
                )
            med_http = statistics.median(timings["http"])
            med_direct = statistics.median(timings["direct"])
            med_connect = statistics.median(timings["direct+connect"])
            print(f"ratio http vs direct+connect: {med_http / med_connect:.2f}")
            print(f"ratio vs direct psycopg connection: {med_http / med_direct:.2f}")


if __name__ == "__main__":
    main()
