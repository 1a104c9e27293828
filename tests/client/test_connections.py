"""Direct connections from the SDK through the session server's Postgres gateway:
``connection_string``, ``get_connection``, ``pooled_connection``, ``pooled_cursor``
(commit/rollback, reuse, broken connections replaced, threads, fork), async twins, and
the error when psycopg is missing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest

from conftest import in_forked_child
from millpond import AsyncMillpond, ConfigurationError, Millpond
from millpond.server.postgres.embedded import EmbeddedPostgres
from millpond.server.testing import ServerThread


@pytest.fixture
def owned(
    make_user: Callable[..., tuple[str, str]], base_url: str, server: ServerThread
) -> Iterator[tuple[Millpond, str]]:
    _, key = make_user(prefix="direct")
    port = server.settings.gateway_port
    with Millpond(api_key=key, base_url=base_url, gateway_port=port, pool_max_size=3) as mp:
        db = mp.databases.create("direct").full_name
        mp.query(db, "CREATE TABLE t (id int PRIMARY KEY)")
        yield mp, db


def _count(mp: Millpond, db: str) -> int:
    return int(mp.query(db, "SELECT count(*) FROM t").data[0][0])


def test_connection_string(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Millpond(api_key="mp_secret", base_url="https://db.example.com/x") as mp:
        assert mp.connection_string("alice/shop") == (
            "host=db.example.com port=5433 dbname=alice/shop user=millpond sslmode=require"
            " password=mp_secret"
        )
        assert "password" not in mp.connection_string("alice/shop", with_password=False)
        monkeypatch.setenv("MILLPOND_GATEWAY_PORT", "6543")
        assert "port=6543" in mp.connection_string("alice/shop")
        monkeypatch.setenv("MILLPOND_GATEWAY_PORT", "x")
        with pytest.raises(ConfigurationError, match="MILLPOND_GATEWAY_PORT"):
            mp.connection_string("alice/shop")
        with pytest.raises(ValueError):
            mp.connection_string("no-owner")
    with Millpond(api_key="mp_x", base_url=base_url, gateway_port=7000) as mp:
        assert "host=127.0.0.1 port=7000" in mp.connection_string("a/b")
        assert "sslmode=prefer" in mp.connection_string("a/b")  # loopback


def test_get_connection(owned: tuple[Millpond, str]) -> None:
    mp, db = owned
    with mp.get_connection(db) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert _count(mp, db) == 1
    with mp.get_connection(db, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0].endswith("_owner")  # type: ignore[index]


def test_pooled_cursor_commits_or_rolls_back(owned: tuple[Millpond, str]) -> None:
    mp, db = owned
    with mp.pooled_cursor(db) as cur:
        cur.execute("INSERT INTO t VALUES (1), (2)")
    assert _count(mp, db) == 2
    with pytest.raises(RuntimeError), mp.pooled_cursor(db) as cur:
        cur.execute("INSERT INTO t VALUES (3)")
        raise RuntimeError("boom")
    with pytest.raises(psycopg.errors.UniqueViolation), mp.pooled_cursor(db) as cur:
        cur.execute("INSERT INTO t VALUES (4)")
        cur.execute("INSERT INTO t VALUES (1)")
    assert _count(mp, db) == 2


def test_the_pool_reuses_and_replaces_connections(
    owned: tuple[Millpond, str], server: ServerThread
) -> None:
    mp, db = owned
    with mp.pooled_connection(db) as conn:
        first = conn.info.backend_pid
    with mp.pooled_connection(db) as conn:
        assert conn.info.backend_pid == first  # reused
    real_db = mp.query(db, "SELECT current_database()").data[0][0]
    superuser = EmbeddedPostgres(server.settings.data_dir).url(real_db)
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with mp.pooled_cursor(db) as cur:  # the dead one is found and replaced
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_threads_share_the_pool(owned: tuple[Millpond, str]) -> None:
    mp, db = owned
    errors: list[BaseException] = []

    def insert(n: int) -> None:
        try:
            for i in range(5):
                with mp.pooled_cursor(db) as cur:
                    cur.execute("INSERT INTO t VALUES (%s)", (n * 100 + i,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _count(mp, db) == 30


def test_a_forked_child_builds_its_own_pool(owned: tuple[Millpond, str]) -> None:
    mp, db = owned
    with mp.pooled_connection(db) as conn:
        parent_pid = conn.info.backend_pid

    def child() -> bool:
        with mp.pooled_cursor(db) as cur:
            cur.execute("INSERT INTO t VALUES (7) RETURNING pg_backend_pid()")
            row = cur.fetchone()
        return row is not None and row[0] != parent_pid

    assert in_forked_child(child)
    with mp.pooled_connection(db) as conn:  # the parent's pool still works
        assert conn.info.backend_pid == parent_pid
    assert _count(mp, db) == 1


def test_read_only_keys_and_revoked_keys(owned: tuple[Millpond, str], base_url: str) -> None:
    mp, db = owned
    port = mp._connections.port
    reader = mp.keys.create(name="ro", scope="read")
    with Millpond(api_key=reader.secret, base_url=base_url, gateway_port=port) as ro:
        with (
            pytest.raises(
                (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)
            ),
            ro.pooled_cursor(db) as cur,
        ):
            cur.execute("INSERT INTO t VALUES (9)")
        mp.keys.revoke(reader.id)
        with pytest.raises(psycopg.OperationalError):
            ro.get_connection(db)


def test_async_twins(owned: tuple[Millpond, str], base_url: str) -> None:
    mp, db = owned
    key, port = mp._transport.config.api_key, mp._connections.port

    async def main() -> None:
        async with AsyncMillpond(api_key=key, base_url=base_url, gateway_port=port) as amp:
            async with amp.pooled_cursor(db) as cur:
                await cur.execute("INSERT INTO t VALUES (1)")
            async with amp.pooled_connection(db) as conn:
                row = await (await conn.execute("SELECT count(*) FROM t")).fetchone()
                assert row == (1,)
            conn2 = await amp.get_connection(db)
            async with conn2:
                assert (await (await conn2.execute("SELECT 1")).fetchone()) == (1,)

    asyncio.run(main())


def test_pool_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="pool sizes"):
        Millpond(api_key="mp_x", pool_min_size=5, pool_max_size=2)


def test_without_psycopg_the_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg_pool'] = None\n"
        "from millpond import Millpond, ConfigurationError\n"
        "mp = Millpond(api_key='mp_x')\n"
        "try:\n"
        "    mp.pooled_connection('a/b').__enter__()\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
        "mp.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert 'pip install "millpond[postgres]"' in done.stdout, done.stderr
