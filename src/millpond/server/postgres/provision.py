"""Create and drop user databases with their least-privilege roles.

Each user database ``mp_db_<id>`` gets three login roles:

* ``mp_db_<id>_ro`` — ``CONNECT``, ``USAGE`` on schemas, ``SELECT`` on tables and
  sequences (through default privileges), ``default_transaction_read_only``;
* ``mp_db_<id>_rw`` — member of ``ro``; ``INSERT``/``UPDATE``/``DELETE``/``TRUNCATE``,
  sequence use, ``CREATE`` in ``public``, ``TEMP``;
* ``mp_db_<id>_owner`` — member of ``rw``; owns the database and the ``public`` schema.

``CONNECT`` is revoked from ``PUBLIC``, so no other role of the cluster can connect.
Role passwords are derived from the server secret (see :func:`role_password`), so none
is stored anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import sql

from .cluster import Cluster

SqlRole = Literal["owner", "rw", "ro"]
ROLE_SUFFIXES: tuple[SqlRole, ...] = ("owner", "rw", "ro")


@dataclass(frozen=True)
class DatabaseRoles:
    pg_name: str

    def role(self, which: SqlRole) -> str:
        return f"{self.pg_name}_{which}"


def pg_name_for(database_id: int) -> str:
    return f"mp_db_{database_id}"


def role_password(secret: bytes, role: str) -> str:
    """The password of a login role: an HMAC of its name under the server secret."""
    digest = hmac.new(secret, role.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def create_database(cluster: Cluster, secret: bytes, pg_name: str) -> None:
    """Create the database and its roles. Safe to re-run after a crash part-way."""
    roles = DatabaseRoles(pg_name)
    owner, rw, ro = (roles.role(r) for r in ROLE_SUFFIXES)
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as conn:
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([owner, rw, ro],)
            )
        }
        for role in (ro, rw, owner):
            stmt = (
                "ALTER ROLE {} LOGIN PASSWORD {}"
                if role in existing
                else (
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "PASSWORD {}"
                )
            )
            conn.execute(
                sql.SQL(stmt).format(_ident(role), sql.Literal(role_password(secret, role)))
            )
        conn.execute(sql.SQL("GRANT {} TO {}").format(_ident(ro), _ident(rw)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(_ident(rw), _ident(owner)))
        conn.execute(
            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(_ident(ro))
        )
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg_name,))
        if found.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    _ident(pg_name), _ident(owner)
                )
            )
        for stmt in (
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC",
            "GRANT CONNECT ON DATABASE {db} TO {ro}",
            "GRANT TEMPORARY ON DATABASE {db} TO {rw}",
        ):
            conn.execute(sql.SQL(stmt).format(db=_ident(pg_name), ro=_ident(ro), rw=_ident(rw)))
    with psycopg.connect(cluster.admin_conninfo(pg_name), autocommit=True) as conn:
        for stmt in (
            "ALTER SCHEMA public OWNER TO {owner}",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {ro}",
            "GRANT CREATE ON SCHEMA public TO {rw}",
        ):
            conn.execute(sql.SQL(stmt).format(owner=_ident(owner), ro=_ident(ro), rw=_ident(rw)))
        for creator in (owner, rw):
            for stmt in (
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT SELECT ON TABLES TO {ro}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT SELECT ON SEQUENCES TO {ro}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT USAGE ON SCHEMAS TO {ro}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} "
                "GRANT INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES TO {rw}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT USAGE, UPDATE ON SEQUENCES TO {rw}",
            ):
                conn.execute(sql.SQL(stmt).format(c=_ident(creator), ro=_ident(ro), rw=_ident(rw)))


def reset_password(cluster: Cluster, secret: bytes, role: str) -> None:
    """Give a role back its derived password.

    Postgres lets any role change its own password, and SQL run through millpond runs
    as these roles; when a login fails, the server restores the password and retries.
    On the embedded cluster no one else can reach Postgres, so a changed password
    grants nothing; on an external one, limit these roles to millpond's host in
    pg_hba.conf (see docs/databases.md)."""
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                _ident(role), sql.Literal(role_password(secret, role))
            )
        )


def drop_database(cluster: Cluster, pg_name: str) -> None:
    """Drop the database (closing its connections) and its roles. Idempotent."""
    roles = DatabaseRoles(pg_name)
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(pg_name)))
        for which in ROLE_SUFFIXES:
            role = roles.role(which)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if exists.fetchone() is not None:
                conn.execute(sql.SQL("DROP ROLE {}").format(_ident(role)))


def database_size(cluster: Cluster, pg_name: str) -> int | None:
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (pg_name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None
