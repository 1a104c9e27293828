"""``millpond up`` end to end, as a user runs it: first start prints the admin key once,
Ctrl-C stops the server and its Postgres cleanly, the next start keeps all data; and the
same server runs on an external Postgres given by MILLPOND_DATABASE_URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psycopg

from _up import millpond_up
from millpond.server.config import Settings
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import free_port, start_server


def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            r = httpx.get(f"{url}/v1/health")
            if r.status_code == 200:
                return dict(r.json())
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def test_up_first_start_restart_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    proc = millpond_up(data_dir, port)
    health = _wait_healthy(url, proc)
    assert health["postgres"] == {
        "ok": True,
        "mode": "embedded",
        "version": health["postgres"]["version"],  # type: ignore[index]
        "latency_ms": health["postgres"]["latency_ms"],
        "error": None,  # type: ignore[index]
    }
    key = (data_dir / "admin-key").read_text().strip()
    assert key.startswith("mp_")
    assert oct((data_dir / "admin-key").stat().st_mode & 0o777) == "0o600"
    headers = {"Authorization": f"Bearer {key}"}
    httpx.post(f"{url}/v1/databases", json={"name": "kept"}, headers=headers).raise_for_status()
    httpx.post(
        f"{url}/v1/query",
        json={"database": "admin/kept", "sql": "CREATE TABLE t (x int); INSERT INTO t VALUES (42)"},
        headers=headers,
    ).raise_for_status()
    out = _interrupt(proc)
    assert out.count(key) == 1, "the admin key is printed exactly once"
    assert "Postgres gateway on 127.0.0.1:" in out
    assert not EmbeddedPostgres(data_dir).is_running(), "Ctrl-C stops Postgres too"

    proc = millpond_up(data_dir, port)
    _wait_healthy(url, proc)
    r = httpx.post(
        f"{url}/v1/query",
        json={"database": "admin/kept", "sql": "SELECT x FROM t"},
        headers=headers,
    )
    assert r.json()["data"] == [[42]]
    out = _interrupt(proc)
    assert key not in out, "a restart does not print the key again"
    assert "mp_" not in out


def test_external_postgres_by_url(tmp_path: Path) -> None:
    external = EmbeddedPostgres(tmp_path / "external")
    external.start()
    try:
        settings = Settings(
            host="127.0.0.1",
            port=free_port(),
            data_dir=tmp_path / "data",
            database_url=external.url(),
            gateway_port=free_port(),
        )
        running = start_server(settings)
        try:
            headers = {"Authorization": f"Bearer {running.admin_key}"}
            health = httpx.get(f"{running.url}/v1/health").json()
            assert health["postgres"]["mode"] == "external"
            assert health["status"] == "ok"
            httpx.post(
                f"{running.url}/v1/databases", json={"name": "ext"}, headers=headers
            ).raise_for_status()
            r = httpx.post(
                f"{running.url}/v1/query",
                json={"database": "admin/ext", "sql": "SELECT current_database()"},
                headers=headers,
            )
            pg_name = r.json()["data"][0][0]
        finally:
            running.stop()
        assert not (tmp_path / "data" / "pg").exists(), "no embedded cluster was made"
        with psycopg.connect(external.url()) as conn:
            names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
        assert "millpond" in names and pg_name in names
        assert external.is_running(), "an external Postgres is not stopped by millpond"
    finally:
        external.stop()


def test_ports_in_use_are_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = millpond_up(tmp_path / "a", port)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2, out
        assert f"port {port} on 127.0.0.1 is in use" in out and "millpond up --port" in out
        assert not (tmp_path / "a" / "admin-key").exists()  # nothing was set up
        proc = millpond_up(tmp_path / "b", free_port(), env={"MILLPOND_GATEWAY_PORT": str(port)})
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2, out
        assert f"the gateway's port {port}" in out and "MILLPOND_GATEWAY_ENABLED=false" in out
        assert not (tmp_path / "b" / "admin-key").exists()


def test_scripts_up_starts_from_the_installed_checkout_offline(tmp_path: Path) -> None:
    """The README's first command, run again after the install: no reinstall, so no
    package index needed (pip is pointed at none: had it run, the start would fail)."""
    root = Path(__file__).resolve().parent.parent
    port = free_port()
    env = {
        **os.environ,
        "MILLPOND_GATEWAY_PORT": str(free_port()),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path / "nothing"),
    }
    proc = subprocess.Popen(
        [str(root / "scripts" / "up"), "--port", str(port), "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        out = _interrupt(proc)
    assert f"millpond on http://127.0.0.1:{port}" in out
