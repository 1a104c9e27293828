"""Create and drop user databases with their least-privilege roles.

Each user database ``mp_db_<id>`` gets four login roles:

* ``mp_db_<id>_ro`` — ``CONNECT``, ``USAGE`` on schemas, ``SELECT`` on tables and
  sequences (through default privileges), and nothing else: read-only is privileges, not
  a session default (the server's sessions for it also start read-only, a convenience);
* ``mp_db_<id>_rw`` — member of ``ro``; ``INSERT``/``UPDATE``/``DELETE``/``TRUNCATE``,
  sequence use, ``CREATE`` in ``public``, ``TEMP``;
* ``mp_db_<id>_owner`` — member of ``rw``; owns the database and the ``public`` schema;
* ``mp_db_<id>_reducer`` — member of ``rw``; the role a published module's reducers run
  as, and the only role of the database that may write logical decoding messages
  (``pg_logical_emit_message``: reducer events), so that no other SQL can forge one.

``CONNECT`` is revoked from ``PUBLIC``, so no other role of the cluster can connect.
Role passwords are derived from the server secret (see :func:`role_password`), so none
is stored anywhere.

What Postgres grants every role by default and a shared role must not have is revoked in
each database (:func:`harden_database`): creating large objects (the ``ro`` role could
otherwise write them), signalling other sessions of the same role
(``pg_terminate_backend``/``pg_cancel_backend``: readers share one role). And the roles
carry no role-level settings of their own: any role may ``ALTER ROLE CURRENT_USER SET …``
(Postgres cannot forbid it), which would change every later session of that role for
everyone sharing it; the server finds such settings whenever it opens a session and
removes them (:func:`reset_role_settings`). Database-level settings stay the owner's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from . import privileged, scram
from .cluster import Cluster

_log = logging.getLogger("millpond.postgres")

SqlRole = Literal["owner", "rw", "ro", "reducer"]
ROLE_SUFFIXES: tuple[SqlRole, ...] = ("owner", "rw", "ro", "reducer")


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


_DROP_ATTEMPTS = 20

HARDENING_VERSION = 3
"""Bumped when :func:`harden_database` changes: databases hardened at an older version
are hardened again at start."""

_LARGE_OBJECT_CREATORS = (
    "pg_catalog.lo_creat(integer)",
    "pg_catalog.lo_create(oid)",
    "pg_catalog.lo_from_bytea(oid, bytea)",
    "pg_catalog.lo_import(text)",
    "pg_catalog.lo_import(text, oid)",
)
_SIGNALS = (
    "pg_catalog.pg_terminate_backend(integer, bigint)",
    "pg_catalog.pg_cancel_backend(integer)",
)
_MESSAGES = (
    "pg_catalog.pg_logical_emit_message(boolean, text, text)",
    "pg_catalog.pg_logical_emit_message(boolean, text, bytea)",
)

TAMPERED_SETTINGS_SQL = """
SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_settings
        WHERE source OPERATOR(pg_catalog.=) ANY (ARRAY['user', 'database user']))
       OPERATOR(pg_catalog.+)
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_db_role_setting s
        JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) s.setrole
        WHERE r.rolname OPERATOR(pg_catalog.=) SESSION_USER)
       OPERATOR(pg_catalog.+)
       CASE WHEN CURRENT_USER OPERATOR(pg_catalog.=) SESSION_USER THEN 0 ELSE 1 END
"""
"""Run in a role's own new session: whether it started with role-level settings
(``ALTER ROLE … SET``, which millpond's roles never have; ``role`` itself is not listed in
``pg_settings``, hence the other two checks), non-zero when it did."""

ROLE_SETTINGS_SQL = (
    "SELECT pg_catalog.count(*) FROM pg_catalog.pg_db_role_setting s"
    " JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) s.setrole"
    " WHERE r.rolname OPERATOR(pg_catalog.=) %s"
)
"""Run on the control database: how many role-level settings a role has."""


def create_database(cluster: Cluster, secret: bytes, pg_name: str) -> None:
    """Create the database and its roles. Safe to re-run after a crash part-way.

    Two sessions and four transactions (each statement in its own would be a WAL flush
    each, about sixty): the roles; ``CREATE DATABASE`` (which cannot be in one); the
    database's grants; then, in the database, its schema, default privileges and
    hardening."""
    roles = DatabaseRoles(pg_name)
    owner, rw, ro, _ = (roles.role(r) for r in ROLE_SUFFIXES)
    db = _ident(pg_name)
    with privileged.connect(cluster) as conn:
        with conn.transaction():
            existing = _create_roles(conn, secret, roles)
            for role in existing:  # roles left by a crash part-way may carry settings
                _reset_role_settings(conn, role)
        found = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (pg_name,))
        if found.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    db, _ident(owner)
                )
            )
        _run(
            conn,
            [
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, _ident(ro)),
                sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, _ident(rw)),
            ],
        )
    statements: list[sql.Composable] = [
        sql.SQL(stmt).format(owner=_ident(owner), ro=_ident(ro), rw=_ident(rw))
        for stmt in (
            "ALTER SCHEMA public OWNER TO {owner}",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {ro}",
            "GRANT CREATE ON SCHEMA public TO {rw}",
        )
    ]
    for creator in (owner, rw):
        statements += [
            sql.SQL(stmt).format(c=_ident(creator), ro=_ident(ro), rw=_ident(rw))
            for stmt in (
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT SELECT ON TABLES TO {ro}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT SELECT ON SEQUENCES TO {ro}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT USAGE ON SCHEMAS TO {ro}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} "
                "GRANT INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES TO {rw}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} GRANT USAGE, UPDATE ON SEQUENCES TO {rw}",
            )
        ]
    with privileged.connect(cluster, pg_name) as conn:
        _run(conn, statements + _hardening(cluster, pg_name))


def _run(conn: psycopg.Connection[Any], statements: list[sql.Composable]) -> None:
    """``statements`` (without parameters) in one transaction and one round trip."""
    with conn.transaction():
        conn.execute(sql.SQL(";\n").join(statements))


def _create_roles(conn: psycopg.Connection[Any], secret: bytes, roles: DatabaseRoles) -> set[str]:
    """Create the database's four roles, or give them back their passwords; and their
    memberships. Idempotent. Returns the roles that existed already."""
    owner, rw, ro, reducer = (roles.role(r) for r in ROLE_SUFFIXES)
    existing = {
        str(r[0])
        for r in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)",
            ([owner, rw, ro, reducer],),
        )
    }
    statements: list[sql.Composable] = []
    for role in (ro, rw, owner, reducer):
        stmt = (
            "ALTER ROLE {} LOGIN PASSWORD {}"
            if role in existing
            else (
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
            )
        )
        statements.append(sql.SQL(stmt).format(_ident(role), _password(secret, role)))
    for member, group in ((ro, rw), (rw, owner), (rw, reducer)):
        statements.append(sql.SQL("GRANT {} TO {}").format(_ident(member), _ident(group)))
    conn.execute(sql.SQL(";\n").join(statements))
    return existing


def _password(secret: bytes, role: str) -> sql.Literal:
    """The role's password as Postgres keeps it: a SCRAM verifier (see ``scram.py``)."""
    return sql.Literal(scram.verifier(role_password(secret, role)))


def ensure_roles(cluster: Cluster, secret: bytes, pg_name: str) -> None:
    """Create the roles a database made by an older version lacks (the reducer role)."""
    with privileged.connect(cluster) as conn, conn.transaction():
        _create_roles(conn, secret, DatabaseRoles(pg_name))


def harden_database(cluster: Cluster, pg_name: str) -> None:
    """Take from ``PUBLIC`` in the database what a shared role must not have, and give
    it back to the roles that may: large objects to writers, signalling sessions to the
    owner. Idempotent."""
    with privileged.connect(cluster, pg_name) as conn:
        _run(conn, _hardening(cluster, pg_name))


def _hardening(cluster: Cluster, pg_name: str) -> list[sql.Composable]:
    roles = DatabaseRoles(pg_name)
    grants = (
        (_LARGE_OBJECT_CREATORS[:3], roles.role("rw")),
        (_SIGNALS, roles.role("owner")),
        (_MESSAGES, roles.role("reducer")),
    )
    statements: list[sql.Composable] = []
    if cluster.replication_password is not None:
        statements.append(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                _ident(pg_name), _ident(privileged.REPLICATION_ROLE)
            )
        )
    for function in (*_LARGE_OBJECT_CREATORS, *_SIGNALS, *_MESSAGES):
        statements.append(sql.SQL(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC"))
    for functions, role in grants:
        for function in functions:
            statements.append(
                sql.SQL(f"GRANT EXECUTE ON FUNCTION {function} TO {{}}").format(_ident(role))
            )
    return statements


def ensure_replication_role(cluster: Cluster, secret: bytes) -> None:
    """Create or refresh :data:`privileged.REPLICATION_ROLE` (``REPLICATION``, nothing
    else) so that WAL streams do not run as the superuser, and note its password on the
    cluster. An external cluster whose admin role may not create such a role keeps
    streaming as that admin (logged)."""
    role = privileged.REPLICATION_ROLE
    attributes = "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT"
    with privileged.connect(cluster) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        verb = "ALTER" if found else "CREATE"
        try:
            conn.execute(
                sql.SQL(f"{verb} ROLE {{}} {attributes} PASSWORD {{}}").format(
                    _ident(role), _password(secret, role)
                )
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            _log.warning("realtime streams WAL as the admin role: cannot create %s: %s", role, exc)
            return
        conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(_ident(role)))
        if cluster.home:
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    _ident(cluster.settings.control_database), _ident(role)
                )
            )
    cluster.replication_password = role_password(secret, role)


def has_role_settings(cluster: Cluster, role: str) -> bool:
    """Whether ``role`` has role-level settings (:data:`ROLE_SETTINGS_SQL`)."""
    with privileged.connect(cluster) as conn:
        row = conn.execute(ROLE_SETTINGS_SQL, (role,)).fetchone()
    return bool(row and row[0])


def reset_role_settings(cluster: Cluster, role: str) -> None:
    """Remove every role-level setting of ``role`` (``ALTER ROLE … SET``, in any
    database): one caller sharing the role must not change the sessions of the others."""
    with privileged.connect(cluster) as conn:
        _reset_role_settings(conn, role)


def _reset_role_settings(conn: psycopg.Connection[Any], role: str) -> None:
    conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(_ident(role)))
    rows = conn.execute(
        "SELECT d.datname FROM pg_catalog.pg_db_role_setting s"
        " JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase"
        " JOIN pg_catalog.pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s",
        (role,),
    ).fetchall()
    for (datname,) in rows:
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(_ident(role), _ident(datname))
        )


def reset_database_roles(cluster: Cluster, pg_name: str) -> None:
    """:func:`reset_role_settings` for the database's roles, on one session."""
    with privileged.connect(cluster) as conn:
        for which in ROLE_SUFFIXES:
            _reset_role_settings(conn, DatabaseRoles(pg_name).role(which))


def reset_password(cluster: Cluster, secret: bytes, role: str) -> None:
    """Give a role back its derived password.

    Postgres lets any role change its own password, and SQL run through millpond runs
    as these roles; when a login fails, the server restores the password and retries.
    On the embedded cluster no one else can reach Postgres, so a changed password
    grants nothing; on an external one, limit these roles to millpond's host in
    pg_hba.conf (see docs/databases.md)."""
    with privileged.connect(cluster) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(_ident(role), _password(secret, role))
        )


def drop_database(cluster: Cluster, pg_name: str) -> None:
    """Drop the database (closing its connections) and its roles. Idempotent."""
    roles = DatabaseRoles(pg_name)
    with privileged.connect(cluster) as conn:
        _drop(conn, pg_name)
        for which in ROLE_SUFFIXES:
            role = roles.role(which)
            exists = conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,))
            if exists.fetchone() is not None:
                conn.execute(sql.SQL("DROP ROLE {}").format(_ident(role)))


def _drop(conn: psycopg.Connection[Any], pg_name: str) -> None:
    """``DROP DATABASE … WITH (FORCE)`` ends the database's sessions but not the WAL
    senders streaming it (any replica's realtime). Give the replicas a moment to close
    their subscribers themselves (they hear of the deletion and close with 4004), then
    end the WAL senders that remain."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(pg_name))
    for attempt in range(_DROP_ATTEMPTS):
        try:
            conn.execute(drop)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == _DROP_ATTEMPTS - 1:
                raise
        time.sleep(0.25)
        if attempt >= 3:
            conn.execute(
                "SELECT pg_catalog.pg_terminate_backend(s.active_pid, 1000)"
                " FROM pg_catalog.pg_replication_slots s"
                " WHERE s.database = %s AND s.active_pid IS NOT NULL",
                (pg_name,),
            )


MOVING_SUFFIX = "_moving"
"""A database being moved to another cluster is renamed ``<pg_name>_moving`` on its source
(:func:`fence_database`): nothing that connects by its name reaches it any more."""


def fence_database(cluster: Cluster, pg_name: str) -> str:
    """End every session of ``pg_name`` (WAL senders too) and rename it out of reach, so
    that no session can write to it while it is copied; returns its new name. A session
    that connects between the two is ended by the next try."""
    fenced = pg_name + MOVING_SUFFIX
    rename = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(pg_name), _ident(fenced))
    with privileged.connect(cluster) as conn:
        for attempt in range(_DROP_ATTEMPTS):
            _terminate_sessions(conn, pg_name)
            try:
                conn.execute(rename)
                return fenced
            except psycopg.errors.ObjectInUse:
                if attempt == _DROP_ATTEMPTS - 1:
                    raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def unfence_database(cluster: Cluster, pg_name: str) -> None:
    """Undo :func:`fence_database` (a move that failed). Idempotent."""
    fenced = pg_name + MOVING_SUFFIX
    with privileged.connect(cluster) as conn:
        found = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (fenced,))
        if found.fetchone() is None:
            return
        _terminate_sessions(conn, fenced)
        conn.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(fenced), _ident(pg_name))
        )


def drop_fenced(cluster: Cluster, pg_name: str) -> None:
    """A moved database's source: drop the fenced copy and the roles. Idempotent."""
    with privileged.connect(cluster) as conn:
        _drop(conn, pg_name + MOVING_SUFFIX)
    drop_database(cluster, pg_name)


def fenced_databases(cluster: Cluster) -> list[str]:
    """The ``pg_name`` of every database left fenced on ``cluster``."""
    with privileged.connect(cluster) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_catalog.pg_database"
            " WHERE datname OPERATOR(pg_catalog.~) '^mp_db_[0-9]+_moving$'"
        ).fetchall()
    return [str(r[0]).removesuffix(MOVING_SUFFIX) for r in rows]


def _terminate_sessions(conn: psycopg.Connection[Any], datname: str) -> None:
    conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(a.pid, 1000) FROM pg_catalog.pg_stat_activity a"
        " WHERE a.datname OPERATOR(pg_catalog.=) %s"
        " AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()",
        (datname,),
    )


def database_sizes(cluster: Cluster, pg_names: list[str]) -> dict[str, int]:
    """The size of each of ``pg_names`` that exists on ``cluster``, in one session."""
    with privileged.connect(cluster) as conn:
        rows = conn.execute(
            "SELECT d.datname, pg_catalog.pg_database_size(d.oid) FROM pg_catalog.pg_database d"
            " WHERE d.datname OPERATOR(pg_catalog.=) ANY(%s)",
            (pg_names,),
        ).fetchall()
    return {str(name): int(size) for name, size in rows}
