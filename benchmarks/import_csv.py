"""CSV import and Parquet export, side by side with their anchors.

Starts ``millpond up`` in a subprocess (its own embedded Postgres), writes a CSV of
1,000,000 rows and 10 columns (ints, text, numeric, double, boolean, date, timestamp),
then, interleaved over ``--rounds`` rounds, into fresh tables of the same shape:

* **millpond import**: the SDK uploads the file and waits for the job (sniffing, type
  inference, ``COPY`` in one transaction as the caller's role);
* **psql \\copy**: ``\\copy t FROM file (FORMAT csv, HEADER)`` — the physical limit;
* **pgloader**: Debian's pgloader loading the same file (skipped, with a message, when it
  is not installed: ``apt-get install pgloader``);

then exports the table:

* **millpond parquet export**: the SDK creates the job, waits, downloads the file;
* **COPY TO csv**: ``\\copy (SELECT * FROM t) TO file (FORMAT csv, HEADER)`` — the anchor.

Prints medians and the ratios (anchor time / millpond time: 1.0 is as fast as the anchor),
the import one against psql last.

    python benchmarks/import_csv.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
from _harness import running_server, timed

from millpond import Millpond
from millpond.server.testing import free_port

PSQL = "psql \\copy"


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(42)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", 'quoted "word"', "comma, inside"]
    with path.open("w") as f:
        f.write("id,name,amount,ratio,flag,day,at,qty,code,note\n")
        lines = []
        for i in range(rows):
            word = rng.choice(words)
            name = f'"{word.replace(chr(34), chr(34) * 2)}"' if '"' in word or "," in word else word
            lines.append(
                f"{i},{name},{rng.randint(0, 10**6) / 100},{rng.random():.6e},"
                f"{'true' if i % 3 else 'false'},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d},"
                f"2024-01-{i % 28 + 1:02d} {i % 24:02d}:{i % 60:02d}:{i % 60:02d},"
                f"{rng.randint(-1000, 1000)},C{i % 997:04d},row number {i}\n"
            )
            if len(lines) == 50_000:
                f.writelines(lines)
                lines.clear()
        f.writelines(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    pgloader = shutil.which("pgloader")
    psql = shutil.which("psql")
    if psql is None:
        raise SystemExit("psql is needed for the anchor (apt-get install postgresql-client)")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(MILLPOND_GATEWAY_PORT=str(free_port())) as server,
    ):
        csv_path = Path(tmp) / "data.csv"
        write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"{args.rows} rows, 10 columns, {size_mb:.1f} MB")
        mp = Millpond(api_key=server.key, base_url=server.url, timeout=600)
        mp.databases.create("bench")
        db = "admin/bench"
        pg_name = mp.query(db, "SELECT current_database()").data[0][0]  # type: ignore[index]
        url = server.superuser_url(pg_name)

        # the shape millpond infers is the shape every loader gets
        first = mp.imports.wait(mp.imports.create(db, "shape", file=csv_path).id)
        assert first.state == "DONE", first
        columns = ", ".join(f'"{c.name}" {c.type}' for c in first.tables[0].columns)
        print("inferred:", columns)
        timings: dict[str, list[float]] = {"millpond import": [], PSQL: []}
        if pgloader:
            timings["pgloader"] = []
        else:
            print("pgloader: not installed, skipped (apt-get install pgloader)")

        def millpond_import(table: str) -> None:
            job = mp.imports.create(db, table, file=csv_path)
            job = mp.imports.wait(job.id, poll_interval=0.02)
            assert job.state == "DONE" and job.rows_done == args.rows, job

        def create(table: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE TABLE {table} ({columns})".encode())

        def psql_copy(table: str) -> None:
            subprocess.run(
                [psql, url, "-qc", f"\\copy {table} FROM '{csv_path}' (FORMAT csv, HEADER)"],
                check=True,
            )

        def pgloader_load(table: str) -> None:
            assert pgloader is not None
            parts = urlsplit(url)
            socket_dir = unquote(parts.query.split("host=")[1].split("&")[0])
            password = quote(unquote(parts.password or ""), safe="")
            target = (
                f"postgresql://{parts.username}:{password}@unix:{socket_dir}:5432/"
                f"{pg_name}?tablename={table}"
            )
            command = Path(tmp) / "load.pgl"
            command.write_text(
                f"LOAD CSV FROM '{csv_path}' INTO {target}\n"
                "WITH skip header = 1, fields terminated by ',',"
                " fields optionally enclosed by '\"', fields escaped by double-quote,"
                " batch rows = 25000, workers = 2, concurrency = 1;\n"
            )
            done = subprocess.run(
                [pgloader, "--quiet", str(command)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
            with psycopg.connect(url) as conn:
                (n,) = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone() or (0,)
            assert n == args.rows, f"pgloader loaded {n} rows"

        n = 0
        for _ in range(args.rounds):
            order = list(timings)
            random.shuffle(order)
            for name in order:
                n += 1
                table = f"t{n}"
                if name == "millpond import":
                    timings[name].append(timed(lambda t=table: millpond_import(t)))
                    continue
                create(table)
                fn = psql_copy if name == PSQL else pgloader_load
                try:
                    timings[name].append(timed(lambda t=table, f=fn: f(t)))  # type: ignore[misc]
                except RuntimeError as exc:
                    print(f"pgloader failed, skipped: {exc}")
                    timings.pop(name)
                    pgloader = None
        export_timings: dict[str, list[float]] = {"millpond parquet export": [], "COPY TO csv": []}
        out = Path(tmp) / "out"

        def parquet_export() -> None:
            job = mp.exports.create(db, table_name="shape", export_format="parquet")
            mp.exports.wait(job.id, poll_interval=0.02)
            mp.exports.download(job.id, out.with_suffix(".parquet"))

        def copy_csv() -> None:
            subprocess.run(
                [
                    psql,
                    url,
                    "-qc",
                    f"\\copy (SELECT * FROM shape) TO '{out}.csv' (FORMAT csv, HEADER)",
                ],
                check=True,
            )

        for _ in range(args.rounds):
            for name, fn in random.sample(
                [("millpond parquet export", parquet_export), ("COPY TO csv", copy_csv)], 2
            ):
                export_timings[name].append(timed(fn))
        mp.close()

        med = {k: statistics.median(v) for k, v in {**timings, **export_timings}.items() if v}
        for name, value in med.items():
            rate = args.rows / value / 1000
            print(f"{name:>24}: median {value:7.2f} s  ({rate:7.0f} k rows/s)")
        mine = med["millpond import"]
        if "pgloader" in med:
            print(f"ratio vs pgloader: {med['pgloader'] / mine:.2f}")
        export_ratio = med["COPY TO csv"] / med["millpond parquet export"]
        print(f"ratio parquet export vs COPY TO csv: {export_ratio:.2f}")
        psql_ratio = med[PSQL] / mine
        print(f"ratio vs psql \\copy: {psql_ratio:.2f}")


if __name__ == "__main__":
    main()
