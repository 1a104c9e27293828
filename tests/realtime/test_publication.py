"""Replicas that start a database's change stream at the same moment both create its
publication; the one that loses the race (a DuplicateObject, or the catalog's unique
index when both inserted at once) goes on as if it had found it."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from millpond.server.realtime.replication import ensure_publication
from millpond.server.testing import ServerThread


def test_replicas_racing_to_create_the_publication_both_succeed(server: ServerThread) -> None:
    cluster = server.server.config.app.state.services.cluster
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("publication_race")))
    conninfo = cluster.admin_conninfo("publication_race")

    async def race(name: str) -> None:
        await asyncio.gather(*(ensure_publication(conninfo, name) for _ in range(4)))

    for round_ in range(10):  # each round a new name: all four see it missing, then create
        asyncio.run(race(f"race_{round_}"))
    with psycopg.connect(conninfo) as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_publication WHERE pubname LIKE 'race_%'"
        ).fetchone()
    assert count == (10,)
