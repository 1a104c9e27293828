"""Clusters made from a template (MILLPOND_PG_TEMPLATE, as this test suite runs): the first
``initdb`` fills the template, later clusters are copies, each one its own cluster."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from millpond.server.postgres.embedded import TEMPLATE_ENV, EmbeddedPostgres


def test_clusters_copied_from_a_template_are_separate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    template = tmp_path / "template"
    monkeypatch.setenv(TEMPLATE_ENV, str(template))
    first, second = EmbeddedPostgres(tmp_path / "a"), EmbeddedPostgres(tmp_path / "b")
    caplog.set_level("INFO", logger="millpond.postgres")
    try:
        first.start()
        assert (template / "pg" / "PG_VERSION").exists()  # kept after the first initdb
        assert "initialising embedded Postgres" in caplog.text
        caplog.clear()
        second.start()
        assert "copying the embedded Postgres template" in caplog.text
        assert "initialising" not in caplog.text
        with psycopg.connect(first.url(), autocommit=True) as a:
            a.execute("CREATE DATABASE only_in_a")
        with psycopg.connect(second.url(), autocommit=True) as b:
            names = {r[0] for r in b.execute("SELECT datname FROM pg_database").fetchall()}
        assert "only_in_a" not in names and "postgres" in names
        assert first.socket_dir != second.socket_dir
    finally:
        first.stop()
        second.stop()
