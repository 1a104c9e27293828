"""The consistency test across two replicas, through a replica's death and a Postgres
restart.

Two ``millpond up`` processes share one external Postgres (``MILLPOND_DATABASE_URL``).
Two of the four clients of ``consistency.py`` go through replica A, two through replica
B; one HTTP writer writes through each replica and two write straight to Postgres. While
they run, replica A is killed (``SIGKILL``: no clean shutdown, its WebSockets and WAL
streams just vanish) and started again, then Postgres itself is stopped and started
(every replica's streams and pooled connections die with it). Every client reconnects,
resubscribes and reconciles by itself; at the end each cache must equal Postgres, with
the same checks as the single-server test (order, no duplicates, the whole picture of
every divergence).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import Proxy, free_port

from .conftest import make_database
from .consistency import SCHEMA, check, run_scenario

PHASE_SECONDS = 1.5


class Replica:
    """One ``millpond up`` process on the external Postgres, restartable on its port."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.gateway_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MILLPOND_DATABASE_URL": database_url,
            "MILLPOND_LOG_LEVEL": "warning",
            "MILLPOND_GATEWAY_PORT": str(self.gateway_port),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.data_dir.parent / f"{self.data_dir.name}-{self.starts}.log", "wb")  # noqa: SIM115
        with log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "millpond.cli",
                    "up",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ok()

    def wait_ok(self, timeout: float = 90) -> None:
        """Until ``/v1/health`` says ``ok`` (Postgres answers, the server serves)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=5).json().get("status") == "ok":
                    return
            except (httpx.TransportError, ValueError):
                pass
            assert time.monotonic() < deadline, f"replica on {self.port} not ok: {self.log()}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log(self) -> str:
        logs = sorted(self.data_dir.parent.glob(f"{self.data_dir.name}-*.log"))
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, Replica, Replica]]:
    external = EmbeddedPostgres(tmp_path / "pg")
    external.start()
    a = Replica(tmp_path / "a", external.url())
    b = Replica(tmp_path / "b", external.url())
    try:
        a.start()  # the first creates the control database and the first admin
        b.start()
        yield external, a, b
    finally:
        a.stop()
        b.stop()
        external.stop()


def test_caches_survive_a_killed_replica_and_a_postgres_restart(
    cluster: tuple[EmbeddedPostgres, Replica, Replica],
) -> None:
    external, a, b = cluster
    seed = int(os.environ.get("MILLPOND_RT_SEED") or random.randrange(1 << 32))
    print(f"\nrealtime failover seed: MILLPOND_RT_SEED={seed}")
    admin_key = (a.data_dir / "admin-key").read_text().strip()
    r = httpx.post(
        f"{a.url}/v1/users",
        json={"username": "failover"},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]["secret"]
    db = make_database(a.url, admin_key, "failover", key, external.data_dir, SCHEMA)
    db.base_url = b.url  # the marker goes through the replica that is never killed
    events: list[str] = []

    def timeline(proxies: list[Proxy]) -> None:
        time.sleep(PHASE_SECONDS)
        a.kill()
        events.append("replica A killed")
        a.start()
        events.append("replica A started again")
        time.sleep(PHASE_SECONDS)
        external.stop()
        events.append("Postgres stopped")
        external.start()
        a.wait_ok()
        b.wait_ok()
        events.append("Postgres started again, both replicas ok")
        time.sleep(PHASE_SECONDS)

    # a client's call waits while its replica or Postgres is down: a replica's start on a
    # loaded machine can take many seconds (a call never answered still fails)
    targets = [a.port, b.port, a.port, b.port]
    outcome = run_scenario(db, seed, targets, [a.url, b.url], timeline, timeout=120)
    summary = check(outcome)
    print(events)
    assert len(events) == 4, events
    assert outcome.writers.committed > 50, summary
    # the kill and the restart dropped connections (a client reopening just then may
    # miss both: its new connection opened after them)
    assert sum(r.stats.get("reconnects", 0) for r in outcome.records) >= 2, summary
    # and none of them was an internal error: a stopping Postgres closes with 1013
    # (postgres_unavailable), a killed replica's sockets just end (1006)
    assert not any(r.stats.get("closed 1011") for r in outcome.records), summary
