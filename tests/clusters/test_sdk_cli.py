"""``mp.clusters`` and ``mp.databases.move`` (sync and async clients), and the
``millpond clusters`` commands, against the cluster tests' server (two clusters:
``default`` and ``second``). Every test leaves ``second`` registered and active."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.conftest import Cli

from millpond import (
    AsyncMillpond,
    ConflictError,
    ForbiddenError,
    Millpond,
    NotFoundError,
    UnprocessableEntityError,
)
from millpond.models import ClusterInfo, DatabaseMoved
from millpond.server.postgres.embedded import EmbeddedPostgres

from .conftest import Env, databases_on, home_pg

COMMANDS = ["list", "get", "add", "drain", "activate", "remove", "move"]


@pytest.fixture
def mp(env: Env) -> Iterator[Millpond]:
    with Millpond(env.key, env.server.url) as client:
        yield client


@pytest.fixture
def cli(env: Env, tmp_path: Path) -> Cli:
    """The CLI with the server admin's key."""
    empty = tmp_path / "no-server-here"
    empty.mkdir()
    return Cli(env.server.url, env.key, empty)


def _password(env: Env) -> str:
    return env.second.password_file.read_text().strip()


def _pg_name(database_id: int) -> str:
    return f"mp_db_{database_id}"


# -- the SDK ------------------------------------------------------------------------------------


def test_the_sdk_lists_and_gets_clusters(env: Env, mp: Millpond) -> None:
    found = mp.clusters.list()
    assert [c.name for c in found] == ["default", "second"]
    assert all(type(c) is ClusterInfo for c in found)
    home, second = found
    assert home.home and not second.home
    assert second.up and second.state == "active" and second.postgres
    assert second.error is None and "@" not in second.address
    assert mp.clusters.get("second").address == second.address
    with pytest.raises(NotFoundError) as missing:
        mp.clusters.get("nowhere")
    assert missing.value.code == "cluster_not_found"


def test_the_async_sdk_drains_and_activates_a_cluster(env: Env) -> None:
    async def main() -> None:
        async with AsyncMillpond(env.key, env.server.url) as amp:
            try:
                drained = await amp.clusters.drain("second")
                assert drained.state == "draining"
                assert (await amp.clusters.get("second")).state == "draining"
                with pytest.raises(ConflictError) as refused:
                    await amp.databases.create("sdk-refused", cluster="second")
                assert refused.value.code == "cluster_draining"
                assert "millpond clusters activate second" in refused.value.message
            finally:
                activated = await amp.clusters.activate("second")
            assert activated.state == "active"
            updated = await amp.clusters.update("second", state="active")
            assert updated.state == "active"

    asyncio.run(main())
    assert env("GET", "/v1/clusters/second").json()["state"] == "active"


def test_a_cluster_with_databases_is_not_removed(env: Env, mp: Millpond) -> None:
    db = mp.databases.create("sdk-keeps-second", cluster="second")
    assert db.cluster == "second"
    assert _pg_name(db.id) in databases_on(env.second)
    assert _pg_name(db.id) not in databases_on(home_pg(env))
    with pytest.raises(ConflictError) as busy:
        mp.clusters.remove("second")
    assert busy.value.code == "cluster_not_empty"
    assert "millpond clusters move OWNER/NAME --to CLUSTER" in busy.value.message
    with pytest.raises(UnprocessableEntityError) as home:
        mp.clusters.remove("default")
    assert home.value.code == "cluster_is_home"
    with pytest.raises(NotFoundError):
        mp.clusters.remove("nowhere")
    assert [c.name for c in mp.clusters.list()] == ["default", "second"]


def test_a_database_moves_there_and_back_through_both_sdks(env: Env, mp: Millpond) -> None:
    db = mp.create_database("sdk-mover")
    assert db.cluster == "default"
    full, pg_name = db.full_name, _pg_name(db.id)
    mp.query(full, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")

    moved = mp.databases.move(full, "second")
    assert type(moved) is DatabaseMoved
    assert (moved.database, moved.source, moved.target) == (full, "default", "second")
    assert moved.bytes > 0 and moved.downtime_ms > 0
    assert pg_name in databases_on(env.second) and pg_name not in databases_on(home_pg(env))
    assert mp.databases.get(full).cluster == "second"
    with pytest.raises(ConflictError) as again:
        mp.databases.move(full, "second")
    assert again.value.code == "already_on_cluster"

    async def back() -> DatabaseMoved:
        async with AsyncMillpond(env.key, env.server.url) as amp:
            return await amp.databases.move(full, "default")

    returned = asyncio.run(back())
    assert (returned.source, returned.target) == ("second", "default")
    assert pg_name in databases_on(home_pg(env)) and pg_name not in databases_on(env.second)
    assert mp.query(full, "SELECT id FROM t ORDER BY id").data == [[1], [2]]


def test_the_cluster_calls_are_for_server_admins(env: Env, mp: Millpond) -> None:
    mine = mp.databases.create("sdk-not-theirs")
    with Millpond(env.user(), env.server.url) as user:
        calls = [
            user.clusters.list,
            lambda: user.clusters.get("second"),
            lambda: user.clusters.drain("second"),
            lambda: user.clusters.remove("second"),
            lambda: user.clusters.add(env.second.url(), name="theirs"),
            lambda: user.databases.create("chosen", cluster="second"),
            lambda: user.databases.move(mine.full_name, "second"),
        ]
        for call in calls:
            with pytest.raises(ForbiddenError) as refused:
                call()
            assert refused.value.code == "admin_required"
    assert mp.clusters.get("second").state == "active"
    assert mp.databases.get(mine.full_name).cluster == "default"


# -- the CLI --------------------------------------------------------------------------------


def test_clusters_list_as_json_and_as_a_table(env: Env, cli: Cli) -> None:
    listed = cli.json("clusters", "list")
    assert [c["name"] for c in listed] == ["default", "second"]
    assert listed[0]["home"] is True and listed[1]["up"] is True
    table = cli.ok("clusters", "list", table=True).stdout
    lines = table.splitlines()
    assert lines[0].split() == [
        "NAME",
        "HOME",
        "STATE",
        "DATABASES",
        "UP",
        "POSTGRES",
        "ADDRESS",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"default", "second"}
    assert rows["default"][1:3] == ["yes", "active"]
    assert rows["second"][1:3] == ["no", "active"] and rows["second"][4] == "yes"
    assert rows["second"][3] == str(listed[1]["databases"])
    assert _password(env) not in table
    one = cli.json("clusters", "get", "second")
    assert one["name"] == "second" and one["address"] == listed[1]["address"]


def test_clusters_drain_and_activate(env: Env, cli: Cli) -> None:
    try:
        drained = cli.json("clusters", "drain", "second")
        assert (drained["name"], drained["state"]) == ("second", "draining")
        refused = cli("db", "create", "cli-refused", "--cluster", "second")
        assert refused.exit_code == 1
        assert "(cluster_draining)" in refused.stderr
        assert "millpond clusters activate second" in refused.stderr
    finally:
        said = cli.ok("clusters", "activate", "second", table=True).stdout
    assert said.startswith("Cluster second is active: it takes new databases")
    assert env("GET", "/v1/clusters/second").json()["state"] == "active"


def test_clusters_move_and_db_create_on_a_cluster(env: Env, cli: Cli) -> None:
    made = cli.json("db", "create", "cli-mover", "--cluster", "second")
    assert made["cluster"] == "second"
    full, pg_name = made["full_name"], _pg_name(made["id"])
    assert pg_name in databases_on(env.second)

    moved = cli.json("clusters", "move", full, "--to", "default")
    assert set(moved) == {"database", "source", "target", "bytes", "downtime_ms"}
    assert (moved["database"], moved["source"], moved["target"]) == (full, "second", "default")
    assert moved["bytes"] > 0 and moved["downtime_ms"] > 0
    assert pg_name in databases_on(home_pg(env)) and pg_name not in databases_on(env.second)

    said = cli.ok("clusters", "move", full, "--to", "second", table=True).stdout
    assert said.startswith(f"Moved {full} from default to second: ")
    assert " bytes" in said and said.endswith(" ms of downtime.\n")
    assert pg_name in databases_on(env.second) and pg_name not in databases_on(home_pg(env))
    assert cli.json("db", "get", full)["cluster"] == "second"

    busy = cli("clusters", "remove", "second")
    assert busy.exit_code == 1 and busy.stdout == ""
    assert "(cluster_not_empty)" in busy.stderr
    assert "millpond clusters move OWNER/NAME --to CLUSTER" in busy.stderr
    nowhere = cli("clusters", "move", full, "--to", "nowhere")
    assert nowhere.exit_code == 1 and "(cluster_not_found)" in nowhere.stderr
    assert "millpond clusters list" in nowhere.stderr and "--url" not in nowhere.stderr


def test_clusters_add_never_prints_the_url_and_remove_forgets_it(
    env: Env, cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secret = "not-a-real-pw-7f3a"
    unreachable = cli("clusters", "add", f"postgresql://nobody:{secret}@/p?host=/nonexistent")
    assert unreachable.exit_code == 1 and unreachable.stdout == ""
    assert "(cluster_unreachable)" in unreachable.stderr and secret not in unreachable.stderr
    again = cli("clusters", "add", "-", "--name", "again", input=env.second.url() + "\n")
    assert again.exit_code == 1 and "(cluster_exists)" in again.stderr
    assert _password(env) not in again.stdout + again.stderr
    empty = cli("clusters", "add", "-", input="")
    assert empty.exit_code == 1 and "standard input" in empty.stderr

    third = EmbeddedPostgres(tmp_path_factory.mktemp("third-pg"))
    third.start()
    try:
        added = cli.ok("clusters", "add", "-", "--name", "third", input=third.url() + "\n")
        shown = json.loads(added.stdout)
        assert (shown["name"], shown["state"], shown["databases"]) == ("third", "active", 0)
        assert shown["up"] is True
        password = third.password_file.read_text().strip()
        assert password not in added.stdout and "url" not in shown
        assert [c["name"] for c in cli.json("clusters", "list")] == ["default", "second", "third"]
        said = cli.ok("clusters", "remove", "third", table=True).stdout
        assert said == "Removed cluster third; its Postgres is left as it was.\n"
    finally:
        env("DELETE", "/v1/clusters/third")
        third.stop()
    assert [c["name"] for c in cli.json("clusters", "list")] == ["default", "second"]


def test_a_non_admin_is_told_the_clusters_need_an_admin_key(env: Env, cli: Cli) -> None:
    user = cli.as_(env.user())
    for argv in [
        ["clusters", "list"],
        ["clusters", "drain", "second"],
        ["clusters", "remove", "second"],
        ["db", "create", "chosen", "--cluster", "second"],
    ]:
        refused = user(*argv)
        assert refused.exit_code == 1, argv
        assert refused.stdout == ""
        assert "(admin_required)" in refused.stderr, argv
        assert "hint: this needs an admin key (`millpond me`" in refused.stderr, argv
    assert env("GET", "/v1/clusters/second").json()["state"] == "active"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_clusters_command_explains_itself(cli: Cli, command: str) -> None:
    shown = cli.ok("clusters", command, "--help").stdout
    assert shown.startswith(f"Usage: millpond clusters {command} ")
    assert "--help" in shown and len(shown.splitlines()) > 6


def test_the_clusters_group_and_db_create_show_their_commands(cli: Cli) -> None:
    group = cli.ok("clusters", "--help").stdout
    for command in COMMANDS:
        assert f"\n  {command} " in group
    assert "\n  clusters " in cli.ok("--help").stdout
    assert "--cluster NAME" in cli.ok("db", "create", "--help").stdout
    move = cli.ok("clusters", "move", "--help").stdout
    assert "--to CLUSTER" in move and "OWNER/NAME" in move
    assert cli("clusters", "move", "no-owner", "--to", "second").exit_code == 2
