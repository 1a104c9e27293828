"""Creating databases: ``POST /v1/databases`` against a bare ``CREATE DATABASE``.

Starts ``millpond up`` in a subprocess (its own embedded Postgres), then, alternating one
by one, ``--count`` times each:

* **millpond create**: the SDK creates a database (its row, its four roles with their
  passwords, the database, its grants and default privileges, the functions taken from
  ``PUBLIC``) and gets its description back;
* **CREATE DATABASE**: a superuser session runs ``CREATE DATABASE … TEMPLATE template0``
  alone — the part no implementation can skip (the anchor).

Prints p50/p99 of each, millpond's own part (the median difference of each pair: the
machine's load moves ``CREATE DATABASE`` itself a lot), and last the ratio of the p50s
(anchor / millpond: 1.0 would be a create that costs nothing beyond Postgres' own).

    python benchmarks/database_create.py [--count 100]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from _harness import percentile, running_server

from millpond import Millpond


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    with running_server() as server:
        mp = Millpond(api_key=server.key, base_url=server.url, timeout=120)
        mp.databases.create("warm-up")  # the first create's connections and imports
        with psycopg.connect(server.superuser_url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bare_warm_up TEMPLATE template0")
            millpond: list[float] = []
            bare: list[float] = []
            for i in range(args.count):
                started = time.perf_counter()
                mp.databases.create(f"db-{i}")
                millpond.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                conn.execute(
                    f"CREATE DATABASE bare_{i} TEMPLATE template0 ENCODING 'UTF8'".encode()
                )
                bare.append((time.perf_counter() - started) * 1000)
        mp.close()
    for name, values in (("millpond create", millpond), ("CREATE DATABASE", bare)):
        print(
            f"{name:>16}: p50 {statistics.median(values):7.1f} ms"
            f"  p99 {percentile(values, 0.99):7.1f} ms  (n={len(values)})"
        )
    extra = statistics.median(m - b for m, b in zip(millpond, bare, strict=True))
    print(f"millpond's own part (p50 of create - CREATE DATABASE, pair by pair): {extra:.1f} ms")
    ratio = statistics.median(bare) / statistics.median(millpond)
    print(f"ratio CREATE DATABASE vs millpond create (p50): {ratio:.2f}")


if __name__ == "__main__":
    main()
