"""``millpond db connect``: a connection string for the gateway, and psql on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import psycopg

from millpond.server.testing import ServerThread


def _cli(
    *args: str, key: str, url: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MILLPOND_URL": url, "MILLPOND_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "millpond.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        check=False,
        timeout=60,
    )


def test_connect_prints_a_working_connection_string(
    server: ServerThread, make_user: Callable[..., tuple[str, str]]
) -> None:
    user, key = make_user(prefix="conn")
    headers = {"Authorization": f"Bearer {key}"}
    httpx.post(
        f"{server.url}/v1/databases", json={"name": "db"}, headers=headers
    ).raise_for_status()
    port = str(server.settings.gateway_port)

    shown = _cli("db", "connect", f"{user}/db", "--port", port, key=key, url=server.url)
    assert shown.returncode == 0, shown.stderr
    parts = json.loads(shown.stdout)
    assert parts["dbname"] == f"{user}/db" and parts["sslmode"] == "prefer"
    assert key not in shown.stdout, "the key is left out unless asked for"

    with_key = _cli(
        "--format",
        "table",
        "db",
        "connect",
        f"{user}/db",
        "--port",
        port,
        "--with-password",
        key=key,
        url=server.url,
    )
    assert with_key.returncode == 0, with_key.stderr
    with psycopg.connect(with_key.stdout.strip()) as conn:
        assert conn.execute("SELECT current_database() LIKE 'mp_db_%'").fetchone() == (True,)

    missing = _cli("db", "connect", f"{user}/nope", "--port", port, key=key, url=server.url)
    assert missing.returncode == 1 and "database_not_found" in missing.stderr


def test_connect_psql(server: ServerThread, make_user: Callable[..., tuple[str, str]]) -> None:
    user, key = make_user(prefix="connpsql")
    headers = {"Authorization": f"Bearer {key}"}
    httpx.post(
        f"{server.url}/v1/databases", json={"name": "db"}, headers=headers
    ).raise_for_status()
    result = _cli(
        "db",
        "connect",
        f"{user}/db",
        "--port",
        str(server.settings.gateway_port),
        "--psql",
        key=key,
        url=server.url,
        stdin="SELECT 40 + 2 AS answer;\n",
    )
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout
