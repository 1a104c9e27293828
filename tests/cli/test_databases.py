"""``millpond db …`` against the real server: JSON for scripts, tables for people,
confirmation before deleting, and clear errors."""

from __future__ import annotations

import pytest

from millpond.cli import _context

from .conftest import Cli, MakeUser, kv, unique


def test_create_list_get_update_delete_json(user_cli: tuple[str, Cli]) -> None:
    owner, cli = user_cli
    name = unique("shop")
    created = cli.json("db", "create", name, "--storage-limit", "50000000")
    assert created["full_name"] == f"{owner}/{name}"
    assert created["is_private"] is True
    assert created["storage_limit_bytes"] == 50_000_000
    assert created["role"] == "owner"

    listed = cli.json("db", "list")
    assert isinstance(listed, list)
    assert [d["full_name"] for d in listed] == [f"{owner}/{name}"]

    got = cli.json("db", "get", f"{owner}/{name}")
    assert got["id"] == created["id"]

    renamed = unique("store")
    updated = cli.json(
        "db", "update", f"{owner}/{name}", "--name", renamed, "--public", "--no-storage-limit"
    )
    assert updated["full_name"] == f"{owner}/{renamed}"
    assert updated["is_private"] is False
    assert updated["storage_limit_bytes"] is None
    assert cli.json("db", "update", f"{owner}/{renamed}", "--private")["is_private"] is True

    assert cli.json("db", "delete", f"{owner}/{renamed}", "--yes") == {
        "deleted": f"{owner}/{renamed}"
    }
    assert cli.json("db", "list") == []


def test_table_output(user_cli: tuple[str, Cli]) -> None:
    owner, cli = user_cli
    assert cli.ok("db", "list", table=True).stdout == "no databases\n"
    name = unique("tbl")
    one = kv(cli.ok("db", "create", name, "--public", table=True).stdout)
    assert one["full_name"] == f"{owner}/{name}"
    assert one["is_private"] == "false"
    assert one["storage_limit_bytes"] == ""

    lines = cli.ok("db", "list", table=True).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "PRIVATE", "LIMIT", "CREATED"]
    assert set(lines[1]) == {"-", " "}
    row = lines[2].split()
    assert row[:3] == [f"{owner}/{name}", "owner", "no"]
    assert "none" in row  # no storage limit
    assert len(lines) == 3


def test_delete_needs_yes_without_a_terminal(user_cli: tuple[str, Cli]) -> None:
    _, cli = user_cli
    db = cli.json("db", "create", unique("keep"))["full_name"]
    result = cli("db", "delete", db)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "pass --yes" in result.stderr
    assert cli.json("db", "get", db)["full_name"] == db  # still there


def test_delete_asks_on_a_terminal(
    user_cli: tuple[str, Cli], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cli = user_cli
    monkeypatch.setattr(_context, "interactive", lambda: True)
    db = cli.json("db", "create", unique("ask"))["full_name"]
    declined = cli("db", "delete", db, input="n\n")
    assert declined.exit_code == 1
    assert "aborted" in declined.stderr
    assert cli.json("db", "get", db)["full_name"] == db
    accepted = cli("db", "delete", db, input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert f"Delete database {db}" in accepted.stdout
    assert cli("db", "get", db).exit_code == 1


def test_share_collaborators_unshare(
    user_cli: tuple[str, Cli], make_user: MakeUser, cli: Cli
) -> None:
    _, alice = user_cli
    bob, bob_key = make_user(prefix="bob")
    db = alice.json("db", "create", unique("shared"))["full_name"]
    assert alice.json("db", "collaborators", db) == []
    shared = alice.json("db", "share", db, bob, "--role", "write")
    assert (shared["username"], shared["role"]) == (bob, "write")
    lines = alice.ok("db", "collaborators", db, table=True).stdout.splitlines()
    assert lines[0].split() == ["USERNAME", "ROLE", "SINCE"]
    assert lines[2].split()[:2] == [bob, "write"]
    assert [d["role"] for d in cli.as_(bob_key).json("db", "list")] == ["write"]

    assert alice.json("db", "unshare", db, bob) == {"database": db, "removed": bob}
    assert cli.as_(bob_key).json("db", "list") == []


def test_not_found_has_a_hint(user_cli: tuple[str, Cli]) -> None:
    owner, cli = user_cli
    result = cli("db", "get", f"{owner}/nope")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "(database_not_found)" in result.stderr
    assert "millpond db list" in result.stderr
    assert "Traceback" not in result.stderr


def test_conflict_and_usage_errors(user_cli: tuple[str, Cli]) -> None:
    owner, cli = user_cli
    name = unique("dup")
    cli.ok("db", "create", name)
    dup = cli("db", "create", name)
    assert dup.exit_code == 1
    assert "(database_exists)" in dup.stderr

    bad_name = cli("db", "get", "no-owner")
    assert bad_name.exit_code == 2
    assert "OWNER/NAME" in bad_name.stderr

    with_owner = cli("db", "create", f"{owner}/x")
    assert with_owner.exit_code == 2
    assert "without the owner" in with_owner.stderr

    nothing = cli("db", "update", f"{owner}/{name}")
    assert nothing.exit_code == 2
    assert "nothing to change" in nothing.stderr

    both = cli("db", "update", f"{owner}/{name}", "--storage-limit", "9", "--no-storage-limit")
    assert both.exit_code == 2

    bad_role = cli("db", "share", f"{owner}/{name}", "someone", "--role", "owner")
    assert bad_role.exit_code == 2


def test_forbidden_for_others(user_cli: tuple[str, Cli], make_user: MakeUser, cli: Cli) -> None:
    _, alice = user_cli
    _, eve_key = make_user(prefix="eve")
    db = alice.json("db", "create", unique("priv"), "--public")["full_name"]
    result = cli.as_(eve_key)("db", "delete", db, "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "(forbidden)" in result.stderr or "(database_not_found)" in result.stderr
    assert alice.json("db", "get", db)["full_name"] == db
