"""Every command the code and the docs tell a user to run exists: each ``millpond …`` in
an error message, a hint, a docstring or a page of the docs (in backticks, after a colon,
or on a ``$`` line of a console block) names a real command path of the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from millpond.cli import app

ROOT = Path(__file__).resolve().parents[2]
_WORDS = r"millpond((?: [a-z][a-z0-9-]*)+)"
_MENTION = re.compile(rf"(?:`|: |^\$ ){_WORDS}", re.MULTILINE)
NOT_COMMANDS = {
    ("module", "version"): "the comment a publish leaves on a database (modules/publishing.py)",
}


def _mentions() -> Iterator[tuple[str, str]]:
    files = [*sorted((ROOT / "src" / "millpond").rglob("*.py"))]
    files += [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "examples").rglob("*.md"))
    for path in files:
        for match in _MENTION.finditer(path.read_text()):
            yield str(path.relative_to(ROOT)), match.group(1).split()


def _problem(root: Any, words: list[str]) -> str | None:
    """Why ``millpond <words…>`` is not a command path; None if it is one (a group has
    ``commands``: typer's click groups)."""
    command = root
    for i, word in enumerate(words):
        if not hasattr(command, "commands"):
            return None  # a command's own arguments follow
        sub = command.commands.get(word)
        if sub is None:
            if i == 0:
                return f"no command {word!r}"
            return f"{' '.join(words[:i])} has no subcommand {word!r}"
        command = sub
    return None


def test_every_command_the_code_and_docs_name_exists() -> None:
    root = typer.main.get_command(app)
    seen = 0
    wrong = []
    for where, words in _mentions():
        seen += 1
        if tuple(words[:2]) in NOT_COMMANDS:
            continue
        problem = _problem(root, words)
        if problem is not None:
            wrong.append(f"{where}: `millpond {' '.join(words)}`: {problem}")
    assert seen > 100, seen
    assert not wrong, "\n".join(wrong)


def test_a_wrong_command_is_caught() -> None:
    root = typer.main.get_command(app)
    assert _problem(root, ["flags", "nosuch"]) == "flags has no subcommand 'nosuch'"
    assert _problem(root, ["nosuch"]) == "no command 'nosuch'"
    assert _problem(root, ["db", "list"]) is None
    assert _problem(root, ["logs", "alice", "chat"]) is None


def test_the_root_options_work_anywhere_on_the_line() -> None:
    from millpond.cli._context import hoist_global_options

    root = typer.main.get_command(app)
    assert hoist_global_options(root, ["db", "list", "--format", "table"]) == [
        "--format",
        "table",
        "db",
        "list",
    ]
    assert hoist_global_options(root, ["query", "-d", "a/b", "SELECT 1", "--url=http://x"]) == [
        "--url=http://x",
        "query",
        "-d",
        "a/b",
        "SELECT 1",
    ]
    # the command's own option of that name stays with it: import's file format
    line = ["import", "a/b", "f.csv", "--format", "csv", "--key", "mp_x"]
    assert hoist_global_options(root, line) == [
        "--key",
        "mp_x",
        "import",
        "a/b",
        "f.csv",
        "--format",
        "csv",
    ]
    # nothing after --, and options before the command stay where they are
    line = ["--timeout", "5", "query", "-d", "a/b", "--", "--format"]
    assert hoist_global_options(root, line) == line


def test_a_root_option_after_the_command_takes_effect(base_url: str, admin_key: str) -> None:
    runner = CliRunner()
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None}
    result = runner.invoke(app, ["db", "list", "--url", base_url, "--key", admin_key], env=env)
    assert result.exit_code == 0, result.output
    table = runner.invoke(
        app, ["db", "list", "--format", "table", "--url", base_url, "--key", admin_key], env=env
    )
    assert table.exit_code == 0, table.output
    assert "NAME" in table.output or table.output == "no databases\n"  # a table, not JSON
