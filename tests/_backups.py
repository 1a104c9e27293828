"""Helpers of the tests of one database's backup and restore: the superuser's view of
the test cluster, archives made by ``pg_dump`` of scratch databases (the superuser's, so
they may hold what no tenant could make), and backup files around them."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql

from millpond.models.backups import BackupManifest, encode_head, parse_head
from millpond.server.postgres.embedded import PORT, SUPERUSER, EmbeddedPostgres, bin_dir
from millpond.server.testing import ServerThread

TOOL_APP = "millpond-backup"
"""The ``application_name`` of the server's pg_dump and pg_restore sessions."""

OBJECTS_SQL = """
SELECT 'relation', n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname !~ '^pg_(toast_)?temp_'
UNION ALL
SELECT 'function', n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       p.prokind::text, pg_get_userbyid(p.proowner)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'type', n.nspname, t.typname, t.typtype::text, pg_get_userbyid(t.typowner)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND t.typrelid = 0 AND t.typelem = 0
UNION ALL
SELECT 'schema', n.nspname, '', '', pg_get_userbyid(n.nspowner) FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'public')
  AND n.nspname !~ '^pg_(toast_)?temp_'
UNION ALL
SELECT 'large object', '', oid::text, '', pg_get_userbyid(lomowner)
FROM pg_largeobject_metadata
ORDER BY 1, 2, 3
"""
"""What a database holds of its own: (kind, schema, name, subkind, owner)."""


def cluster(server: ServerThread) -> EmbeddedPostgres:
    return EmbeddedPostgres(server.settings.data_dir)


def superuser(server: ServerThread, dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(cluster(server).url(dbname), autocommit=True)


def objects(server: ServerThread, pg_name: str) -> list[tuple[str, ...]]:
    with superuser(server, pg_name) as conn:
        return [tuple(row) for row in conn.execute(OBJECTS_SQL).fetchall()]


def tool_sessions(server: ServerThread, pg_name: str) -> int:
    """The backends of the server's pg_dump or pg_restore on the database."""
    with superuser(server) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (pg_name, TOOL_APP),
        ).fetchone()
    return int(row[0]) if row else 0


def dump_as_superuser(server: ServerThread, dbname: str) -> bytes:
    pg = cluster(server)
    command = [
        str(bin_dir() / "pg_dump"),
        f"--host={pg.socket_dir}",
        f"--port={PORT}",
        f"--username={SUPERUSER}",
        f"--dbname={dbname}",
        "--format=custom",
    ]
    env = {**os.environ, "PGPASSWORD": pg.password_file.read_text().strip()}
    done = subprocess.run(command, env=env, capture_output=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def scratch_archive(server: ServerThread, statements: Iterable[str]) -> bytes:
    """``pg_dump`` of a database the superuser made and ran ``statements`` in."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with superuser(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with superuser(server, name) as conn:
            for statement in statements:
                conn.execute(statement.encode())
        return dump_as_superuser(server, name)
    finally:
        with superuser(server) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


MARKER = "M" * 600
"""The comment a crafted archive's statement replaces (same length: the archive stays valid)."""


def crafted_archive(server: ServerThread, statement: str) -> bytes:
    """An archive that runs ``statement`` where it would set a table's comment: what
    anyone who writes the file by hand can put in one."""
    archive = scratch_archive(
        server, ["CREATE TABLE public.t (id int)", f"COMMENT ON TABLE public.t IS '{MARKER}'"]
    )
    old = f"COMMENT ON TABLE public.t IS '{MARKER}';".encode()
    assert archive.count(old) == 1
    new = statement.encode() + b" --"
    assert len(new) <= len(old), statement
    return archive.replace(old, new.ljust(len(old)))


def as_backup(archive: bytes, database: str = "someone/else", **fields: Any) -> bytes:
    manifest = BackupManifest(
        format=1,
        millpond="0.1.0",
        postgres="16.2",
        database=database,
        created_at=datetime.now(UTC),
        is_private=True,
        **fields,
    )
    return encode_head(manifest) + archive


def archive_of(backup: bytes) -> bytes:
    parsed = parse_head(backup)
    assert parsed is not None
    return backup[parsed[1] :]


def restore_sql(archive: bytes) -> str:
    """The archive as SQL text (``pg_restore --file=-``): what a restore would run."""
    done = subprocess.run(
        [str(bin_dir() / "pg_restore"), "--file=-"],
        input=archive,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def backup(server: ServerThread, key: str, full_name: str) -> httpx.Response:
    """``GET …/backup``, read whole."""
    return httpx.get(
        f"{server.url}/v1/databases/{full_name}/backup",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def restore(server: ServerThread, key: str, full_name: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/databases/{full_name}/restore",
        content=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
