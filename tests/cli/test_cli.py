"""The CLI as a whole: where the key and URL come from, what happens without a key or a
server, the real entry point and exit codes in a subprocess, and a --help for every command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from millpond import __version__
from millpond.cli import app
from millpond.server.testing import free_port

from .conftest import Cli


def _commands() -> Iterator[tuple[list[str], Any]]:
    # duck-typed: typer may vendor its own click, whose groups are not click.Group
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = list(_commands())
assert len(COMMANDS) > 30, [p for p, _ in COMMANDS]


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "root")
def test_help_for_every_command(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Usage: ")


def test_every_command_and_parameter_explains_itself() -> None:
    for path, cmd in COMMANDS:
        assert cmd.help and cmd.help.strip(), path
        for param in cmd.params:
            assert getattr(param, "help", None), (path, param.name)
    root_help = CliRunner().invoke(app, ["--help"]).stdout
    for group in ("up", "health", "me", "query", "db", "key", "service-account", "user"):
        assert f"\n  {group} " in root_help


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.stdout == f"millpond {__version__}\n"


def test_health_needs_no_key(cli: Cli) -> None:
    health = cli.as_(None).json("health")
    assert health["status"] == "ok"
    assert health["postgres"]["ok"] is True


def test_me_table(cli: Cli) -> None:
    out = cli.ok("me", table=True).stdout
    assert "user.username" in out and "admin" in out
    assert "key.scope" in out


def test_missing_key(cli: Cli, empty_dir: Path) -> None:
    result = cli.as_(None)("db", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: no API key: run `millpond login`, pass --key KEY or set")
    assert str(empty_dir / "admin-key") in first
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


def test_key_from_env(cli: Cli, admin_key: str) -> None:
    env_cli = cli.as_(None)
    env_cli.env["MILLPOND_API_KEY"] = admin_key
    assert env_cli.json("me")["user"]["is_admin"] is True
    env_cli.env["MILLPOND_API_KEY"] = "mp_not_a_key"
    bad = env_cli("me")
    assert bad.exit_code == 1
    assert "(the key used came from MILLPOND_API_KEY)" in bad.stderr


def test_admin_key_file_fallback(cli: Cli, data_dir: Path, tmp_path: Path) -> None:
    # the test server's data directory holds the admin-key file, as after `millpond up`
    local = cli.as_(None)
    local.env["MILLPOND_DATA_DIR"] = str(data_dir)
    assert local.json("me")["user"]["is_admin"] is True

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "admin-key").write_text("mp_revoked_long_ago\n")
    local.env["MILLPOND_DATA_DIR"] = str(stale)
    result = local("db", "list")
    assert result.exit_code == 1
    assert f"the key used came from {stale / 'admin-key'}" in result.stderr


def test_connection_refused(cli: Cli) -> None:
    result = Cli(f"http://127.0.0.1:{free_port()}", cli.key, cli.empty_dir)("db", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot connect")
    assert "is the server running" in result.stderr
    assert "millpond up" in result.stderr
    assert "Traceback" not in result.stderr


def test_timeout(cli: Cli) -> None:
    with socket.socket() as sock:  # accepts connections (backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = Cli(url, cli.key, cli.empty_dir)("--timeout", "0.1", "me")
    assert result.exit_code == 1
    assert "timed out" in result.stderr
    assert "hint: the server is slow to answer: pass a longer --timeout" in result.stderr


def test_bad_url(cli: Cli) -> None:
    result = Cli("ftp://example.com", cli.key, cli.empty_dir)("db", "list")
    assert result.exit_code == 1
    assert "hint: pass --url" in result.stderr


def test_other_configuration_errors_get_no_url_hint(cli: Cli) -> None:
    """A flags call without an environment: the message says what to pass; a hint about
    the URL (right here) would send the user the wrong way."""
    result = cli("flags", "list")
    assert result.exit_code == 1
    assert "needs an environment" in result.stderr or "need an environment" in result.stderr
    assert "--url" not in result.stderr, result.stderr


def test_bad_option_is_a_usage_error(cli: Cli) -> None:
    assert cli("--format", "yaml", "db", "list").exit_code == 2
    assert cli("db", "frobnicate").exit_code == 2


def test_entry_point_in_a_subprocess(base_url: str, admin_key: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MILLPOND_URL": base_url,
        "MILLPOND_API_KEY": admin_key,
        "MILLPOND_DATA_DIR": str(tmp_path),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "millpond.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    me = run("me")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["is_admin"] is True

    missing = run("db", "get", "admin/does-not-exist")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert "(database_not_found)" in missing.stderr
    assert "Traceback" not in missing.stderr

    del env["MILLPOND_API_KEY"]
    no_key = run("db", "list")
    assert no_key.returncode == 1
    assert "no API key" in no_key.stderr

    usage = run("db", "get")
    assert usage.returncode == 2
