"""Shared by the benchmarks: run ``millpond up`` in a subprocess on a temporary data
directory (so client and server do not share a GIL), with an admin key and helpers."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import free_port


@dataclass
class Server:
    url: str
    data_dir: Path
    key: str
    pid: int = 0
    """The ``millpond up`` process (its RSS: ``/proc/<pid>/status``)."""

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )

    def superuser_url(self, pg_name: str) -> str:
        return EmbeddedPostgres(self.data_dir).url(pg_name)


def cpu_seconds(groups: dict[str, Callable[[int, str], bool]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by every process on the machine, summed
    per group: a process goes to the first group whose test (pid, command line) is true,
    or to ``other``. Two readings subtracted say who used the cores in between."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys([*groups, "other"], 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        pid = int(entry.name)
        group = next((name for name, test in groups.items() if test(pid, command)), "other")
        used[group] += seconds
    return used


def cpu_shares(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """``group 73%, …``: each group's CPU between two ``cpu_seconds`` readings, as a share
    of one core, largest first."""
    shares = {name: (after[name] - before[name]) / seconds for name in after}
    ranked = sorted(shares.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {share:.0%}" for name, share in ranked if share >= 0.01)


@contextmanager
def running_server(**env: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "millpond.cli",
                "up",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env={
                **os.environ,
                "MILLPOND_LOG_LEVEL": "warning",
                "MILLPOND_GATEWAY_PORT": str(free_port()),
                **env,
            },
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            # a replica joining an existing control database finds its admin made: no key file
            key_file = data_dir / "admin-key"
            key = key_file.read_text().strip() if key_file.exists() else ""
            yield Server(url, data_dir, key, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def create_database(server: Server, name: str, setup_sql: str) -> str:
    """Create ``admin/<name>``, run ``setup_sql`` in it; return its Postgres name."""
    with server.client() as http:
        http.post("/v1/databases", json={"name": name}).raise_for_status()
        http.post(
            "/v1/query", json={"database": f"admin/{name}", "sql": setup_sql}
        ).raise_for_status()
        r = http.post(
            "/v1/query", json={"database": f"admin/{name}", "sql": "SELECT current_database()"}
        )
        return str(r.json()["data"][0][0])


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rss_kb(pid: int) -> int | None:
    """The resident memory of process ``pid`` in KiB (``VmRSS``); None for a process that
    has none any more (a zombie)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, values: list[float], unit: str = "ms") -> str:
    return (
        f"{name:>28}: median {statistics.median(values):8.3f} {unit}"
        f"  p99 {percentile(values, 0.99):8.3f} {unit}  (n={len(values)})"
    )
