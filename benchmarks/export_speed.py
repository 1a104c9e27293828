"""Exports side by side with ``psql``: CSV and Parquet export jobs, and the streamed CSV
export, against ``\\copy … TO``.

Starts ``millpond up`` in a subprocess (its own embedded Postgres), fills a table of
``--rows`` rows and 10 columns (the shape of ``import_csv.py``: ints, text, numeric,
double, boolean, date, timestamp), then, interleaved in random order over ``--rounds``
rounds:

* **millpond csv** / **millpond parquet**: the SDK creates the export job, waits for it
  (polling every 20 ms) and downloads the file — what a user waits for;
* **millpond csv stream**: ``mp.exports.stream`` — one request whose answer is the CSV,
  written to the file as it comes (``POST /v1/exports/stream``);
* **psql \\copy csv**: ``\\copy (SELECT * FROM t) TO file (FORMAT csv, HEADER)`` through
  the same Postgres — the anchor of both (the issue's bars: CSV ≥ 0.8x, Parquet ≥ 0.6x).

While each millpond export runs, the server process' RSS is sampled every 10 ms: the
growth printed is the peak above the RSS just before the job (bar: < 50 MB), for the
first export of each kind (which also loads its libraries: pyarrow for Parquet) and the
largest of the later ones.

Prints medians, the RSS growth and the ratios (anchor time / millpond time: 1.0 is as fast
as psql), the streamed CSV one last: it is the CSV export to use when nothing asks for a
job.

    python benchmarks/export_speed.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from _harness import rss_kb, running_server, timed

from millpond import Millpond

PSQL = "psql \\copy csv"
STREAM = "millpond csv stream"
FILL = """
CREATE TABLE t AS SELECT
    i::int8 AS id,
    (ARRAY['alpha', 'beta', 'gamma', 'quoted "word"', 'comma, inside'])[i % 5 + 1] AS name,
    round((i::int8 * 7919 % 1000000) / 100.0, 2)::numeric(12, 2) AS amount,
    (i * 0.000731)::float8 AS ratio,
    i % 3 <> 0 AS flag,
    date '2024-01-01' + (i % 365) AS day,
    timestamp '2024-01-01' + make_interval(secs => i) AS at,
    (i % 2001 - 1000)::int4 AS qty,
    'C' || lpad((i % 997)::text, 4, '0') AS code,
    'row number ' || i AS note
FROM generate_series(1, {rows}) i
"""


def _rss_kb(pid: int) -> int:
    kb = rss_kb(pid)
    if kb is None:
        raise RuntimeError(f"the server (pid {pid}) has exited")
    return kb


class PeakRss:
    """The largest RSS of ``pid`` while the block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = _rss_kb(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_kb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kb(self.pid))

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1024


def _seconds(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    psql = shutil.which("psql")
    if psql is None:
        raise SystemExit("psql is needed for the anchor (apt-get install postgresql-client)")

    with tempfile.TemporaryDirectory() as tmp, running_server() as server:
        mp = Millpond(api_key=server.key, base_url=server.url, timeout=600)
        mp.databases.create("bench")
        db = "admin/bench"
        mp.query(db, FILL.format(rows=args.rows), timeout=600)
        pg_name = mp.query(db, "SELECT current_database()").data[0][0]  # type: ignore[index]
        url = server.superuser_url(pg_name)
        out = Path(tmp) / "out"
        growth: dict[str, list[float]] = {"millpond csv": [], "millpond parquet": [], STREAM: []}
        sizes: dict[str, int] = {}

        def millpond(fmt: str) -> Callable[[], None]:
            def run() -> None:
                with PeakRss(server.pid) as rss:
                    job = mp.exports.create(db, table_name="t", export_format=fmt)  # type: ignore[arg-type]
                    done = mp.exports.wait(job.id, poll_interval=0.02, raise_on_failure=True)
                    path = mp.exports.download(job.id, out.with_suffix(f".{fmt}"))
                assert done.rows_done == args.rows, done
                growth[f"millpond {fmt}"].append(rss.growth_mb)
                sizes[f"millpond {fmt}"] = path.stat().st_size

            return run

        def stream() -> None:
            with PeakRss(server.pid) as rss:
                done = mp.exports.stream(db, out.with_suffix(".stream.csv"), table_name="t")
            growth[STREAM].append(rss.growth_mb)
            sizes[STREAM] = done.size_bytes

        def psql_copy() -> None:
            target = out.with_suffix(".psql.csv")
            subprocess.run(
                [psql, url, "-qc", f"\\copy (SELECT * FROM t) TO '{target}' (FORMAT csv, HEADER)"],
                check=True,
            )
            sizes[PSQL] = target.stat().st_size

        runs = {
            "millpond csv": millpond("csv"),
            "millpond parquet": millpond("parquet"),
            STREAM: stream,
            PSQL: psql_copy,
        }
        timings: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name in random.sample(list(runs), len(runs)):
                timings[name].append(timed(runs[name]))
        mp.close()
        assert sizes[STREAM] == sizes["millpond csv"] == sizes[PSQL], sizes

        print(f"{args.rows} rows, 10 columns; {args.rounds} rounds")
        med = {name: statistics.median(values) for name, values in timings.items()}
        for name, value in med.items():
            extra = ""
            if name in growth:  # the first export of a format also loads its libraries
                first, *later = growth[name]
                most = max(later, default=0)
                extra = f", RSS growth {first:.0f} MB first, then at most {most:.0f} MB"
            print(
                f"{name:>19}: median {value:6.2f} s ({args.rows / value / 1000:5.0f} k rows/s,"
                f" {sizes[name] / 1e6:.1f} MB{extra}; runs {_seconds(timings[name])})"
            )
        print(f"ratio parquet export vs psql \\copy csv: {med[PSQL] / med['millpond parquet']:.2f}")
        print(f"ratio csv export job vs psql \\copy csv: {med[PSQL] / med['millpond csv']:.2f}")
        print(f"ratio csv export stream vs psql \\copy csv: {med[PSQL] / med[STREAM]:.2f}")


if __name__ == "__main__":
    main()
