"""A newcomer's first start, and a restart: ``./scripts/up`` from a fresh clone.

Clones this checkout (its committed state) into a temporary directory, runs
``./scripts/up`` there (the README's first command: a virtualenv, the install, an
``initdb``, the server) and times it until ``/v1/health`` answers; stops it with Ctrl-C,
then starts it again and times the warm restart (issue 14's bar: under 3 s when nothing
changed). The install comes from the package index (or pip's cache) as a user's would.

    python benchmarks/first_start.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from millpond.server.testing import free_port

ROOT = Path(__file__).resolve().parents[1]


def timed_start(checkout: Path, port: int, env: dict[str, str]) -> float:
    """Seconds from ``./scripts/up`` to a healthy server; the server is stopped after."""
    started = time.monotonic()
    proc = subprocess.Popen(
        ["./scripts/up", "--port", str(port), "--data-dir", str(checkout / "data")],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"./scripts/up exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1, help="fresh clones to time")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILLPOND_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    first: list[float] = []
    warm: list[float] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            checkout = Path(tmp) / "millpond"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
            port = free_port()
            env["MILLPOND_GATEWAY_PORT"] = str(free_port())
            first.append(timed_start(checkout, port, env))
            warm.append(timed_start(checkout, port, env))
            print(f"  first start {first[-1]:6.2f} s, warm restart {warm[-1]:5.2f} s", flush=True)
    print(f"first start (fresh clone, install, initdb): median {statistics.median(first):.2f} s")
    print(f"warm restart: median {statistics.median(warm):.2f} s (bar: < 3 s)")


if __name__ == "__main__":
    main()
