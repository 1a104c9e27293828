"""Fixtures for the CLI's tests: the CLI run in-process (``typer.testing.CliRunner``)
against the session's real server, with an environment that holds no key, no URL and an
empty ``MILLPOND_DATA_DIR``, so only what a test passes reaches the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from millpond.cli import app

MakeUser = Callable[..., tuple[str, str]]


def kv(text: str) -> dict[str, str]:
    """The ``field  value`` lines of one object in table format, as a dict."""
    pairs = {}
    for line in text.splitlines():
        if not line.strip():
            break
        name, _, value = line.partition(" ")
        pairs[name] = value.strip()
    return pairs


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Cli:
    """``cli("db", "list")`` runs ``millpond --url URL --key KEY db list`` in-process."""

    url: str | None
    key: str | None
    empty_dir: Path
    env: dict[str, str | None] = field(default_factory=dict)

    def __call__(self, *args: str, table: bool = False, input: str | None = None) -> Result:
        argv: list[str] = []
        if self.url is not None:
            argv += ["--url", self.url]
        if self.key is not None:
            argv += ["--key", self.key]
        if table:
            argv += ["--format", "table"]
        env: dict[str, str | None] = {
            "MILLPOND_API_KEY": None,
            "MILLPOND_URL": None,
            "MILLPOND_DATA_DIR": str(self.empty_dir),
            "COLUMNS": "100",
            **self.env,
        }
        return CliRunner().invoke(app, [*argv, *args], input=input, env=env)

    def ok(self, *args: str, table: bool = False, input: str | None = None) -> Result:
        result = self(*args, table=table, input=input)
        assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
        assert result.stderr == ""
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.ok(*args, input=input).stdout)

    def as_(self, key: str | None) -> Cli:
        return Cli(self.url, key, self.empty_dir, dict(self.env))


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    path = tmp_path / "no-server-here"
    path.mkdir()
    return path


@pytest.fixture
def cli(base_url: str, admin_key: str, empty_dir: Path) -> Cli:
    """The CLI with the admin's key."""
    return Cli(base_url, admin_key, empty_dir)


@pytest.fixture
def user_cli(cli: Cli, make_user: Callable[..., tuple[str, str]]) -> tuple[str, Cli]:
    """A fresh (non-admin) user's name, and the CLI with their key."""
    name, key = make_user(prefix="cli")
    return name, cli.as_(key)
