"""``--limit N`` and ``--all`` on every list command against the session's server: the
first N shown and stderr saying how to see the rest, every one with --all (through as
many pages as it takes), and --limit below 1 a usage error (exit 2)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from millpond.cli import app

from .conftest import Cli, unique

CUT = "shown; --all for every one, --limit N for more)"
"""The end of what stderr says when a list was cut."""

OTHER_LISTS = {
    ("db", "collaborators"),
    ("identities", "connected"),
    ("jobs",),
    ("module", "versions"),
    ("schedules",),
}
"""List commands whose name is not ``list`` or ``list-…``."""


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    # duck-typed, as scripts/gen_docs.py: typer's click may not be the ``click`` package
    commands = getattr(cmd, "commands", None)
    if commands is None:
        yield path, cmd
        return
    for name, sub in commands.items():
        yield from _commands(sub, (*path, name))


def _list_commands() -> dict[tuple[str, ...], Any]:
    root = typer.main.get_command(app)
    return {
        path: cmd
        for path, cmd in _commands(root)
        if path[-1] == "list" or path[-1].startswith("list-") or path in OTHER_LISTS
    }


def test_every_list_command_takes_limit_and_all() -> None:
    found = _list_commands()
    assert len(found) == 16, sorted(found)  # a new list command: give it --limit and --all
    for path, cmd in found.items():
        options = {opt: param for param in cmd.params for opt in param.opts}
        assert "--all" in options, path
        limit = options["--limit"]
        assert limit.default == 100, path  # below 1: a usage error, tested below


def _argv(path: tuple[str, ...]) -> list[str]:
    """The command line of a list command, with made-up arguments it needs."""
    needs = {
        ("db", "collaborators"): ["a/b"],
        ("identities", "list"): ["a/b"],
        ("identities", "connected"): ["a/b"],
        ("module", "versions"): ["a/b"],
        ("module", "issuers", "list"): ["a/b"],
        ("schedules",): ["a/b"],
        ("jobs",): ["export"],
        ("service-account", "list-keys"): ["1"],
    }
    return [*path, *needs.get(path, [])]


@pytest.mark.parametrize("path", sorted(_list_commands()), ids=" ".join)
@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_a_limit_below_one_is_a_usage_error(cli: Cli, path: tuple[str, ...], limit: str) -> None:
    result = cli(*_argv(path), "--limit", limit)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--limit" in result.stderr and result.stdout == ""


def _check_cut(cli: Cli, argv: list[str], every: list[Any], key: str, total: bool) -> None:
    """``--limit 2`` shows the first two and says so; ``--all`` and a limit above the
    count show every one and say nothing."""
    cut = cli(*argv, "--limit", "2")
    assert cut.exit_code == 0, cut.stderr
    assert [item[key] for item in json.loads(cut.stdout)] == every[:2]
    said = f"(the first 2 of {len(every)} {CUT}" if total else f"(the first 2 {CUT}"
    assert cut.stderr == said + "\n"
    for more in (["--all"], ["--limit", str(len(every))], ["--limit", "1000"]):
        assert [item[key] for item in cli.json(*argv, *more)] == every, more


# -- lists the server pages: read through the SDK's iterators --------------------------------


def test_flags_and_companies_page_through_the_server(
    user_cli: tuple[str, Cli], base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import millpond.cli._paging as paging

    _, cli = user_cli
    auth = {"Authorization": f"Bearer {cli.key}"}
    r = httpx.post(
        f"{base_url}/v1/flags/environments", json={"name": unique("lists")}, headers=auth
    )
    assert r.status_code == 201, r.text
    e = ["-e", r.json()["id"]]
    for i in range(5):
        cli.ok("flags", "create", f"k{i}", *e)
        cli.ok("companies", "upsert", f"id=c{i}", *e)
    monkeypatch.setattr(paging, "PAGE", 2)  # so every list takes three pages
    _check_cut(cli, ["flags", "list", *e], [f"k{i}" for i in range(5)], "key", total=False)
    companies = [c["id"] for c in cli.json("companies", "list", *e, "--all")]
    assert len(companies) == 5 == len(set(companies))
    _check_cut(cli, ["companies", "list", *e], companies, "id", total=False)


def test_jobs_page_through_the_server(user_cli: tuple[str, Cli]) -> None:
    name, cli = user_cli
    cli.ok("db", "create", "jobs")
    for i in range(4):
        cli.ok("export", f"{name}/jobs", "-q", f"SELECT {i}", "--no-wait")
    ids = [j["id"] for j in cli.json("jobs", "export", "--all")]
    assert len(ids) == 4
    _check_cut(cli, ["jobs", "export"], ids, "id", total=False)
    # --before starts the walk after that job, --limit cuts it as anywhere
    older = cli("jobs", "export", "--before", ids[0], "--limit", "2")
    assert [j["id"] for j in json.loads(older.stdout)] == ids[1:3]
    assert CUT in older.stderr
    assert cli.json("jobs", "import", "--all") == []


# -- lists the server answers whole: cut by the CLI --------------------------------------------


def test_lists_answered_whole_are_cut_with_their_count(
    user_cli: tuple[str, Cli], make_user: Callable[..., tuple[str, str]]
) -> None:
    owner, cli = user_cli
    names = sorted(unique("l") for _ in range(3))
    for db in names:
        cli.ok("db", "create", db)
    _check_cut(cli, ["db", "list"], [f"{owner}/{n}" for n in names], "full_name", total=True)
    friends = sorted(make_user(prefix="friend")[0] for _ in range(3))
    for friend in friends:
        cli.ok("db", "share", f"{owner}/{names[0]}", friend, "--role", "read")
    collaborators = ["db", "collaborators", f"{owner}/{names[0]}"]
    _check_cut(cli, collaborators, friends, "username", total=True)
    for _ in range(2):
        cli.ok("key", "create")
    keys = [k["id"] for k in cli.json("key", "list", "--all")]
    assert len(keys) == 3
    _check_cut(cli, ["key", "list"], keys, "id", total=True)
    accounts = [cli.json("service-account", "create", unique("sa"))["id"] for _ in range(3)]
    _check_cut(cli, ["service-account", "list"], accounts, "id", total=True)
    sa = str(accounts[0])
    for _ in range(3):
        cli.ok("service-account", "create-key", sa)
    sa_keys = [k["id"] for k in cli.json("service-account", "list-keys", sa, "--all")]
    _check_cut(cli, ["service-account", "list-keys", sa], sa_keys, "id", total=True)
    environments = [
        cli.json("flags", "environments", "create", unique("e"))["id"] for _ in range(3)
    ]
    _check_cut(cli, ["flags", "environments", "list"], environments, "id", total=True)


def test_the_user_list_says_how_many_there_are(cli: Cli) -> None:
    every = cli.json("user", "list", "--all")
    assert len(every) >= 3
    cut = cli("user", "list", "--limit", "2", table=True)
    assert cut.exit_code == 0 and len(cut.stdout.splitlines()) == 4  # header, rule, 2 rows
    assert cut.stderr == f"(the first 2 of {len(every)} {CUT}\n"


# -- lists the server cuts at a most, with no cursor: identities, schedules -----------------

MODULE = """
from millpond.module import ReducerContext, reducer

@reducer
def noop(ctx: ReducerContext) -> None:
    pass
"""


def test_module_lists(
    user_cli: tuple[str, Cli], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import millpond.cli.identities as identities

    name, cli = user_cli
    cli.ok("db", "create", "lobby", "--public")
    db = f"{name}/lobby"
    source = tmp_path / "lobby.py"
    for i in range(3):
        source.write_text(MODULE + f"\n# version {i + 1}\n")
        cli.json("publish", db, str(source))
    _check_cut(cli, ["module", "versions", db], [3, 2, 1], "version", total=True)
    made = [cli.json("identities", "create", db)["identity"] for _ in range(3)]
    _check_cut(cli, ["identities", "list", db], made[::-1], "identity", total=False)
    # when the server's most came back, there may be more no request can show
    monkeypatch.setattr(identities, "IDENTITIES_MOST", 3)
    capped = cli("identities", "list", db, "--all")
    assert len(json.loads(capped.stdout)) == 3
    assert capped.stderr == "(the server lists 3 at most: any more are not shown)\n"
    monkeypatch.setattr(identities, "IDENTITIES_MOST", 4)
    assert len(cli.json("identities", "list", db, "--all")) == 3
