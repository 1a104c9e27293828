"""Scheduled reducers against real servers: a schedule table's rows run their reducer once
when due (a one-shot row deleted in the run's transaction), cancel when deleted, recur on
intended times without drift; failures are retried then kept as failed; no client calls
a scheduled reducer; with two servers on one Postgres each due run commits exactly once,
and the schedules go on when the server running them is killed."""

from __future__ import annotations

import datetime
import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from tests.client_realtime.test_failover import Replica

from _waiting import wait_until
from millpond.module import _declare
from millpond.module._def import ModuleDef, TypeRef
from millpond.module._values import ArgumentError, from_json, schedule_json, to_db
from millpond.server.modules import schema
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

from .test_service import Db, published, two_replicas

MakeUser = Callable[..., tuple[str, str]]

MODULE = textwrap.dedent(
    """
    import datetime
    from millpond.module import ReducerContext, ScheduleAt, SenderError, Timestamp
    from millpond.module import table, reducer, primary_key

    @table(scheduled="remind")
    class Reminder:
        scheduled_id: int = primary_key(auto_inc=True)
        scheduled_at: ScheduleAt
        text: str
        fail: bool = False

    @table(public=True)
    class Ran:
        id: int = primary_key(auto_inc=True)
        text: str
        due: Timestamp
        started: Timestamp
        sender: str

    @reducer
    def remind(ctx: ReducerContext, row: Reminder) -> None:
        if row.fail:
            raise SenderError(f"cannot remind {row.text}")
        assert ctx.due is not None
        ctx.db.ran.insert(Ran(text=row.text, due=ctx.due, started=ctx.timestamp,
                              sender=str(ctx.sender)))

    @reducer
    def remind_in(ctx: ReducerContext, text: str, ms: int, fail: bool = False) -> int:
        row = ctx.schedule(remind, in_=datetime.timedelta(milliseconds=ms), text=text, fail=fail)
        return row.scheduled_id

    @reducer
    def remind_at(ctx: ReducerContext, text: str, at: Timestamp, count: int = 1) -> None:
        for i in range(count):
            ctx.schedule("remind", at=at, text=f"{text}{i}")

    @reducer
    def remind_every(ctx: ReducerContext, text: str, ms: int) -> int:
        every = datetime.timedelta(milliseconds=ms)
        return ctx.schedule(remind, every=every, text=text).scheduled_id

    @reducer
    def cancel(ctx: ReducerContext, scheduled_id: int) -> bool:
        row = ctx.db.reminder.find(scheduled_id)
        return row is not None and ctx.db.reminder.delete(row)

    @reducer
    def wrong(ctx: ReducerContext) -> None:
        ctx.schedule("cancel", in_=datetime.timedelta(seconds=1))
    """
)


def _database(base_url: str, key: str, username: str, name: str = "alarms") -> Db:
    return published(base_url, key, f"{username}/{name}", MODULE)


def _rows(db: Db, query: str) -> list[list[Any]]:
    r = db.sql(query)
    assert r.status_code == 200, r.text
    rows: list[list[Any]] = r.json()["data"]
    return rows


def _ran(db: Db, text: str) -> list[list[Any]]:
    return _rows(db, f"SELECT text, due, started FROM ran WHERE text LIKE '{text}%' ORDER BY id")


def _schedules(db: Db) -> list[dict[str, Any]]:
    r = db("GET", "/schedules")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


@pytest.fixture(scope="module")
def alarms(server: ServerThread, make_user: MakeUser) -> Db:
    username, key = make_user(prefix="sched")
    return _database(server.url, key, username)


def test_a_one_shot_runs_once_when_due_and_its_row_goes(alarms: Db) -> None:
    r = alarms.call("remind_in", ["tea", 300])
    assert r.status_code == 200, r.text
    scheduled_id = r.json()["return"]
    [row] = [s for s in _schedules(alarms) if s["scheduled_id"] == scheduled_id]
    assert row["state"] == "due" and row["reducer"] == "remind" and row["table"] == "reminder"
    wait_until(lambda: len(_ran(alarms, "tea")) == 1, timeout=60)
    [(_, due, started)] = _ran(alarms, "tea")
    assert started >= due  # never early
    assert _rows(alarms, f"SELECT count(*) FROM reminder WHERE scheduled_id = {scheduled_id}") == [
        [0]
    ]
    assert all(s["scheduled_id"] != scheduled_id for s in _schedules(alarms))
    # the module itself is the sender of a scheduled run
    [[sender]] = _rows(alarms, "SELECT sender FROM ran WHERE text = 'tea'")
    assert len(sender) == 64 and int(sender, 16) >= 0


def test_deleting_the_row_cancels_the_run(alarms: Db) -> None:
    cancelled = alarms.call("remind_in", ["cancelled", 1500]).json()["return"]
    assert alarms.call("remind_in", ["marker", 2500]).status_code == 200
    assert alarms.call("cancel", [cancelled]).json()["return"] is True
    wait_until(lambda: len(_ran(alarms, "marker")) == 1, timeout=60)
    assert _ran(alarms, "cancelled") == []


def test_many_due_at_once_each_run_once(alarms: Db) -> None:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=500)
    assert alarms.call("remind_at", ["batch-", at.isoformat(), 300]).status_code == 200
    wait_until(lambda: len(_ran(alarms, "batch-")) >= 300, timeout=60)
    time.sleep(0.5)  # anything run twice would show now
    ran = _ran(alarms, "batch-")
    assert sorted(r[0] for r in ran) == sorted(f"batch-{i}" for i in range(300))


def test_an_interval_recurs_on_its_intended_times(alarms: Db) -> None:
    scheduled_id = alarms.call("remind_every", ["tick", 100]).json()["return"]
    wait_until(lambda: len(_ran(alarms, "tick")) >= 15, timeout=60)
    [row] = [s for s in _schedules(alarms) if s["scheduled_id"] == scheduled_id]
    assert row["state"] == "recurring" and row["interval_us"] == 100_000
    assert alarms.call("cancel", [scheduled_id]).json()["return"] is True
    ticks = [r[1] for r in _ran(alarms, "tick")]
    first = datetime.datetime.fromisoformat(ticks[0])
    offsets = [datetime.datetime.fromisoformat(t) - first for t in ticks]
    # anchored: every intended time is a whole number of intervals after the first, none
    # twice (a tick missed under load is skipped, never run late twice)
    assert all(o % datetime.timedelta(milliseconds=100) == datetime.timedelta(0) for o in offsets)
    assert len(set(offsets)) == len(offsets) and offsets == sorted(offsets)
    count = len(_ran(alarms, "tick"))
    time.sleep(0.5)
    assert len(_ran(alarms, "tick")) <= count + 1  # (one may have been running)


def test_a_failing_run_is_retried_then_kept_as_failed(alarms: Db) -> None:
    scheduled_id = alarms.call("remind_in", ["broken", 10, True]).json()["return"]

    def failed() -> bool:
        rows = [s for s in _schedules(alarms) if s["scheduled_id"] == scheduled_id]
        return bool(rows) and rows[0]["state"] == "failed"

    wait_until(failed, timeout=60)
    [row] = [s for s in _schedules(alarms) if s["scheduled_id"] == scheduled_id]
    assert row["attempts"] == 3 and row["due"] is None
    assert "cannot remind broken" in row["last_error"]
    assert _rows(alarms, f"SELECT text FROM reminder WHERE scheduled_id = {scheduled_id}") == [
        ["broken"]
    ]
    logs = alarms("GET", "/module/logs").json()
    assert isinstance(logs, list)


def test_no_client_calls_a_scheduled_reducer(alarms: Db, make_user: MakeUser) -> None:
    r = alarms.call("remind", [{"scheduled_id": 1, "scheduled_at": {"interval_us": 1}}])
    assert r.status_code == 403 and r.json()["error"]["code"] == "reducer_scheduled"
    r = alarms.call("wrong", [])
    assert r.status_code == 422 and "has no schedule table" in r.json()["error"]["message"]
    # the queue is the module's: readers see nothing of it, strangers nothing at all
    _, other = make_user(prefix="sched-r")
    r = alarms.sql("SELECT * FROM millpond_schedules", key=other)
    assert r.status_code in (400, 403), r.text
    r = alarms("GET", "/schedules", key=other)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_a_module_without_schedule_tables_has_no_schedules(
    server: ServerThread, make_user: MakeUser
) -> None:
    username, key = make_user(prefix="sched-none")
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "plain"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201
    db = Db(server, key, f"{username}/plain")
    source = (
        "from millpond.module import ReducerContext, reducer\n"
        "@reducer\ndef noop(ctx: ReducerContext) -> None:\n    pass\n"
    )
    assert db.publish(source).status_code == 201
    r = db("GET", "/schedules")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_schedules"


def test_rows_inserted_with_sql_are_scheduled_and_bad_ones_refused(alarms: Db) -> None:
    at = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=200)).isoformat()
    r = alarms.sql(
        f"INSERT INTO reminder (scheduled_at, text) VALUES ('{{\"time\": \"{at}\"}}', 'by-sql')"
    )
    assert r.status_code == 200, r.text  # the owner writes the tables
    wait_until(lambda: len(_ran(alarms, "by-sql")) == 1, timeout=60)
    for bad in ('{"time": 3}', '{"interval_us": 0}', '{"interval_us": -5}', "[]", '{"x": 1}'):
        r = alarms.sql(f"INSERT INTO reminder (scheduled_at, text) VALUES ('{bad}', 'bad')")
        assert r.status_code == 400, (bad, r.text)
        assert "scheduled_at is" in r.json()["error"]["message"]
    assert _rows(alarms, "SELECT count(*) FROM reminder WHERE text = 'bad'") == [[0]]


# -- declarations ----------------------------------------------------------------------


def _collect(source: str) -> ModuleDef:
    module = types.ModuleType("scheduled_declarations")
    _declare.reset()
    sys.modules[module.__name__] = module
    try:
        exec(textwrap.dedent(source), module.__dict__)
        return _declare.collect(_declare.reset())
    finally:
        del sys.modules[module.__name__]


_HEAD = """
from millpond.module import ReducerContext, ScheduleAt, table, reducer, primary_key
"""


def test_a_schedule_table_and_its_reducer_are_declared_together() -> None:
    module = _collect(
        _HEAD
        + """
@table(scheduled="run")
class Job:
    scheduled_id: int = primary_key(auto_inc=True)
    scheduled_at: ScheduleAt

@reducer
def run(ctx: ReducerContext, job: Job) -> None: ...
"""
    )
    assert module.table("job").scheduled == "run"
    assert module.reducer("run").scheduled == "job"
    assert module.table("job").column("scheduled_at").type == TypeRef("schedule_at")
    assert ModuleDef.from_json(module.to_json()) == module
    schema.check_module(module)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            """
@table(scheduled="run")
class Job:
    id: int = primary_key(auto_inc=True)
    scheduled_at: ScheduleAt
""",
            "key is scheduled_id",
        ),
        (
            """
@table(scheduled="run")
class Job:
    scheduled_id: int = primary_key()
    scheduled_at: ScheduleAt
""",
            "key is scheduled_id",
        ),
        (
            """
@table(scheduled="run")
class Job:
    scheduled_id: int = primary_key(auto_inc=True)
    when: ScheduleAt
""",
            "declare scheduled_at: ScheduleAt",
        ),
        (
            """
@table(scheduled="run")
class Job:
    scheduled_id: int = primary_key(auto_inc=True)
    scheduled_at: ScheduleAt
""",
            "no such @reducer",
        ),
        (
            """
@table(scheduled="run")
class Job:
    scheduled_id: int = primary_key(auto_inc=True)
    scheduled_at: ScheduleAt

@reducer
def run(ctx: ReducerContext, n: int) -> None: ...
""",
            "one Job row",
        ),
        (
            """
@table
class Thing:
    id: int = primary_key()

@reducer
def take(ctx: ReducerContext, thing: Thing) -> None: ...
""",
            "only a schedule table's reducer takes one",
        ),
    ],
)
def test_bad_schedule_declarations_are_refused(source: str, message: str) -> None:
    with pytest.raises(_declare.DeclarationError, match=message):
        _collect(_HEAD + source)


def test_schedule_at_values() -> None:
    ref = TypeRef("schedule_at")
    module = ModuleDef()
    when = from_json({"time": "2026-01-01T00:00:00Z"}, ref, module)
    assert when == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    every = from_json({"interval_us": 100_000}, ref, module)
    assert every == datetime.timedelta(milliseconds=100)
    assert schedule_json(every) == {"interval_us": 100_000}
    assert to_db(every, ref).obj == {"interval_us": 100_000}
    for bad in ({"interval_us": 0}, {"time": "soon"}, {"time": 1}, {}, "x", {"a": 1, "b": 2}):
        with pytest.raises(ArgumentError):
            from_json(bad, ref, module)
    with pytest.raises(ArgumentError):
        to_db(datetime.datetime(2026, 1, 1), ref)  # no timezone


# -- two servers -----------------------------------------------------------------------


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    with two_replicas(
        tmp_path, MILLPOND_MODULE_SCHEDULE_POLL_S="0.2", MILLPOND_MODULE_WORKERS="1"
    ) as pair:
        yield pair


def test_two_servers_run_each_due_call_once_and_survive_a_kill(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    admin_key = (a.data_dir / "admin-key").read_text().strip()
    db = _database(a.url, admin_key, "admin")
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    assert db.call("remind_at", ["pair-", at.isoformat(), 200]).status_code == 200
    wait_until(lambda: len(_ran(db, "pair-")) >= 200, timeout=60)
    # then the server that runs them (whichever it is) dies; the other takes over, and
    # what fell due meanwhile runs, late but once
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    assert db.call("remind_at", ["after-", later.isoformat(), 50]).status_code == 200
    a.kill()
    db.base, db.url = b.url, db.url.replace(a.url, b.url)
    wait_until(lambda: len(_ran(db, "after-")) >= 50, timeout=90)
    time.sleep(1)
    texts = [r[0] for r in _ran(db, "pair-") + _ran(db, "after-")]
    assert sorted(texts) == sorted(
        [f"pair-{i}" for i in range(200)] + [f"after-{i}" for i in range(50)]
    )


def test_generated_bindings_decode_schedule_rows_and_leave_out_their_reducer(
    alarms: Db, tmp_path: Path
) -> None:
    from millpond.codegen.python import generate_python

    r = alarms("GET", "/module")
    assert r.status_code == 200
    files = generate_python(r.json(), alarms.full_name)
    assert "def remind(" not in files["reducers.py"]  # run by the server only
    assert "def remind_in(" in files["reducers.py"]
    package = tmp_path / "alarm_bindings"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        import alarm_bindings.tables as tables  # type: ignore[import-not-found]

        row = tables.Reminder.from_row(
            {"scheduled_id": 1, "scheduled_at": {"interval_us": 5000}, "text": "t", "fail": False}
        )
        assert row.scheduled_at == datetime.timedelta(milliseconds=5)
        row = tables.Reminder.from_row(
            {
                "scheduled_id": 2,
                "scheduled_at": {"time": "2026-01-01T00:00:00+00:00"},
                "text": "t",
                "fail": False,
            }
        )
        assert row.scheduled_at == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("alarm_bindings")]:
            del sys.modules[module]


def test_a_database_with_running_schedules_is_deleted_cleanly(
    server: ServerThread, make_user: MakeUser
) -> None:
    username, key = make_user(prefix="sched-del")
    db = _database(server.url, key, username, name="doomed")
    assert db.call("remind_every", ["doomed", 100]).status_code == 200
    wait_until(lambda: len(_ran(db, "doomed")) >= 2, timeout=60)  # its schedules run on this server
    r = httpx.delete(
        f"{server.url}/v1/databases/{db.full_name}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 204, r.text
    r = httpx.post(
        f"{server.url}/v1/databases",
        json={"name": "doomed"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text  # the name is free again, nothing left behind


def _queue_locks(db: Db) -> set[tuple[str, str]]:
    """The predicate locks a serializable delete of a schedule row takes on the queue."""
    at = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
    assert db.call("remind_at", ["far-", at, 30]).status_code == 200
    locks = _rows(
        db,
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;"
        " DELETE FROM reminder WHERE scheduled_id ="
        " (SELECT max(scheduled_id) FROM reminder WHERE text LIKE 'far-%');"
        " SELECT locktype, relation::regclass::text FROM pg_locks WHERE mode = 'SIReadLock'"
        " AND pid = pg_backend_pid() AND relation IN"
        " ('public.millpond_schedules'::regclass, 'public.millpond_schedules_pkey'::regclass)",
    )
    return {(kind, relation) for kind, relation in locks}


def test_a_serializable_run_reads_the_queue_by_its_key_not_whole(alarms: Db) -> None:
    """The trigger that keeps the queue in step with a schedule table finds the queue row
    by its primary key. (It compared the queue's text column with TG_TABLE_NAME, a name,
    which made the plan a scan of the whole queue: a serializable run then took a
    predicate lock on the whole queue, and concurrent runs failed with serialization
    errors, about one in three under a burst.)"""
    kinds = _queue_locks(alarms)
    assert ("relation", "millpond_schedules") not in kinds, kinds
    assert ("page", "millpond_schedules_pkey") in kinds, kinds  # read through the key


OLD_TRIGGER = """
CREATE OR REPLACE FUNCTION public.millpond_schedule() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    next record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM public.millpond_schedules WHERE tbl = TG_TABLE_NAME;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.scheduled_id = OLD.scheduled_id AND NEW.scheduled_at = OLD.scheduled_at THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM public.millpond_schedules WHERE tbl = TG_TABLE_NAME AND id = OLD.scheduled_id;
        IF TG_OP = 'DELETE' THEN
            RETURN NULL;
        END IF;
    END IF;
    next := public.millpond_schedule_due(TG_TABLE_NAME, NEW.scheduled_at);
    INSERT INTO public.millpond_schedules (tbl, id, reducer, due, every_us)
        VALUES (TG_TABLE_NAME, NEW.scheduled_id, TG_ARGV[0], next.due, next.every_us);
    PERFORM pg_notify('millpond_schedules', TG_TABLE_NAME);
    RETURN NULL;
END $f$
"""
"""The queue trigger as databases published before b767850 have it."""


def test_the_next_publish_brings_an_older_databases_trigger_up_to_date(
    server: ServerThread, make_user: MakeUser
) -> None:
    username, key = make_user(prefix="schedold")
    db = _database(server.url, key, username, name="older")
    pg_name = _rows(db, "SELECT current_database()")[0][0]
    with psycopg.connect(EmbeddedPostgres(server.settings.data_dir).url(pg_name)) as conn:
        conn.execute(OLD_TRIGGER)
    assert ("relation", "millpond_schedules") in _queue_locks(db)  # the old trigger's scan
    r = db.publish(MODULE)
    assert r.status_code in (200, 201), r.text
    kinds = _queue_locks(db)
    assert ("relation", "millpond_schedules") not in kinds, kinds
    assert ("page", "millpond_schedules_pkey") in kinds, kinds
    assert db.call("remind_in", ["after-upgrade-", 10]).status_code == 200
    wait_until(lambda: len(_ran(db, "after-upgrade-")) == 1, timeout=60)  # and schedules still run
