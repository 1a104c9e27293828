"""Real clients through the gateway — psql, psycopg 3 (sync and async), psycopg2, asyncpg,
SQLAlchemy — each with an API key as the password and ``owner/name`` as the database:
queries, transactions, prepared statements, COPY both ways, LISTEN/NOTIFY, TLS."""

from __future__ import annotations

import asyncio
import io
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import asyncpg
import psycopg
import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from millpond.server.gateway import tls
from millpond.server.postgres.embedded import bin_dir
from millpond.server.testing import ServerThread

from .conftest import Tenant


def _psql() -> str:
    found = shutil.which("psql") or str(bin_dir() / "psql")
    if not Path(found).exists():
        pytest.skip("no psql on this machine")
    return found


# -- psql -------------------------------------------------------------------------------------


def test_psql_queries_copy_and_verified_tls(
    tenant: Tenant, port: int, server: ServerThread
) -> None:
    cert = server.settings.data_dir / tls.CERT_FILE
    conninfo = (
        f"host=localhost port={port} user=whoever dbname={tenant.database}"
        f" sslmode=verify-full sslrootcert={cert}"
    )
    script = (
        "CREATE TABLE notes (id int PRIMARY KEY, body text);\n"
        "BEGIN;\n"
        "INSERT INTO notes VALUES (1, 'kept');\n"
        "COMMIT;\n"
        "BEGIN;\n"
        "INSERT INTO notes VALUES (2, 'rolled back');\n"
        "ROLLBACK;\n"
        "COPY notes FROM STDIN;\n"
        "3\tfrom copy\n"
        "\\.\n"
        "PREPARE by_id(int) AS SELECT body FROM notes WHERE id = $1;\n"
        "EXECUTE by_id(3);\n"
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes;\n"
        "\\conninfo\n"
    )
    result = subprocess.run(
        [_psql(), conninfo, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
        input=script,
        env={**os.environ, "PGPASSWORD": tenant.key},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "from copy" in lines
    assert "1,3" in lines
    assert any("SSL connection" in line for line in lines), result.stdout


def test_psql_refused_with_a_clear_message(tenant: Tenant, port: int) -> None:
    result = subprocess.run(
        [_psql(), f"host=127.0.0.1 port={port} user=x dbname={tenant.database}", "-c", "SELECT 1"],
        env={**os.environ, "PGPASSWORD": "mp_not_a_real_key"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "unknown API key" in result.stderr


# -- psycopg 3 ------------------------------------------------------------------------------


def test_psycopg(tenant: Tenant, port: int) -> None:
    with psycopg.connect(tenant.dsn(port)) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (1, 'one')")
        with pytest.raises(ZeroDivisionError), conn.transaction():
            conn.execute("INSERT INTO items VALUES (2, 'two')")
            raise ZeroDivisionError
        # server-side prepared statements (psycopg prepares after the first repeats)
        for i in range(3):
            row = conn.execute("SELECT name FROM items WHERE id = %s", (1,), prepare=True)
            assert row.fetchone() == ("one",), i
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared is not None and prepared[0] >= 1
        with conn.cursor() as cur:
            with cur.copy("COPY items (id, name) FROM STDIN") as copy:
                for i in range(10, 1010):
                    copy.write_row((i, f"n{i}"))
            out = bytearray()
            with cur.copy("COPY (SELECT id FROM items ORDER BY id) TO STDOUT") as copy:
                for chunk in copy:
                    out += chunk
        conn.commit()
        assert out.decode().split() == ["1", *map(str, range(10, 1010))]
        # the client is told the backend's own pid (with a cancel secret of the gateway's)
        real_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert real_pid is not None and conn.info.backend_pid == real_pid[0]
        user = conn.execute("SELECT current_user").fetchone()
        assert user is not None and user[0].endswith("_owner")


def test_psycopg_listen_notify(tenant: Tenant, port: int) -> None:
    with (
        psycopg.connect(tenant.dsn(port), autocommit=True) as listener,
        psycopg.connect(tenant.dsn(port), autocommit=True) as talker,
    ):
        listener.execute("LISTEN news")
        talker.execute("NOTIFY news, 'hello'")
        got = [(n.channel, n.payload, n.pid) for n in listener.notifies(timeout=10, stop_after=1)]
        assert got == [("news", "hello", talker.info.backend_pid)]  # a pid the client knows


def test_psycopg_over_tls(tenant: Tenant, port: int) -> None:
    with psycopg.connect(tenant.dsn(port, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def test_psycopg_async(tenant: Tenant, port: int) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(
            tenant.dsn(port, sslmode="require"), autocommit=True
        ) as conn:
            await conn.execute("CREATE TABLE t (id int)")
            async with conn.transaction():
                await conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
            async with conn.cursor() as cur:
                async with cur.copy("COPY t FROM STDIN") as copy:
                    await copy.write_row((1000,))
                await cur.execute("SELECT sum(id) FROM t", prepare=True)
                assert await cur.fetchone() == (5050 + 1000,)
            async with await psycopg.AsyncConnection.connect(
                tenant.dsn(port), autocommit=True
            ) as other:
                await conn.execute("LISTEN ping")
                await other.execute("SELECT pg_notify('ping', 'pong')")
                async for note in conn.notifies(timeout=10, stop_after=1):
                    assert note.payload == "pong"

    asyncio.run(main())


# -- psycopg2 ---------------------------------------------------------------------------------


def test_psycopg2(tenant: Tenant, port: int) -> None:
    conn = psycopg2.connect(tenant.dsn(port))
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE p (id int PRIMARY KEY, v text)")
            cur.execute("INSERT INTO p VALUES (%s, %s)", (1, "a"))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO p VALUES (2, 'b')")
        conn.rollback()
        with conn.cursor() as cur:
            cur.copy_expert("COPY p FROM STDIN", io.StringIO("3\tc\n4\td\n"))
            cur.execute("PREPARE q(int) AS SELECT v FROM p WHERE id = $1")
            cur.execute("EXECUTE q(4)")
            assert cur.fetchone() == ("d",)
            out = io.StringIO()
            cur.copy_expert("COPY (SELECT id FROM p ORDER BY id) TO STDOUT", out)
            assert out.getvalue().split() == ["1", "3", "4"]
        conn.commit()
        # LISTEN/NOTIFY
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute("LISTEN bell")
        with psycopg2.connect(tenant.dsn(port)) as other, other.cursor() as cur:
            cur.execute("NOTIFY bell, 'ring'")
        other.close()
        ready, _, _ = select.select([conn], [], [], 10)
        assert ready
        conn.poll()
        assert [n.payload for n in conn.notifies] == ["ring"]
    finally:
        conn.close()


# -- asyncpg ----------------------------------------------------------------------------------


def test_asyncpg(tenant: Tenant, port: int) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=port,
            user="anyone",
            password=tenant.key,
            database=tenant.database,
            ssl="require",
        )
        other = await asyncpg.connect(
            host="127.0.0.1",
            port=port,
            user="anyone",
            password=tenant.key,
            database=tenant.database,
            ssl=False,
        )
        try:
            await conn.execute("CREATE TABLE a (id int PRIMARY KEY, tags text[])")
            async with conn.transaction():
                await conn.execute("INSERT INTO a VALUES ($1, $2)", 1, ["x", "y"])
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO a VALUES (2, '{}')")
                    await conn.execute("INSERT INTO a VALUES (2, '{}')")
            statement = await conn.prepare("SELECT tags FROM a WHERE id = $1")
            assert await statement.fetchval(1) == ["x", "y"]
            await conn.copy_records_to_table("a", records=[(i, [str(i)]) for i in range(3, 503)])
            buffer = io.BytesIO()
            await conn.copy_from_query("SELECT count(*) FROM a", output=buffer)
            assert buffer.getvalue().strip() == b"501"
            got: asyncio.Queue[str] = asyncio.Queue()
            await conn.add_listener("chan", lambda *args: got.put_nowait(args[3]))
            await other.execute("NOTIFY chan, 'via asyncpg'")
            assert await asyncio.wait_for(got.get(), 10) == "via asyncpg"
        finally:
            await conn.close()
            await other.close()

    asyncio.run(main())


# -- SQLAlchemy -------------------------------------------------------------------------------


def test_sqlalchemy(tenant: Tenant, port: int) -> None:
    url = sa.URL.create(
        "postgresql+psycopg",
        username="anyone",
        password=tenant.key,
        host="127.0.0.1",
        port=port,
        database=tenant.database,
        query={"sslmode": "require"},
    )
    engine = sa.create_engine(url, pool_size=2)
    metadata = sa.MetaData()
    people = sa.Table(
        "people",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(people.insert(), [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}])
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(people.insert(), [{"id": 3, "name": "eve"}])
            raise RuntimeError("roll back")
        with engine.connect() as conn:
            names = conn.execute(sa.select(people.c.name).order_by(people.c.id)).scalars().all()
            assert names == ["ada", "bob"]
            assert conn.execute(sa.text("SELECT current_database()")).scalar() != tenant.database
    finally:
        engine.dispose()


def test_terminating_a_backend_by_the_pid_the_client_knows(tenant: Tenant, port: int) -> None:
    """``pg_terminate_backend(conn.info.backend_pid)`` ends that very session, and its
    client learns why (AdminShutdown), as on a direct connection."""
    with (
        psycopg.connect(tenant.dsn(port), autocommit=True) as victim,
        psycopg.connect(tenant.dsn(port), autocommit=True) as other,
    ):
        ended = other.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        assert ended.fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError) as raised:
            for _ in range(50):  # the termination reaches the socket asynchronously
                victim.execute("SELECT 1")
                time.sleep(0.05)
        assert isinstance(raised.value, psycopg.errors.AdminShutdown) or "terminat" in str(
            raised.value
        )
