"""Several Postgres clusters: a server of its own (so that placement touches no other
test) with a second embedded Postgres added by URL. The registry's API and its errors,
placement, every path (HTTP query, gateway, realtime, jobs, modules, backups) served from
the second cluster, and moving a database between them: its data, its subscribers, a
move that fails part-way, a request during a move, and one a crash interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from _waiting import wait_until
from millpond import Millpond
from millpond.backoff import Backoff
from millpond.server.accounts.service import authenticate
from millpond.server.clusters.move import recover
from millpond.server.clusters.registry import seal
from millpond.server.errors import ServiceError
from millpond.server.postgres import provision
from millpond.server.postgres.backup import MANIFEST
from millpond.server.postgres.backup import create as installation_backup

from .conftest import Env, databases_on, home_pg, on

FAST = Backoff(base=0.05, cap=0.3)
MODULE = """
from millpond.module import ReducerContext, table, reducer, primary_key

@table(public=True)
class Item:
    id: int = primary_key()
    label: str

@table
class Secret:
    id: int = primary_key()
    note: str

@reducer
def add(ctx: ReducerContext, id: int, label: str) -> int:
    ctx.db.item.insert(Item(id=id, label=label))
    ctx.db.secret.insert(Secret(id=id, note="hidden " + label))
    return id
"""


# -- the registry -------------------------------------------------------------------------------


def test_clusters_are_listed_without_their_credentials(env: Env) -> None:
    r = env("GET", "/v1/clusters")
    assert r.status_code == 200
    listed = {c["name"]: c for c in r.json()}
    assert set(listed) == {"default", "second"}
    assert listed["default"]["home"] and not listed["second"]["home"]
    second = listed["second"]
    assert second["up"] and second["state"] == "active" and second["postgres"].startswith("16")
    password = env.second.password_file.read_text().strip()
    assert password not in r.text and "@" not in second["address"]
    with on(home_pg(env), env.services.settings.control_database) as conn:
        sealed = conn.execute("SELECT url_sealed FROM clusters WHERE id = 'second'").fetchone()
    assert sealed is not None and password.encode() not in bytes(sealed[0])
    assert env("GET", "/v1/clusters/second").json()["name"] == "second"


def test_the_second_cluster_has_a_supervisor_that_finds_it_up(env: Env) -> None:
    clusters = env.services.clusters
    assert clusters is not None
    supervisor = clusters._supervisors["second"]
    wait_until(lambda: supervisor._conn is not None and not supervisor._conn.closed)
    assert clusters.get("second").availability.up


def test_metrics_say_whether_each_cluster_is_reached(env: Env) -> None:
    r = env("GET", "/metrics")
    assert r.status_code == 200, r.text
    assert 'millpond_cluster_up{cluster="default"} 1.0' in r.text
    assert 'millpond_cluster_up{cluster="second"} 1.0' in r.text


def test_a_cluster_that_cannot_be_loaded_answers_503_at_once(env: Env) -> None:
    """A row whose URL does not unseal (another secret's) stands for a cluster this
    replica cannot start: it answers 503 and is not tried again for every request."""
    clusters = env.services.clusters
    assert clusters is not None
    env.run(
        env.services.store.execute(
            "INSERT INTO clusters (id, url_sealed) VALUES ('broken', %s)",
            (seal(b"another secret", "broken", "postgresql://nowhere/postgres"),),
        )
    )
    try:
        with pytest.raises(ServiceError) as first:
            env.run(clusters.cluster_of("broken"))
        assert first.value.status == 503 and "another secret" in first.value.message
        tried = clusters._broken["broken"][1]
        with pytest.raises(ServiceError):
            env.run(clusters.cluster_of("broken"))
        assert clusters._broken["broken"][1] == tried, "not tried again at once"
        listed = {c["name"]: c for c in env("GET", "/v1/clusters").json()}
        assert listed["broken"]["up"] is False and listed["broken"]["error"]
    finally:
        r = env("DELETE", "/v1/clusters/broken")
        assert r.status_code == 204, r.text


def test_only_server_admins_see_or_change_clusters(env: Env) -> None:
    user = env.user()
    for method, path, body in [
        ("GET", "/v1/clusters", None),
        ("GET", "/v1/clusters/second", None),
        ("POST", "/v1/clusters", {"url": env.second.url()}),
        ("PATCH", "/v1/clusters/second", {"state": "draining"}),
        ("DELETE", "/v1/clusters/second", None),
    ]:
        r = env(method, path, user, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "admin_required"
    r = env("POST", "/v1/databases", user, json={"name": "chosen", "cluster": "second"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    assert env("GET", "/v1/clusters/second").json()["state"] == "active"


def test_a_read_only_admin_key_changes_nothing(env: Env) -> None:
    r = env("POST", "/v1/keys", json={"scope": "read"})
    assert r.status_code == 201, r.text
    reader = r.json()["secret"]
    assert env("GET", "/v1/clusters", reader).status_code == 200
    db = env.database("read-only-target")
    for method, path, body in [
        ("POST", "/v1/clusters", {"url": env.second.url(), "name": "other"}),
        ("PATCH", "/v1/clusters/second", {"state": "draining"}),
        ("DELETE", "/v1/clusters/second", None),
        ("POST", f"/v1/databases/{db['full_name']}/move", {"cluster": "second"}),
    ]:
        r = env(method, path, reader, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "read_only_key"
    assert env("GET", "/v1/clusters/second").json()["state"] == "active"
    assert env("GET", f"/v1/databases/{db['full_name']}").json()["cluster"] == "default"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "not a url = = ="}, 422, "invalid_cluster_url"),
        ({"url": "host=127.0.0.1 options='-c search_path=evil'"}, 422, "invalid_cluster_url"),
        ({"url": "postgresql://nobody@127.0.0.1:1/postgres"}, 422, "cluster_unreachable"),
        ({"url": "postgresql://x@127.0.0.1/p", "name": "Bad Name"}, 422, "invalid_cluster_name"),
        ({}, 422, "validation_error"),
    ],
)
def test_adding_a_bad_cluster_is_refused(
    env: Env, body: dict[str, Any], status: int, code: str
) -> None:
    r = env("POST", "/v1/clusters", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert {c["name"] for c in env("GET", "/v1/clusters").json()} == {"default", "second"}


def test_the_same_postgres_twice_or_a_taken_name_is_a_conflict(env: Env) -> None:
    r = env("POST", "/v1/clusters", json={"url": env.second.url(), "name": "again"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "cluster_exists"
    assert "second" in r.json()["error"]["message"]
    r = env("POST", "/v1/clusters", json={"url": home_pg(env).url(), "name": "again"})
    assert r.status_code == 409 and "default" in r.json()["error"]["message"]
    assert {c["name"] for c in env("GET", "/v1/clusters").json()} == {"default", "second"}


def test_a_role_without_createdb_is_unsuitable(env: Env) -> None:
    with on(env.second) as conn:
        conn.execute("DROP ROLE IF EXISTS weakling")
        conn.execute("CREATE ROLE weakling LOGIN PASSWORD 'weak'")
    url = make_conninfo(env.second.url(), user="weakling", password="weak")
    r = env("POST", "/v1/clusters", json={"url": url, "name": "weak"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "cluster_unsuitable", r.text
    assert "CREATEDB" in r.json()["error"]["message"]


def test_unknown_home_and_busy_clusters_cannot_be_removed(env: Env) -> None:
    r = env("DELETE", "/v1/clusters/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "cluster_not_found"
    r = env("DELETE", "/v1/clusters/default")
    assert r.status_code == 422 and r.json()["error"]["code"] == "cluster_is_home"
    env.database("keeps-second-busy", cluster="second")
    r = env("DELETE", "/v1/clusters/second")
    assert r.status_code == 409 and r.json()["error"]["code"] == "cluster_not_empty"
    assert "millpond clusters move" in r.json()["error"]["message"]
    r = env("PATCH", "/v1/clusters/second", json={"state": "asleep"})
    assert r.status_code == 422


def test_a_draining_cluster_takes_no_new_databases(env: Env) -> None:
    r = env("PATCH", "/v1/clusters/second", json={"state": "draining"})
    assert r.status_code == 200 and r.json()["state"] == "draining"
    try:
        r = env("POST", "/v1/databases", json={"name": "refused", "cluster": "second"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "cluster_draining"
        assert "millpond clusters activate second" in r.json()["error"]["message"]
        r = env("POST", "/v1/databases", json={"name": "nowhere", "cluster": "nowhere"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "cluster_not_found"
        assert all(
            d["name"] not in ("refused", "nowhere") for d in env("GET", "/v1/databases").json()
        )
    finally:
        env("PATCH", "/v1/clusters/second", json={"state": "active"})


def test_fewest_databases_placement_fills_the_emptier_cluster(env: Env) -> None:
    settings = env.services.settings
    settings.placement = "fewest-databases"
    try:
        counts = {c["name"]: c["databases"] for c in env("GET", "/v1/clusters").json()}
        emptier = min(counts, key=lambda n: (counts[n], n != "default"))
        made = env.database("placed")
        assert made["cluster"] == emptier
    finally:
        settings.placement = "home"
    assert env.database("placed-home")["cluster"] == "default"


# -- every path on the second cluster ----------------------------------------------------------


def test_every_path_serves_a_database_on_the_second_cluster(env: Env, tmp_path: Path) -> None:
    db = env.database("far", cluster="second")
    assert db["cluster"] == "second"
    pg_name = f"mp_db_{db['id']}"
    assert pg_name in databases_on(env.second) and pg_name not in databases_on(home_pg(env))
    full = db["full_name"]
    env.sql(full, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
    assert env.sql(full, "SELECT v FROM t")["data"] == [["a"]]
    assert env("GET", f"/v1/databases/{full}").json()["size_bytes"] > 0
    principal = env.run(authenticate(env.services.store, env.key))
    listed = {d.full_name: d for d in env.run(env.services.databases.list(principal, sizes=True))}
    assert listed[full].cluster == "second" and (listed[full].size_bytes or 0) > 0

    # the gateway
    gateway = env.services.gateway
    assert gateway is not None and gateway.port is not None
    with psycopg.connect(
        host="127.0.0.1",
        port=gateway.port,
        user="admin",
        password=env.key,
        dbname=full,
        sslmode="disable",
    ) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        conn.execute("INSERT INTO t VALUES (2, 'b')")

    # realtime
    with Millpond(env.key, env.server.url) as mp, mp.realtime(full, reconnect_backoff=FAST) as rt:
        rt.subscribe(["SELECT * FROM t"])
        assert rt.db.t.count() == 2
        env.sql(full, "INSERT INTO t VALUES (3, 'c')")
        wait_until(lambda: rt.db.t.count() == 3, step=lambda: rt.update(0.1))

        # an export job and a backup
        job = mp.exports.create(full, table_name="t", export_format="csv")
        done = mp.exports.wait(job.id)
        assert done.state == "DONE", done
        backup = tmp_path / "far.mpdb"
        mp.databases.backup(full, backup)
        assert backup.stat().st_size > 0

    # a module and its reducer
    r = env("POST", f"/v1/databases/{full}/module", json={"files": {"m.py": MODULE}})
    assert r.status_code == 201, r.text
    r = env("POST", f"/v1/databases/{full}/call/add", json={"id": 1, "label": "x"})
    assert r.status_code == 200, r.text
    with on(env.second, pg_name) as conn:
        assert conn.execute("SELECT label FROM item").fetchall() == [("x",)]


# -- moving ---------------------------------------------------------------------------------------


def _fingerprint(env: Env, full: str) -> Any:
    return env.sql(full, "SELECT id, label FROM item ORDER BY id")["data"]


def test_a_database_moves_with_its_data_module_and_subscribers(env: Env) -> None:
    db = env.database("mover")
    full, pg_name = db["full_name"], f"mp_db_{db['id']}"
    r = env("POST", f"/v1/databases/{full}/module", json={"files": {"m.py": MODULE}})
    assert r.status_code == 201, r.text
    for i in range(1, 51):
        assert env("POST", f"/v1/databases/{full}/call/add", json={"id": i, "label": f"l{i}"})
    before = _fingerprint(env, full)
    user = env.user()
    r = env("POST", "/v1/query", user, json={"database": full, "sql": "SELECT * FROM secret"})
    assert r.status_code == 400  # a private table, for others than the owner

    with Millpond(env.key, env.server.url) as mp, mp.realtime(full, reconnect_backoff=FAST) as rt:
        rt.subscribe(["SELECT * FROM item"])
        assert rt.db.item.count() == 50
        r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
        assert r.status_code == 200, r.text
        moved = r.json()
        assert moved["source"] == "default" and moved["target"] == "second"
        assert moved["bytes"] > 0 and moved["downtime_ms"] > 0
        assert pg_name in databases_on(env.second) and pg_name not in databases_on(home_pg(env))
        assert env("GET", f"/v1/databases/{full}").json()["cluster"] == "second"
        assert _fingerprint(env, full) == before
        # the subscriber came back on its own and sees what is written now
        assert env("POST", f"/v1/databases/{full}/call/add", json={"id": 51, "label": "new"})
        wait_until(lambda: rt.db.item.count() == 51, step=lambda: rt.update(0.1), timeout=30)

    r = env("POST", "/v1/query", user, json={"database": full, "sql": "SELECT * FROM secret"})
    assert r.status_code == 400, "the private table stays private after the move"
    r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_on_cluster"
    r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "default"})
    assert r.status_code == 200, r.text
    assert pg_name in databases_on(home_pg(env)) and pg_name not in databases_on(env.second)
    assert _fingerprint(env, full)[:50] == before


def test_only_server_admins_move_databases(env: Env) -> None:
    user = env.user()
    r = env("POST", "/v1/databases", user, json={"name": "mine"})
    full = r.json()["full_name"]
    r = env("POST", f"/v1/databases/{full}/move", user, json={"cluster": "second"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "nowhere"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "cluster_not_found"
    assert env("GET", f"/v1/databases/{full}").json()["cluster"] == "default"


def test_requests_during_a_move_are_told_to_retry(env: Env) -> None:
    db = env.database("busy")
    full = db["full_name"]
    env.sql(full, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    fenced, release = threading.Event(), threading.Event()

    async def hold() -> None:
        fenced.set()
        await asyncio.to_thread(release.wait, 60)

    mover = env.services.mover
    assert mover is not None
    mover.after_fence.append(hold)
    result: list[httpx.Response] = []
    moving = threading.Thread(
        target=lambda: result.append(
            env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
        )
    )
    moving.start()
    try:
        assert fenced.wait(60)
        r = env("POST", "/v1/query", json={"database": full, "sql": "SELECT 1"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_moving"
        assert r.headers["retry-after"] == "1"
        # no session reaches the fenced database under its name
        with pytest.raises(psycopg.OperationalError), on(home_pg(env), f"mp_db_{db['id']}"):
            pass
    finally:
        release.set()
        moving.join(120)
        mover.after_fence.remove(hold)
    assert result[0].status_code == 200, result[0].text
    assert env.sql(full, "SELECT id FROM t")["data"] == [[1]]


def test_a_move_that_fails_leaves_the_database_where_it_was(env: Env) -> None:
    db = env.database("stays")
    full, pg_name = db["full_name"], f"mp_db_{db['id']}"
    env.sql(full, "CREATE TABLE t (id int); INSERT INTO t VALUES (7)")

    async def fail() -> None:
        raise RuntimeError("the copy broke")

    mover = env.services.mover
    assert mover is not None
    mover.after_fence.append(fail)
    try:
        r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
    finally:
        mover.after_fence.remove(fail)
    assert r.status_code == 500
    assert env("GET", f"/v1/databases/{full}").json()["cluster"] == "default"
    assert env.sql(full, "SELECT id FROM t")["data"] == [[7]]
    assert pg_name in databases_on(home_pg(env)) and pg_name not in databases_on(env.second)


def test_a_failed_move_whose_copy_cannot_be_dropped_still_puts_the_source_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = env.database("stays-too")
    full = db["full_name"]
    env.sql(full, "CREATE TABLE t (id int); INSERT INTO t VALUES (8)")
    real_drop = provision.drop_database

    def refuse_on_second(cluster: Any, pg_name: str) -> None:
        if cluster.name == "second":
            raise RuntimeError("the target cluster refuses the drop")
        real_drop(cluster, pg_name)

    async def fail() -> None:
        raise RuntimeError("the copy broke")

    monkeypatch.setattr(provision, "drop_database", refuse_on_second)
    mover = env.services.mover
    assert mover is not None
    mover.after_fence.append(fail)
    try:
        r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
    finally:
        mover.after_fence.remove(fail)
    assert r.status_code == 500
    assert env("GET", f"/v1/databases/{full}").json()["cluster"] == "default"
    assert env.sql(full, "SELECT id FROM t")["data"] == [[8]]


def test_a_move_a_crash_interrupted_is_undone_at_start(env: Env) -> None:
    db = env.database("crashed")
    full, pg_name = db["full_name"], f"mp_db_{db['id']}"
    env.sql(full, "CREATE TABLE t (id int); INSERT INTO t VALUES (3)")
    svc = env.services
    second = svc.clusters.get("second")  # type: ignore[union-attr]
    # the crash: marked, fenced, half-copied
    env.run(
        svc.store.execute(
            "UPDATE databases SET state = 'moving', moving_to = 'second' WHERE id = %s",
            (db["id"],),
        )
    )
    svc.store.changed()
    provision.fence_database(svc.cluster, pg_name)
    provision.create_database(second, svc.databases.secret, pg_name)
    # a source left fenced after a move that did switch, of another database
    other = env.database("switched")
    other_pg = f"mp_db_{other['id']}"
    provision.create_database(second, svc.databases.secret, other_pg)
    provision.fence_database(svc.cluster, other_pg)
    env.run(
        svc.store.execute(
            "UPDATE databases SET cluster_id = 'second' WHERE id = %s", (other["id"],)
        )
    )
    svc.store.changed()

    assert env.run(recover(svc.databases)) == 2
    assert env.sql(full, "SELECT id FROM t")["data"] == [[3]]
    assert pg_name in databases_on(home_pg(env)) and pg_name not in databases_on(env.second)
    assert provision.fenced_databases(svc.cluster) == []
    assert other_pg in databases_on(env.second)
    assert env("GET", f"/v1/databases/{other['full_name']}").json()["cluster"] == "second"


# -- the whole installation's backup ------------------------------------------------------------


def test_the_installation_backup_carries_or_names_the_other_clusters_databases(
    env: Env, tmp_path: Path
) -> None:
    far = env.database("other-cluster", cluster="second")
    env.sql(far["full_name"], "CREATE TABLE kept AS SELECT generate_series(1, 42) AS n")
    settings = env.services.settings
    entry = f"{far['full_name']} (second)"
    # without the server's help (the function alone): named, not carried
    manifest = installation_backup(
        settings.data_dir, tmp_path / "all.tar", control_database=settings.control_database
    )
    assert entry in manifest.elsewhere and manifest.copies == ()
    assert all(e.endswith("(second)") for e in manifest.elsewhere)
    with tarfile.open(tmp_path / "all.tar") as archive:
        member = archive.extractfile(MANIFEST)
        assert member is not None
        assert entry in json.loads(member.read())["elsewhere"]

    # the CLI fetches each over the API (the admin's key) into the file
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    env_vars |= {"MILLPOND_URL": env.server.url, "MILLPOND_API_KEY": env.key}
    out = tmp_path / "cli.tar"
    command = ["backup", "-o", str(out), "--data-dir", str(settings.data_dir)]
    result = subprocess.run(
        [sys.executable, "-m", "millpond.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_vars,
    )
    assert result.returncode == 0, result.stderr
    assert "per-database backups" in result.stderr and "not in this backup" not in result.stderr
    owner, name = far["full_name"].split("/")
    copy = f"clusters/second/{owner}-{name}.mpdb"
    with tarfile.open(out) as archive:
        member = archive.extractfile(MANIFEST)
        assert member is not None
        written = json.loads(member.read())
        assert copy in written["copies"] and written["elsewhere"] == []
        archive.extract(copy, tmp_path, filter="data")
    # and that copy restores like any database backup
    with Millpond(env.key, env.server.url) as mp:
        target = mp.databases.create("restored-from-installation-backup")
        mp.databases.restore(target.full_name, tmp_path / copy)
    assert env.sql(target.full_name, "SELECT count(*) FROM kept")["data"] == [[42]]


def test_a_tenants_own_settings_do_not_stop_or_bend_a_move(env: Env) -> None:
    """Database- and role-level settings the owner gave its database and roles (a read-only
    default, a 1 ms timeout, a search path naming a schema of theirs) reach neither the
    fence, the dump, nor the restore's sessions."""
    user = env.user()
    r = env("POST", "/v1/databases", user, json={"name": "stubborn"})
    assert r.status_code == 201, r.text
    full, pg_name = r.json()["full_name"], f"mp_db_{r.json()['id']}"
    env.sql(
        full,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 500)",
        user,
    )
    env.sql(
        full,
        f"CREATE SCHEMA trap; CREATE TABLE trap.pg_class (x int);"
        f" ALTER DATABASE {pg_name} SET default_transaction_read_only = on;"
        f" ALTER DATABASE {pg_name} SET search_path = trap, public;"
        f" ALTER DATABASE {pg_name} SET lock_timeout = '1ms';"
        f" ALTER ROLE CURRENT_USER SET statement_timeout = '1ms'",
        user,
    )
    r = env("POST", f"/v1/databases/{full}/move", json={"cluster": "second"})
    assert r.status_code == 200, r.text
    with on(env.second, pg_name) as conn:
        assert conn.execute("SELECT count(*) FROM public.t").fetchone() == (500,)
        assert conn.execute("SELECT count(*) FROM trap.pg_class").fetchone() == (0,)
    r = env("POST", "/v1/query", user, json={"database": full, "sql": "SELECT count(*) FROM t"})
    assert r.status_code == 200 and r.json()["data"] == [[500]], r.text
