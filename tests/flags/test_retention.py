"""Retention: old events, recorded checks and past-period counters are purged; the
configuration, companies, users and all-time counters never are."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row

from millpond.server.flags.retention import LOCK_KEY, Purged, purge
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

from .conftest import Env, Superuser

TRACK = {"event_type": "track", "event": "call", "company": {"id": "acme"}}


def _purge(server: ServerThread, **settings: Any) -> Purged | None:
    url = EmbeddedPostgres(server.settings.data_dir).url(server.settings.control_database)
    config = server.settings.model_copy(update=settings)

    async def run() -> Purged | None:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await purge(conn, config)

    return asyncio.run(run())


def _count(control_db: Superuser, table: str, env: Env, where: str = "true") -> int:
    with control_db() as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE environment_id = %s AND {where}", (env.id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_old_rows_go_and_the_rest_stays(
    server: ServerThread, env: Env, control_db: Superuser
) -> None:
    env.ok("POST", "/flags", 201, json={"key": "f"})
    env.ok("POST", "/events", json={"events": [TRACK, TRACK]})
    env.ok("POST", "/flags/f/check?record=true", json={"company": {"id": "acme"}})
    env.ok("POST", "/flags/f/check?record=true", json={"company": {"id": "acme"}})
    with control_db() as conn:
        conn.execute(
            "UPDATE flag_events SET received_at = now() - interval '100 days'"
            " WHERE id = (SELECT min(id) FROM flag_events WHERE environment_id = %s)",
            (env.id,),
        )
        conn.execute(
            "UPDATE flag_checks SET checked_at = now() - interval '40 days'"
            " WHERE id = (SELECT min(id) FROM flag_checks WHERE environment_id = %s)",
            (env.id,),
        )
        conn.execute(
            "UPDATE flag_metrics SET bucket_start = bucket_start - interval '200 days'"
            " WHERE environment_id = %s AND period IN ('current_day', 'all_time')",
            (env.id,),
        )
    assert _count(control_db, "flag_metrics", env) == 4
    done = _purge(server)
    assert done is not None and done.events >= 1 and done.checks >= 1 and done.metrics >= 1
    assert _count(control_db, "flag_events", env) == 1
    assert _count(control_db, "flag_checks", env) == 1
    # the old day bucket went; all-time (however old), week and month stayed
    periods = _count(control_db, "flag_metrics", env, "period <> 'current_day'")
    assert periods == _count(control_db, "flag_metrics", env) == 3
    assert env.ok("GET", "/flags/f")["key"] == "f"
    assert len(env.ok("GET", "/companies")) == 1


def test_zero_keeps_forever(server: ServerThread, env: Env, control_db: Superuser) -> None:
    env.ok("POST", "/events", json={"events": [TRACK]})
    with control_db() as conn:
        conn.execute(
            "UPDATE flag_events SET received_at = now() - interval '1000 days'"
            " WHERE environment_id = %s",
            (env.id,),
        )
    done = _purge(
        server,
        flags_events_retention_days=0,
        flags_checks_retention_days=0,
        flags_metrics_retention_days=0,
    )
    assert done == Purged(0, 0, 0)
    assert _count(control_db, "flag_events", env) == 1


def test_one_replica_at_a_time(server: ServerThread, control_db: Superuser) -> None:
    with control_db() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        assert _purge(server) is None  # another replica holds the lock: skip this pass
