"""Moving from flypper-sqlalchemy 0.1.6: its tables, made in a real Postgres database with
exactly the DDL and rows its code produces, imported into millpond by ``millpond flags
import-flypper URL`` (and ``millpond.flags.import_flypper``), then read by the original
flypper 0.1.7 ``Client`` through ``FlypperStorage``: same flags, same answers per actor.

Where the DDL and rows come from (flypper_sqlalchemy/storage/sqla.py, 0.1.6):
``SqlAlchemyStorage.build_flags_table`` is ``Table("flypper_flags", Column("name", String,
primary_key=True), Column("version", Integer, nullable=False), Column("data", JSON,
nullable=False))`` and ``build_metadata_table`` is ``Table("flypper_metadata",
Column("key", String, primary_key=True), Column("value", String, nullable=False))``;
``metadata.create_all()`` emits for them, on PostgreSQL, the two ``CREATE TABLE`` below
(checked against SQLAlchemy compiling those same columns). Each ``upsert`` first bumps the
``flypper_metadata`` row ``('version', str(n))`` (inserting ``'1'`` the first time), then
inserts or updates the flag's row with ``version = n`` and ``data`` = the flag's
``FlagData`` (name, deleted, enabled, enabled_for_actors, enabled_for_percentage_of_actors,
updated_at = ``time()``, version), serialized by SQLAlchemy's JSON type (``json.dumps``).
A soft delete is an upsert with ``deleted: true``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flypper.client import Client as FlypperClient
from flypper.context import Context as FlypperContext
from flypper.entities.flag import Flag as FlypperFlag
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable
from typer.testing import CliRunner

from conftest import FlagsEnv
from millpond import Millpond
from millpond.cli import app
from millpond.flags import FlypperStorage, import_flypper
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

DDL = [
    "CREATE TABLE flypper_flags (\n\tname VARCHAR NOT NULL, \n\tversion INTEGER NOT NULL, "
    "\n\tdata JSON NOT NULL, \n\tPRIMARY KEY (name)\n)",
    "CREATE TABLE flypper_metadata (\n\tkey VARCHAR NOT NULL, \n\tvalue VARCHAR NOT NULL, "
    "\n\tPRIMARY KEY (key)\n)",
]

ACTORS = {"actor_key": "email", "actor_ids": [f"{i}@x.io" for i in range(0, 300, 7)]}
UPSERTS: list[dict[str, Any]] = [
    # (as the seed and flypper's web UI make them), in the order they were written
    {"name": "flag_name", "enabled_for_actors": {"actor_key": "user_id", "actor_ids": ["42"]}},
    {
        "name": "other_flag_name",
        "enabled_for_actors": {"actor_key": "item_reference", "actor_ids": ["blue-shampoo"]},
    },
    {
        "name": "rollout",
        "enabled_for_percentage_of_actors": {"actor_key": "user_id", "percentage": 30.0},
    },
    {"name": "old"},
    {"name": "old", "deleted": True},
    {"name": "off", "enabled": False, "enabled_for_actors": ACTORS},
    {
        "name": "both",
        "enabled_for_actors": ACTORS,
        "enabled_for_percentage_of_actors": {"actor_key": "company_id", "percentage": 66.6},
    },
    {"name": "app env flag"},  # flypper takes any name; millpond keys are identifiers
]


def flypper_rows() -> tuple[list[tuple[str, int, dict[str, Any]]], int]:
    """flypper_flags rows (name, version, data) as SqlAlchemyStorage.upsert leaves them
    after UPSERTS, and the final version."""
    rows: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for version, upsert in enumerate(UPSERTS, start=1):
        data = {
            "name": upsert["name"],
            "deleted": upsert.get("deleted", False),
            "enabled": upsert.get("enabled", True),
            "enabled_for_actors": upsert.get("enabled_for_actors"),
            "enabled_for_percentage_of_actors": upsert.get("enabled_for_percentage_of_actors"),
            "updated_at": time.time(),
            "version": version,
        }
        rows[upsert["name"]] = (upsert["name"], version, data)
    return list(rows.values()), len(UPSERTS)


def test_the_ddl_is_what_sqlalchemy_emits_for_flypper_sqlalchemy_tables() -> None:
    metadata = MetaData()
    flags = Table(
        "flypper_flags",
        metadata,
        Column("name", String, primary_key=True),
        Column("version", Integer, nullable=False),
        Column("data", JSON, nullable=False),
    )
    meta = Table(
        "flypper_metadata",
        metadata,
        Column("key", String, primary_key=True),
        Column("value", String, nullable=False),
    )
    emitted = [str(CreateTable(t).compile(dialect=postgresql.dialect())) for t in (flags, meta)]
    assert [re.sub(r"\s+", " ", e).strip() for e in emitted] == [
        re.sub(r"\s+", " ", d) for d in DDL
    ]


@pytest.fixture
def flypper_db(server: ServerThread) -> Iterator[str]:
    """A Postgres database holding flypper-sqlalchemy's tables and rows; its URL."""
    pg = EmbeddedPostgres(server.settings.data_dir)
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS flypper_app")
        conn.execute("CREATE DATABASE flypper_app")
    rows, version = flypper_rows()
    with psycopg.connect(pg.url("flypper_app")) as conn:
        for statement in DDL:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO flypper_metadata (key, value) VALUES ('version', %s)", (str(version),)
        )
        for name, row_version, data in rows:
            conn.execute(
                "INSERT INTO flypper_flags (name, version, data) VALUES (%s, %s, %s::json)",
                (name, row_version, json.dumps(data)),
            )
    yield pg.url("flypper_app").replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE flypper_app WITH (FORCE)")


def test_import_flypper_from_postgres(
    flypper_db: str, flags_env: FlagsEnv, base_url: str, tmp_path: Path
) -> None:
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None, "MILLPOND_DATA_DIR": str(tmp_path)}
    argv = ["--url", base_url, "--key", flags_env.key, "flags", "import-flypper", flypper_db]
    done = CliRunner().invoke(app, [*argv, "-e", flags_env.id], env=env)
    assert done.exit_code == 1, done.output  # one flag could not be imported, the others were
    assert json.loads(done.stdout)["flags"] == [
        {"name": n, "outcome": "created"}
        for n in ("flag_name", "other_flag_name", "rollout", "old", "off", "both")
    ]
    assert "error: flag 'app env flag' was not imported: 422" in done.stderr

    with Millpond(api_key=flags_env.bound_key(), base_url=base_url, cache_providers=[]) as mp:
        storage = FlypperStorage(mp)
        imported = {f.name: f for f in storage.list()}
        rows, _ = flypper_rows()
        originals = {name: FlypperFlag(data) for name, _, data in rows if name != "app env flag"}
        assert set(imported) == set(originals)
        fields = [
            "deleted",
            "enabled",
            "enabled_for_actors",
            "enabled_for_percentage_of_actors",
        ]
        for name, original in originals.items():
            assert {f: imported[name].data[f] for f in fields} == {
                f: original.data[f] for f in fields
            }, name
        assert mp.flags.get("old", include_deleted=True).deleted_at is not None

        # flypper's client on millpond answers as flypper-sqlalchemy's flags did
        client = FlypperClient(storage=storage)
        for i in range(300):
            entries = {"user_id": f"u{i}", "company_id": f"c{i}", "email": f"{i}@x.io"}
            context = FlypperContext(client, entries)
            for name, original in originals.items():
                expected = not original.is_deleted and original.is_enabled(**entries)
                assert context.is_enabled(name) is expected, (name, entries)
        # and so does millpond's own check, for the actors it knows
        mp.companies.upsert_user(keys={"id": "42"})
        mp.companies.upsert_user(keys={"item_reference": "blue-shampoo"})
        assert mp.check_flag("flag_name", user={"id": "42"}) is True
        assert mp.check_flag("other_flag_name", user={"item_reference": "blue-shampoo"}) is True

        # again: nothing changes
        before = mp.flags.rulesets(since_version=0)
        again = dict(import_flypper(mp, flypper_db))
        assert {n: o for n, o in again.items() if n != "app env flag"} == dict.fromkeys(
            originals, "unchanged"
        )
        assert mp.flags.rulesets(since_version=0) == before


def test_import_flypper_from_sqlite(flags_env: FlagsEnv, base_url: str, tmp_path: Path) -> None:
    # SQLite keeps SQLAlchemy's JSON as text: the same rows, read back as text
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    rows, version = flypper_rows()
    with engine.begin() as conn:
        for statement in DDL:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(
            "INSERT INTO flypper_metadata (key, value) VALUES ('version', ?)", (str(version),)
        )
        for name, row_version, data in rows[:3]:
            conn.exec_driver_sql(
                "INSERT INTO flypper_flags (name, version, data) VALUES (?, ?, ?)",
                (name, row_version, json.dumps(data)),
            )
    with Millpond(api_key=flags_env.bound_key(), base_url=base_url) as mp:
        assert import_flypper(mp, engine) == [
            ("flag_name", "created"),
            ("other_flag_name", "created"),
            ("rollout", "created"),
        ]
        assert [f.key for f in mp.flags.list()] == ["flag_name", "other_flag_name", "rollout"]
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("no-url-s3cret", "not a SQLAlchemy URL"),
        ("nosuchdb+x://u:s3cret@h/d", "cannot read flypper-sqlalchemy's tables"),
        ("sqlite:///{tmp}/empty.db", "cannot read flypper-sqlalchemy's flypper_flags table"),
    ],
)
def test_import_errors_say_why_and_change_nothing(
    url: str, says: str, flags_env: FlagsEnv, base_url: str, tmp_path: Path
) -> None:
    env = {"MILLPOND_API_KEY": None, "MILLPOND_URL": None, "MILLPOND_DATA_DIR": str(tmp_path)}
    argv = ["--url", base_url, "--key", flags_env.key, "flags", "import-flypper"]
    before = flags_env("GET", "")["version"]
    done = CliRunner().invoke(app, [*argv, url.format(tmp=tmp_path), "-e", flags_env.id], env=env)
    assert done.exit_code != 0 and says in done.stderr, done.output
    assert "s3cret" not in done.output
    assert flags_env("GET", "")["version"] == before
