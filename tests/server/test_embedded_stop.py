"""Stopping the embedded cluster ends it even when a clean shutdown cannot: a fast
shutdown waits until every WAL sender's client has confirmed all of the WAL, so a
replication client that stops reading holds it up (until ``wal_sender_timeout``); after
``_FAST_STOP_S`` the cluster is stopped at once instead, and starts again."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from millpond.server.postgres import embedded
from millpond.server.postgres.embedded import EmbeddedPostgres


def test_a_stuck_replication_client_does_not_keep_the_cluster_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedded, "_FAST_STOP_S", 2)
    pg = EmbeddedPostgres(tmp_path / "data")
    pg.start()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
    stuck = psycopg.connect(pg.url() + "&replication=database", autocommit=True)
    try:
        stuck.execute("CREATE_REPLICATION_SLOT stuck TEMPORARY LOGICAL pgoutput")
        stuck.pgconn.send_query(
            b"START_REPLICATION SLOT stuck LOGICAL 0/0"
            b" (proto_version '1', publication_names 'everything')"
        )  # and never read nor confirm anything
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        pg.stop()
        assert not pg.is_running()
        assert "did not stop within 2 s" in caplog.text  # the fast shutdown was held up
    finally:
        stuck.pgconn.finish()
    pg.start()  # after crash recovery
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    pg.stop()
