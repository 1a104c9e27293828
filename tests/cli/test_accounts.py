"""``millpond key``, ``service-account``, ``user``, ``me``: keys shown once, revoked by id or
all at once; a service account's whole life; the admin's user management, and a clear 403
for everyone else."""

from __future__ import annotations

import json

import pytest

from millpond.cli import _context

from .conftest import Cli, kv, unique


def test_key_create_list_revoke(user_cli: tuple[str, Cli]) -> None:
    _, cli = user_cli
    created = cli.json("key", "create", "--name", "ci", "--read-only", "--expires-in", "3600")
    assert created["secret"].startswith("mp_")
    assert (created["name"], created["scope"]) == ("ci", "read")
    assert created["expires_at"] is not None

    listed = cli.json("key", "list")
    assert {k["id"] for k in listed} >= {created["id"]}
    assert all("secret" not in k for k in listed)

    table = cli.ok("key", "list", table=True).stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "NAME",
        "PREFIX",
        "SCOPE",
        "CREATED",
        "EXPIRES",
        "LAST",
        "USED",
    ]
    assert any(line.startswith(created["id"]) and " read " in line for line in table)

    # the new read-only key works, for reading only
    ci = cli.as_(created["secret"])
    assert ci.json("me")["key"]["id"] == created["id"]
    denied = ci("key", "create")
    assert denied.exit_code == 1
    assert "(read_only_key)" in denied.stderr
    assert "hint: this key is read-only" in denied.stderr

    assert cli.json("key", "revoke", created["id"]) == {"count": 1}
    gone = ci("me")
    assert gone.exit_code == 1
    assert "(unauthorized)" in gone.stderr
    assert "hint: check --key / MILLPOND_API_KEY (the key used came from --key)" in gone.stderr

    missing = cli("key", "revoke", created["id"])
    assert missing.exit_code == 1
    assert "millpond key list" in missing.stderr


def test_key_create_table_says_the_secret_is_shown_once(user_cli: tuple[str, Cli]) -> None:
    _, cli = user_cli
    out = cli.ok("key", "create", "--name", "laptop", table=True).stdout
    fields = kv(out)
    assert fields["name"] == "laptop"
    assert fields["secret"].startswith("mp_")
    assert "shown only once" in out


def test_key_revoke_all(user_cli: tuple[str, Cli]) -> None:
    _, cli = user_cli
    second = cli.json("key", "create")["secret"]
    refused = cli("key", "revoke", "--all")
    assert refused.exit_code == 1
    assert "pass --yes" in refused.stderr
    assert cli.ok("key", "revoke", "--all", "--yes", table=True).stdout == "Revoked 2 keys.\n"
    for key in (cli.key, second):
        assert cli.as_(key)("me").exit_code == 1


def test_key_revoke_usage(cli: Cli) -> None:
    assert cli("key", "revoke").exit_code == 2
    assert cli("key", "revoke", "key_x", "--all").exit_code == 2


def test_service_account_flow(user_cli: tuple[str, Cli]) -> None:
    owner, cli = user_cli
    account = cli.json("service-account", "create", "deployer")
    assert (account["name"], account["owner"]) == ("deployer", owner)
    sid = str(account["id"])
    assert [a["id"] for a in cli.json("service-account", "list")] == [account["id"]]
    assert cli.json("service-account", "get", sid)["name"] == "deployer"

    key = cli.json("service-account", "create-key", sid, "--name", "ci")
    assert key["service_account_id"] == account["id"]
    other = cli.json("service-account", "create-key", sid, "--read-only")
    listed = cli.json("service-account", "list-keys", sid)
    assert {k["id"] for k in listed} == {key["id"], other["id"]}
    lines = cli.ok("service-account", "list", table=True).stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "OWNER", "KEYS", "CREATED"]
    assert lines[2].split()[:4] == [sid, "deployer", owner, "2"]

    # its key acts for the owner on databases
    bot = cli.as_(key["secret"])
    me = bot.json("me")
    assert me["service_account"]["id"] == account["id"]
    db = bot.json("db", "create", unique("bot"))
    assert db["owner"] == owner

    assert cli.json("service-account", "revoke-keys", sid, "--key-id", key["id"]) == {"count": 1}
    assert bot("me").exit_code == 1
    assert cli.json("service-account", "revoke-keys", sid) == {"count": 1}

    refused = cli("service-account", "delete", sid)
    assert refused.exit_code == 1 and "pass --yes" in refused.stderr
    assert cli.json("service-account", "delete", sid, "--yes") == {"deleted": account["id"]}
    gone = cli("service-account", "get", sid)
    assert gone.exit_code == 1
    assert "(service_account_not_found)" in gone.stderr
    assert "millpond service-account list" in gone.stderr
    assert cli("service-account", "get", "abc").exit_code == 2


def test_user_admin_flow(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("carol")
    created = cli.json("user", "create", name)
    assert created["user"]["username"] == name
    assert created["user"]["is_admin"] is False
    carol = cli.as_(created["api_key"]["secret"])
    assert carol.json("me")["user"]["username"] == name
    carol.ok("db", "create", "data")

    assert name in [u["username"] for u in cli.json("user", "list", "--all")]
    assert cli.json("user", "get", name)["id"] == created["user"]["id"]
    lines = cli.ok("user", "list", "--all", table=True).stdout.splitlines()
    assert lines[0].split() == ["ID", "USERNAME", "ADMIN", "CREATED"]
    assert any(line.split()[1:3] == [name, "no"] for line in lines[2:])

    owns = cli("user", "delete", name, "--yes")
    assert owns.exit_code == 1
    assert "(user_owns_databases)" in owns.stderr
    assert "--delete-databases" in owns.stderr

    monkeypatch.setattr(_context, "interactive", lambda: True)
    asked = cli("user", "delete", name, "--delete-databases", input="y\n")
    assert asked.exit_code == 0, asked.stderr
    assert f"Delete user {name} and all their databases?" in asked.stdout
    assert cli("user", "get", name).exit_code == 1
    assert carol("me").exit_code == 1

    admin = cli.json("user", "create", unique("root"), "--admin")
    assert admin["user"]["is_admin"] is True


def test_non_admin_gets_a_clear_403(user_cli: tuple[str, Cli]) -> None:
    username, cli = user_cli
    for args in (
        ["user", "list"],
        ["user", "create", unique("x")],
        ["user", "delete", "admin", "--yes"],
    ):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert result.stdout == ""
        assert "(admin_required)" in result.stderr
        assert "hint: this needs an admin key" in result.stderr
    assert cli.json("user", "get", username)["username"] == username  # themself: allowed


def test_user_create_can_save_the_key_as_a_profile(cli: Cli) -> None:
    name = unique("dave")
    done = cli("user", "create", name, "--save-profile", name)
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["user"]["username"] == name  # printed as without it
    assert f"as profile {name}" in done.stderr
    as_dave = Cli(cli.url, None, cli.empty_dir, {**cli.env, "MILLPOND_PROFILE": name})
    assert as_dave.json("whoami")["user"] == name
    refused = cli("user", "create", unique("erin"), "--save-profile", "no spaces")
    assert refused.exit_code != 0 and "not a profile name" in refused.stderr
    assert not any(u["username"].startswith("erin") for u in cli.json("user", "list", "--all"))
