"""``millpond user set-password``: a user's own password (the current one asked for when
there is one), an admin's reset of another's, asked twice at a hidden prompt or read from
standard input; the server's refusals on stderr with exit 1."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from console._helpers import password_login
from millpond.cli import _context

from .conftest import Cli

MakeUser = Callable[..., tuple[str, str]]
FIRST = "first password 1"
SECOND = "second password 2"


def _logs_in(base_url: str, username: str, password: str) -> bool:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        return password_login(http, username, password).status_code == 303


def test_setting_and_changing_your_own_password_from_stdin(
    user_cli: tuple[str, Cli], base_url: str
) -> None:
    name, cli = user_cli
    assert cli.json("me")["has_password"] is False
    done = cli.json("user", "set-password", "--password-stdin", input=FIRST + "\n")
    assert done == {"password_set": name}
    assert cli.json("me")["has_password"] is True
    assert _logs_in(base_url, name, FIRST)

    # a password is set: the current one is the second line
    missing = cli("user", "set-password", "--password-stdin", input=SECOND + "\n")
    assert missing.exit_code == 1
    assert "then the current one on the second" in missing.stderr
    wrong = cli("user", "set-password", "--password-stdin", input=f"{SECOND}\nnot it at all\n")
    assert wrong.exit_code == 1 and "(wrong_password)" in wrong.stderr
    said = cli.ok(
        "user", "set-password", "--password-stdin", input=f"{SECOND}\n{FIRST}\n", table=True
    )
    assert said.stdout.strip() == f"Password set for {name}; their console sessions ended."
    assert FIRST not in said.stdout and SECOND not in said.stdout
    assert _logs_in(base_url, name, SECOND) and not _logs_in(base_url, name, FIRST)


def test_the_hidden_prompt_asks_twice(
    user_cli: tuple[str, Cli], base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, cli = user_cli
    assert cli("user", "set-password").exit_code == 1  # no terminal, no --password-stdin
    monkeypatch.setattr(_context, "interactive", lambda: True)
    result = cli("user", "set-password", input=f"{FIRST}\n{FIRST}\n", table=True)
    assert result.exit_code == 0, result.stderr
    assert "New password:" in result.stdout and "Repeat it:" in result.stdout
    assert FIRST not in result.stdout  # hidden
    # now the current one first; a mismatched repeat is asked again
    answers = f"{FIRST}\n{SECOND}\nmistyped\n{SECOND}\n{SECOND}\n"
    result = cli("user", "set-password", input=answers, table=True)
    assert result.exit_code == 0, result.stderr
    assert "Current password:" in result.stdout and "do not match" in result.stdout
    assert _logs_in(base_url, name, SECOND)


def test_refusals_exit_1_with_the_servers_reason(user_cli: tuple[str, Cli]) -> None:
    _, cli = user_cli
    short = cli("user", "set-password", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "(invalid_password)" in short.stderr
    empty = cli("user", "set-password", "--password-stdin", input="")
    assert empty.exit_code == 1
    assert "--password-stdin: give the new password on the first line" in empty.stderr
    assert cli.json("me")["has_password"] is False


def test_an_admin_resets_another_users_password(
    cli: Cli, make_user: MakeUser, base_url: str
) -> None:
    name, key = make_user(prefix="clipw")
    done = cli.json("user", "set-password", name, "--password-stdin", input=FIRST + "\n")
    assert done == {"password_set": name}
    assert _logs_in(base_url, name, FIRST)
    # no current password is needed for someone else's
    cli.ok("user", "set-password", name, "--password-stdin", input=SECOND + "\n")
    assert _logs_in(base_url, name, SECOND)

    # a user who is no admin cannot
    other, _ = make_user(prefix="clipwo")
    refused = cli.as_(key)("user", "set-password", other, "--password-stdin", input=FIRST + "\n")
    assert refused.exit_code == 1 and "(admin_required)" in refused.stderr
    missing = cli("user", "set-password", "nobody-at-all", "--password-stdin", input=FIRST + "\n")
    assert missing.exit_code == 1 and "(user_not_found)" in missing.stderr
