"""``millpond backup`` of a running installation and ``millpond restore`` into a fresh data
directory: the restored installation starts and holds what the original held at the
backup's moment — users and keys, databases and their rows, the admin key file — and
nothing written after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from millpond.server.config import Settings
from millpond.server.testing import ServerThread, free_port, start_server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "millpond.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")},
    )


def _server(data_dir: Path) -> ServerThread:
    return start_server(
        Settings(host="127.0.0.1", port=free_port(), gateway_port=free_port(), data_dir=data_dir)
    )


def _sql(server: ServerThread, key: str, database: str, sql: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/query",
        json={"database": database, "sql": sql},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def test_backup_then_restore_into_a_fresh_data_directory(tmp_path: Path) -> None:
    original, restored, file = tmp_path / "a", tmp_path / "b", tmp_path / "backup.tar"
    server = _server(original)
    try:
        admin = {"Authorization": f"Bearer {server.admin_key}"}
        r = httpx.post(f"{server.url}/v1/users", json={"username": "kept"}, headers=admin)
        assert r.status_code == 201, r.text
        key = r.json()["api_key"]["secret"]
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{server.url}/v1/databases", json={"name": "shop"}, headers=auth)
        assert r.status_code == 201, r.text
        sql = "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1), (2)"
        assert _sql(server, key, "kept/shop", sql).status_code == 200
        done = _cli("backup", "--data-dir", str(original), "-o", str(file))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["bytes"] == file.stat().st_size and report["format"] == 1
        assert file.stat().st_mode & 0o777 == 0o600  # it holds every secret
        assert _sql(server, key, "kept/shop", "INSERT INTO orders VALUES (3)").status_code == 200
        again = _cli("backup", "--data-dir", str(original), "-o", str(file))
        assert again.returncode == 1 and "exists" in again.stderr  # never overwritten
    finally:
        server.stop()
    done = _cli("restore", str(file), "--data-dir", str(restored), "--format", "table")
    assert done.returncode == 0, done.stderr
    assert f"millpond up --data-dir {restored}" in done.stdout
    assert (restored / "admin-key").read_text() == (original / "admin-key").read_text()
    assert (restored / "pg-password").stat().st_mode & 0o777 == 0o600
    server = _server(restored)
    try:
        r = _sql(server, key, "kept/shop", "SELECT id FROM orders ORDER BY id")
        assert r.status_code == 200, r.text
        assert r.json()["data"] == [[1], [2]]  # as of the backup: not the row written after
        me = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["user"]["username"] == "kept"
        assert server.admin_key == (original / "admin-key").read_text().strip()
    finally:
        server.stop()


def test_restore_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine").write_text("keep")
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello")
    empty_tar = tmp_path / "empty.tar"
    with tarfile.open(empty_tar, "w"):
        pass
    cases = [
        ((str(not_tar), "--data-dir", str(tmp_path / "x")), "cannot restore"),
        ((str(empty_tar), "--data-dir", str(tmp_path / "y")), "cannot restore"),
        ((str(tmp_path / "missing.tar"), "--data-dir", str(tmp_path / "z")), "cannot restore"),
        ((str(empty_tar), "--data-dir", str(taken)), "not empty"),
    ]
    for args, message in cases:
        done = _cli("restore", *args)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
    assert (taken / "mine").read_text() == "keep"
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))  # nothing left


@pytest.mark.parametrize("made", [False, True])
def test_backup_needs_a_running_installation(tmp_path: Path, made: bool) -> None:
    data_dir = tmp_path / "data"
    if made:  # made, then stopped: its cluster is there but not running
        _server(data_dir).stop()
    done = _cli("backup", "--data-dir", str(data_dir), "-o", str(tmp_path / "b.tar"))
    assert done.returncode == 1
    hint = "not running" if made else "no millpond installation"
    assert hint in done.stderr, done.stderr
    assert not (tmp_path / "b.tar").exists()
