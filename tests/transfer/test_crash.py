"""A server killed with SIGKILL in the middle of an import restarts into a consistent
state: the job ends DONE (run again, or found committed) or FAILED — never PROCESSING
forever — and the table is either complete or absent."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from _up import millpond_up
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import free_port

from ._helpers import Api, error

ROWS = 400_000


def _up(data_dir: Path, port: int) -> subprocess.Popen[str]:
    quiet = {"MILLPOND_LOG_LEVEL": "warning", "MILLPOND_TRANSFER_POLL_S": "0.5"}
    return millpond_up(
        data_dir, port, env=quiet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/imports/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sigkill_mid_import(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    csv = b"id,name,amount,day,flag,note\n" + b"".join(
        b"%d,name %d,%d.25,2024-01-%02d,%s,some text for row %d\n"
        % (i, i, i, i % 28 + 1, b"true" if i % 2 else b"false", i)
        for i in range(ROWS)
    )
    proc = _up(data_dir, port)
    clients: list[httpx.Client] = []
    try:
        _wait_healthy(url, proc)
        key = (data_dir / "admin-key").read_text().strip()
        client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        clients.append(client)
        client.post("/v1/databases", json={"name": "crash"}).raise_for_status()
        r = client.post(
            "/v1/imports",
            data={"db_name": "admin/crash", "table_name": "big"},
            files={"file": ("big.csv", csv)},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while _job(client, job_id)["state"] == "RECEIVED":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        proc = _up(data_dir, port)
        _wait_healthy(url, proc)
        deadline = time.monotonic() + 60
        while (job := _job(client, job_id))["state"] not in ("DONE", "FAILED"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        exists = client.post(
            "/v1/query",
            json={"database": "admin/crash", "sql": "SELECT to_regclass('big') IS NOT NULL"},
        ).json()["data"][0][0]
        if job["state"] == "DONE":
            count = client.post(
                "/v1/query", json={"database": "admin/crash", "sql": "SELECT count(*) FROM big"}
            ).json()["data"][0][0]
            assert count == ROWS
            assert job["attempts"] == 2 or (job["attempts"] == 1 and job["rows_done"] == ROWS)
        else:
            assert job["error_type"] == "interrupted", job
            assert not exists
        folders = data_dir / "transfer" / "jobs"
        while list(folders.iterdir()):  # the upload is deleted once the job is over
            assert time.monotonic() < deadline, list(folders.iterdir())
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        EmbeddedPostgres(data_dir).stop()


def _stale(superuser: Any, job_id: str, **fields: Any) -> None:
    """Make a job look like its worker died while running it."""
    sets = ", ".join(f"{k} = %({k})s" for k in fields)
    with superuser() as conn:
        conn.execute(
            f"UPDATE transfer_jobs SET state = 'PROCESSING', worker_id = 'gone', {sets}"
            " WHERE id = %(id)s",
            {**fields, "id": job_id},
        )


def test_recovery_decisions(xfer: Api, owner: tuple[str, str], db: str, superuser: Any) -> None:
    """What a replica does with a PROCESSING job nobody holds: DONE if the import's
    transaction committed; FAILED (interrupted) after the last attempt; else run again."""
    key = owner[1]
    committed = xfer.run_import(key, db, "a", b"x\n1\n")
    with superuser() as conn:
        (xid,) = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    _stale(superuser, committed["id"], commit_xid=xid, attempts=1)
    job = xfer.wait("imports", committed["id"], key, timeout=20)
    assert job["state"] == "DONE" and job["attempts"] == 1

    exhausted = xfer.run_import(key, db, "b", b"x\n1\n")
    _stale(superuser, exhausted["id"], attempts=2, commit_xid=None)
    job = xfer.wait("imports", exhausted["id"], key, timeout=20)
    assert error(job, "interrupted")["attempts"] == 2

    again = xfer.run_import(key, db, "c", b"x\n1\n")
    _stale(superuser, again["id"], attempts=1, commit_xid=None)
    job = xfer.wait("imports", again["id"], key, timeout=20)
    assert job["attempts"] == 2
    error(job, "file_missing")  # it ran again; its upload was gone (deleted when DONE)


def test_a_start_removes_only_the_previews_a_dead_process_left(tmp_path: Path) -> None:
    """Previews live for one request; with shared storage every replica's are in the one
    folder, so a replica that starts removes only those untouched for hours."""
    from millpond.server.transfer.service import _STALE_PREVIEW_S, _remove_stale_previews

    now = time.time()
    left, busy, fresh = (tmp_path / name for name in ("left", "busy", "fresh"))
    for folder in (left, busy, fresh):
        folder.mkdir()
        (folder / "upload").write_bytes(b"a,b\n")
    old = now - _STALE_PREVIEW_S - 60
    for path in (left, left / "upload", busy):
        os.utime(path, (old, old))  # busy: an old folder whose upload is still written
    _remove_stale_previews(tmp_path, now)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "fresh"]
