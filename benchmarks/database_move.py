"""Moving a database between two clusters (``POST …/move``): its downtime, beside the
same copy made by hand.

Starts a ``millpond up`` (its embedded Postgres is the home cluster) and a second
embedded Postgres, registers it as the cluster ``second``, and makes a database of
``--rows`` rows (a table with a primary key and a text column, ~100 bytes a row). Then,
round after round, it moves the database to ``second`` and back, while a prober runs
``SELECT 1`` on it through the HTTP API every 10 ms; and, as the anchor, copies the same
database between the same two Postgres by hand: ``pg_dump --format=custom`` into a file,
``CREATE DATABASE``, ``pg_restore --single-transaction`` (the tools a move runs, without
its fence, roles, grants and switch).

Prints per direction the move's ``downtime_ms`` (its own measure: from refusing the
database to serving it on the target), the longest run of failed probes (what a client
saw), the hand copy's time, and last the ratio hand copy / move downtime (1.0: the move
costs nothing beyond the copy).

    python benchmarks/database_move.py [--rows 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
from _harness import create_database, running_server

from millpond.server.postgres.embedded import EmbeddedPostgres, bin_dir

SETUP = """
CREATE TABLE items (id int8 PRIMARY KEY, label text NOT NULL, made timestamptz NOT NULL);
INSERT INTO items SELECT i, md5(i::text) || md5((i * 7)::text), now() FROM
generate_series(1, {rows}) AS i;
"""


class Prober(threading.Thread):
    """``SELECT 1`` every 10 ms; the longest stretch without a 200, in seconds."""

    def __init__(self, http: httpx.Client, database: str) -> None:
        super().__init__(daemon=True)
        self.http = http
        self.database = database
        self.stop = threading.Event()
        self.longest = 0.0
        self.failed = 0

    def run(self) -> None:
        down_since: float | None = None
        while not self.stop.is_set():
            now = time.perf_counter()
            try:
                ok = (
                    self.http.post(
                        "/v1/query", json={"database": self.database, "sql": "SELECT 1"}
                    ).status_code
                    == 200
                )
            except httpx.HTTPError:
                ok = False
            if ok and down_since is not None:
                self.longest = max(self.longest, now - down_since)
                down_since = None
            elif not ok:
                self.failed += 1
                down_since = down_since or now
            time.sleep(0.01)


def hand_copy(source_url: str, target: EmbeddedPostgres, folder: Path) -> float:
    """pg_dump into a file, CREATE DATABASE on ``target``, pg_restore: seconds."""
    archive = folder / "hand.dump"
    started = time.perf_counter()
    subprocess.run(
        [str(bin_dir() / "pg_dump"), "--format=custom", f"--file={archive}", source_url],
        check=True,
    )
    with psycopg.connect(target.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE hand_copy")
    subprocess.run(
        [
            str(bin_dir() / "pg_restore"),
            "--single-transaction",
            "--no-owner",
            "--no-acl",
            f"--dbname={target.url('hand_copy')}",
            str(archive),
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    with psycopg.connect(target.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE hand_copy")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    moves: dict[str, list[float]] = {"second": [], "default": []}
    seen: dict[str, list[float]] = {"second": [], "default": []}
    copies: list[float] = []
    sizes: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        second = EmbeddedPostgres(Path(tmp) / "second")
        second.start()
        try:
            with running_server(MILLPOND_PLACEMENT="home") as server, server.client() as http:
                http.post(
                    "/v1/clusters", json={"url": second.url(), "name": "second"}
                ).raise_for_status()
                pg_name = create_database(server, "moved", SETUP.format(rows=args.rows))
                home = EmbeddedPostgres(server.data_dir)
                for n in range(args.rounds):
                    for target in ("second", "default"):
                        prober = Prober(server.client(), "admin/moved")
                        prober.start()
                        r = http.post(
                            "/v1/databases/admin/moved/move",
                            json={"cluster": target},
                            timeout=600,
                        )
                        r.raise_for_status()
                        time.sleep(0.2)  # the prober's first answers after the switch
                        prober.stop.set()
                        prober.join()
                        moves[target].append(r.json()["downtime_ms"])
                        seen[target].append(prober.longest * 1000)
                        sizes.append(r.json()["bytes"])
                    copies.append(hand_copy(home.url(pg_name), second, Path(tmp)) * 1000)
                    print(f"round {n + 1}/{args.rounds} done", flush=True)
        finally:
            second.stop()
    print(f"\n{args.rows:,} rows, archive {statistics.median(sizes) / 1e6:.1f} MB")
    for target, label in (("second", "home → second"), ("default", "second → home")):
        print(
            f"move {label}: downtime median {statistics.median(moves[target]):8.1f} ms"
            f" (runs {', '.join(f'{v:.0f}' for v in moves[target])});"
            f" longest failed probing {statistics.median(seen[target]):8.1f} ms"
        )
    print(
        f"hand copy (pg_dump + CREATE DATABASE + pg_restore): median"
        f" {statistics.median(copies):8.1f} ms (runs {', '.join(f'{v:.0f}' for v in copies)})"
    )
    ratio = statistics.median(copies) / statistics.median(moves["second"])
    print(f"ratio hand copy vs move downtime (home → second): {ratio:.2f}")


if __name__ == "__main__":
    main()
