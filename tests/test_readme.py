"""The README's examples run, in order, against the real test server, as a new user."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from millpond import Millpond

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 5


def test_readme_python_examples_run(
    base_url: str, make_user: Callable[..., tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = make_user(prefix="readme")
    monkeypatch.setenv("MILLPOND_URL", base_url)
    monkeypatch.setenv("MILLPOND_API_KEY", key)
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for number, block in enumerate(python_blocks(), 1):
            code = compile(block, f"README.md python block {number}", "exec")
            exec(code, namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, Millpond):
                value.close()


def console_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(), flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def test_readme_cli_examples_run(
    base_url: str, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    """Each ``$ millpond …`` line of the README, as user alice (a fresh user stands in)."""
    username, key = make_user(prefix="alice")
    env = {**os.environ, "MILLPOND_URL": base_url, "MILLPOND_API_KEY": key}
    commands = console_commands()
    assert len(commands) >= 8
    for command in commands:
        argv = shlex.split(command.replace("alice/", f"{username}/"))
        assert argv[0] == "millpond"
        result = subprocess.run(
            [sys.executable, "-m", "millpond.cli", *argv[1:]],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        if "--format table query" in command:
            assert "hello" in result.stdout and "world" in result.stdout
