"""psycopg 3's own test suite, run twice against one millpond database: directly on
Postgres, then through the gateway, as the same role — and the tests whose outcome
differs.

The suite is not in psycopg's published packages: pass a checkout of its repository at a
tag near the installed version (``git clone https://github.com/psycopg/psycopg; git -C
psycopg checkout 3.3.4``). The script makes a virtualenv for it (``--venv``, kept between
runs) with the installed psycopg's version and the suite's test dependencies, starts
``millpond up`` with a known secret (so it can log in to Postgres directly as the
database's owner role, the role the gateway uses for the owner), creates a database,
then runs::

    pytest tests -p no:randomly --test-dsn <direct | gateway> --junitxml ...

(the suite keeps pytest's cache in the checkout: it needs it).

Prints each side's counts, every test that passes directly but not through the gateway
(with the first line of its failure), the reverse count, and last the number of tests
that pass directly but not through the gateway (the issue's bar: 0).

    python benchmarks/gateway_psycopg_suite.py --suite ../psycopg [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
from _harness import create_database, running_server

from millpond.server.postgres.provision import role_password
from millpond.server.testing import free_port

SECRET = "gateway-suite-secret-0123456789"
DEPENDENCIES = ["anyio>=4.0", "pproxy>=2.7", "pytest>=6.2.5", "pytest-timeout"]


def suite_python(venv: Path) -> Path:
    """An interpreter with the installed psycopg's version and the suite's test needs."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    version = psycopg.__version__
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"psycopg[binary,pool]=={version}",
            *DEPENDENCIES,
        ],
        check=True,
    )
    return python


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """test id → (passed | failed | skipped, the first line of why)."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome, why = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, why = "failed", (child.get("message") or "").splitlines()[0:1]
                why = why[0] if why else ""
                break
            if child.tag == "skipped":
                outcome, why = "skipped", child.get("message") or ""
        found[test] = (outcome, why[:160])
    return found


def run_suite(python: Path, suite: Path, dsn: str, report: Path, extra: list[str]) -> None:
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            *([] if any(not a.startswith("-") for a in extra) else ["tests"]),
            "-q",
            "-p",
            "no:randomly",
            "-o",
            "timeout=120",
            "--test-dsn",
            dsn,
            f"--junitxml={report}",
            *extra,
        ],
        cwd=suite,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "(no output)")
    if not report.exists():
        raise SystemExit(f"the suite did not run:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", type=Path, required=True, help="a psycopg checkout")
    parser.add_argument(
        "--venv", type=Path, default=Path(tempfile.gettempdir()) / "millpond-psycopg-suite"
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to both runs")
    args = parser.parse_args()
    suite = args.suite.resolve()
    if not (suite / "tests" / "fix_db.py").exists():
        raise SystemExit(f"{suite} is not a psycopg checkout (no tests/fix_db.py)")
    python = suite_python(args.venv)
    gateway_port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            MILLPOND_SECRET_KEY=SECRET, MILLPOND_GATEWAY_PORT=str(gateway_port)
        ) as server,
    ):
        pg_name = create_database(server, "suite", "SELECT 1")
        role = f"{pg_name}_owner"
        superuser = urlsplit(server.superuser_url(pg_name))
        socket_dir = parse_qs(superuser.query)["host"][0]
        direct = psycopg.conninfo.make_conninfo(
            host=socket_dir,
            port=superuser.port or 5432,
            dbname=pg_name,
            user=role,
            password=role_password(SECRET.encode(), role),
        )
        gateway = psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=gateway_port,
            dbname="admin/suite",
            user="admin",
            password=server.key,
            sslmode="disable",
        )
        with psycopg.connect(direct) as conn, psycopg.connect(gateway) as via:
            same = conn.execute("SELECT current_user").fetchone()
            assert same == via.execute("SELECT current_user").fetchone() == (role,), same
        results = {}
        for side, dsn in (("direct", direct), ("gateway", gateway)):
            report = Path(tmp) / f"{side}.xml"
            print(f"running psycopg's suite {side} ...", flush=True)
            run_suite(python, suite, dsn, report, args.pytest_args)
            results[side] = outcomes(report)
    for side, found in results.items():
        counts = {o: sum(1 for v, _ in found.values() if v == o) for o in ("passed", "failed")}
        skipped = sum(1 for v, _ in found.values() if v == "skipped")
        print(f"{side:>8}: {counts['passed']} passed, {counts['failed']} failed, {skipped} skipped")
    direct_r, gateway_r = results["direct"], results["gateway"]
    worse = sorted(
        t
        for t, (o, _) in direct_r.items()
        if o == "passed" and gateway_r.get(t, ("missing", ""))[0] != "passed"
    )
    better = [
        t
        for t, (o, _) in gateway_r.items()
        if o == "passed" and direct_r.get(t, ("", ""))[0] != "passed"
    ]
    for test in worse:
        outcome, why = gateway_r.get(test, ("missing", ""))
        print(f"  {outcome} through the gateway only: {test}: {why}")
    print(f"tests that pass through the gateway only: {len(better)}")
    print(f"tests that pass directly but not through the gateway: {len(worse)}")


if __name__ == "__main__":
    main()
