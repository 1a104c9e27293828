"""``SqlAlchemyFlagStore`` on SQLite (file and memory) and on Postgres (a scratch database
of the session's embedded cluster): flypper's gates, versions and delta sync, soft delete,
contexts, the SDK client on top, ORM mapping, and the error without SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.orm import Session, registry, scoped_session, sessionmaker
from sqlalchemy.pool import StaticPool

from millpond import Millpond
from millpond.flags import SqlAlchemyFlagStore, build_flags_table
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread

ACTORS = {"actor_key": "user_id", "actor_ids": ["1", "2"]}
TIER = {
    "value": True,
    "conditions": [
        {"condition_type": "trait", "trait_key": "tier", "trait_value": "gold"},
    ],
}


@pytest.fixture(scope="module")
def postgres_url(server: ServerThread) -> Iterator[str]:
    pg = EmbeddedPostgres(server.settings.data_dir)
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS flag_store_test")
        conn.execute("CREATE DATABASE flag_store_test")
    yield pg.url("flag_store_test").replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE flag_store_test WITH (FORCE)")


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite-memory":
        made = create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    elif request.param == "sqlite-file":
        made = create_engine(f"sqlite:///{tmp_path / 'flags.db'}")
    else:
        made = create_engine(request.getfixturevalue("postgres_url"))
    yield made
    with made.begin() as conn:
        MetaData().reflect(conn)
        for table in ("millpond_flags", "millpond_flags_metadata"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    made.dispose()


@pytest.fixture
def store(engine: Engine) -> SqlAlchemyFlagStore:
    made = SqlAlchemyFlagStore(engine=engine, ttl=0)
    made.create_tables()
    return made


def test_flypper_gates(store: SqlAlchemyFlagStore) -> None:
    store.upsert_flag("on")
    store.upsert_flag("off", enabled=False, enabled_for_actors=ACTORS)
    store.upsert_flag("actors", enabled_for_actors=ACTORS)
    store.upsert_flag(
        "rollout", enabled_for_percentage_of_actors={"actor_key": "user_id", "percentage": 30}
    )
    store.upsert_flag("tier", rules=[TIER])
    assert store.check_flag("on") and not store.check_flag("off", user_id="1")
    assert store.check_flag("actors", user_id="1") and not store.check_flag("actors", user_id="3")
    share = sum(store.check_flag("rollout", user_id=str(i)) for i in range(2000)) / 2000
    assert 0.26 < share < 0.34
    assert store.check_flag("rollout", user_id="7") == store.check_flag("rollout", user_id="7")
    assert store.evaluate(["tier"], {"id": "a"}, None, company_traits={"tier": "gold"})[0].value
    assert not store.check_flag("nope")


def test_versions_soft_delete_and_restore(store: SqlAlchemyFlagStore) -> None:
    first = store.upsert_flag("f")
    second = store.upsert_flag("g")
    assert second.version == first.version + 1
    deleted = store.delete_flag("f")
    assert deleted.deleted and deleted.version > second.version
    assert not store.check_flag("f")
    assert [r.key for r in store.list_flags()] == ["g"]
    assert [r.key for r in store.list_flags(deleted=True)] == ["f"]
    store.restore_flag("f")
    assert store.check_flag("f")
    with pytest.raises(KeyError):
        store.delete_flag("nope")


def test_delta_sync_between_two_stores(engine: Engine) -> None:
    now = [0.0]
    writer = SqlAlchemyFlagStore(engine=engine, ttl=0)
    writer.create_tables()
    reader = SqlAlchemyFlagStore(engine=engine, ttl=5, clock=lambda: now[0])
    writer.upsert_flag("f")
    assert reader.check_flag("f")  # first check syncs
    writer.upsert_flag("f", enabled=False)
    assert reader.check_flag("f")  # within the TTL: the cached copy
    now[0] = 5.0
    assert not reader.check_flag("f")  # past it: only the changed row is read
    assert reader.sync(force=True) == 0  # nothing newer


def test_contexts(store: SqlAlchemyFlagStore) -> None:
    store.upsert_flag("actors", enabled_for_actors=ACTORS)
    with store.context(user_id="1") as ctx:
        assert ctx.is_enabled("actors")
        store.upsert_flag("actors", enabled=False)
        assert ctx.is_enabled("actors")  # one snapshot for the request
        assert ctx.is_disabled("actors", user_id="3")  # its own entries: its own check
    with store.context(user_id="1") as ctx:
        assert ctx.is_disabled("actors")
    with pytest.raises(TypeError):
        store.check_flag("actors", account_id="1")


def test_the_sdk_client_answers_from_the_store(store: SqlAlchemyFlagStore) -> None:
    store.upsert_flag("actors", enabled_for_actors=ACTORS)
    with Millpond(offline=True, flag_store=store) as mp:
        assert mp.check_flag("actors", user={"id": "2"}) is True
        assert mp.check_flag("actors", user={"id": "9"}) is False
        with mp.flag_context(user_id="1") as ctx:
            assert ctx.is_enabled("actors")


def test_a_session_works_too(engine: Engine) -> None:
    factory = scoped_session(sessionmaker(bind=engine))
    store = SqlAlchemyFlagStore(session=factory, ttl=0)
    store.create_tables()
    store.upsert_flag("f")
    assert store.check_flag("f")
    with Session(engine) as plain:
        assert SqlAlchemyFlagStore(session=plain, ttl=0).check_flag("f")
    factory.remove()
    with pytest.raises(ValueError):
        SqlAlchemyFlagStore()


def test_tables_map_to_orm_classes(engine: Engine) -> None:
    metadata = MetaData()
    table = build_flags_table(metadata)
    SqlAlchemyFlagStore.build_metadata_table(metadata)
    metadata.create_all(engine)

    class FlagModel:
        key: str
        version: int
        deleted: bool

    mapper = registry()
    mapper.map_imperatively(FlagModel, table)
    store = SqlAlchemyFlagStore(engine=engine, ttl=0, metadata=metadata)
    store.upsert_flag("mapped")
    with Session(engine) as session:
        found: Any = session.get(FlagModel, "mapped")
        assert found.version == 1 and found.deleted is False
    mapper.dispose()


def test_without_sqlalchemy_the_error_says_what_to_install() -> None:
    # millpond.flags imports each name when first used: FlypperStorage needs no SQLAlchemy
    code = (
        "import sys; sys.modules['sqlalchemy'] = None; import millpond.flags;"
        " from millpond.flags import FlypperStorage; from millpond.flags import SqlAlchemyFlagStore"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and 'pip install "millpond[sqlalchemy]"' in done.stderr
    assert "SqlAlchemyFlagStore" in done.stderr


def test_without_flypper_the_error_says_what_to_install() -> None:
    code = "import sys; sys.modules['flypper'] = None; from millpond.flags import FlypperStorage"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "pip install flypper==0.1.7" in done.stderr
