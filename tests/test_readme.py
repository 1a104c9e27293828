"""The README's examples run, in order, against the real test server, as a new user."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _shell import run_script
from millpond import Millpond
from millpond.server.testing import ServerThread

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


def test_readme_cli_examples_run(server: ServerThread, tmp_path: Path) -> None:
    """The README's ``$ …`` lines, in order, in one bash session, as the newcomer is: the
    local server's admin (its admin key file), who makes user alice and acts as her. A
    fresh name stands in for alice; nothing else is changed."""
    alice = f"alice{int(time.time() * 1000) % 10**8}"
    commands = [re.sub(r"\balice\b", alice, command) for command in console_commands()]
    assert len(commands) >= 8 and commands[0].startswith(f"millpond user create {alice}")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    env |= {
        "MILLPOND_URL": server.url,
        "MILLPOND_DATA_DIR": str(server.settings.data_dir),  # where the admin key file is
        "MILLPOND_CONFIG_DIR": str(tmp_path / "config"),  # the profiles: this test's own
        "PATH": f"{bin_dir}:{env.get('PATH', '')}",
    }
    outputs = tmp_path / "out"
    outputs.mkdir()
    script = ["set -euo pipefail"]
    for n, command in enumerate(commands):
        script.append(f"echo {shlex.quote(command)} > {outputs}/{n}.cmd")
        script.append(f"{command} > {outputs}/{n}.out")
    result = run_script(script, env, tmp_path, timeout=600)
    ran = len(list(outputs.glob("*.out")))
    assert result.returncode == 0, (commands[ran - 1], result.stdout, result.stderr)
    assert ran == len(commands)
    who = (outputs / f"{commands.index('millpond whoami')}.out").read_text()
    assert alice in who, who
    for n, command in enumerate(commands):
        out = (outputs / f"{n}.out").read_text()
        if "--format table query" in command:
            assert "hello" in out and "world" in out, out
