"""``millpond completion SHELL`` prints a script that makes the shell complete millpond's
commands and options: checked in a real bash, and the answers zsh and fish get."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MILLPOND = str(Path(sys.executable).parent / "millpond")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MILLPOND, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_each_shell_gets_a_script(shell: str) -> None:
    done = _run("completion", shell)
    assert done.returncode == 0, done.stderr
    assert "_MILLPOND_COMPLETE" in done.stdout and "millpond" in done.stdout


def test_an_unknown_shell_is_refused() -> None:
    done = _run("completion", "tcsh")
    assert done.returncode == 2 and "tcsh" in done.stderr
    assert "bash" in done.stderr  # names the ones there are


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("millpond d", {"db"}),
        ("millpond db ", {"create", "list", "delete", "connect"}),
        ("millpond query --f", {"--file"}),
        ("millpond --fo", {"--format"}),
        ("millpond flags ", {"environments"}),
    ],
)
def test_bash_completes_commands_and_options(words: str, expected: set[str]) -> None:
    """The script as bash runs it: ``eval`` it, then ask its completion function."""
    parts = words.split(" ")
    script = (
        f'eval "$({MILLPOND} completion bash)"\n'
        f"COMP_WORDS=({' '.join(repr(p) for p in parts)})\n"
        f"COMP_CWORD={len(parts) - 1}\n"
        "_millpond_completion millpond\n"  # bash passes the command's name
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{Path(MILLPOND).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "--norc", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert expected <= set(done.stdout.split()), done.stdout


def test_zsh_and_fish_get_described_answers() -> None:
    zsh = _run("", _MILLPOND_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="millpond db c")
    assert '"create":' in zsh.stdout and '"connect":' in zsh.stdout, zsh.stdout
    fish = _run(
        "",
        _MILLPOND_COMPLETE="complete_fish",
        _TYPER_COMPLETE_ARGS="millpond db c",
        _TYPER_COMPLETE_FISH_ACTION="get-args",
    )
    assert "create" in fish.stdout, fish.stdout
