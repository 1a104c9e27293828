"""Privileged sessions: the one module that opens Postgres sessions with more than a
tenant's rights (the superuser, or a replication connection).

A tenant owns its database and can set database- and role-level settings on it
(``ALTER DATABASE mine SET search_path = public, pg_catalog``) and create objects named
like catalogs (a view ``public.pg_publication``). A privileged session that let those
settings apply, or that named anything without its schema, would run the tenant's code
with the server's rights. So every session opened here:

* **pins its settings at connect**: startup options, which Postgres applies *after* the
  database's and the role's own settings and which therefore win over them
  (``search_path`` is ``pg_catalog, pg_temp``, and every other setting a tenant could use
  to change what our SQL means or costs is fixed: see :data:`PINNED`);
* runs only SQL that schema-qualifies what it names (``pg_catalog.…``; a tenant's tables
  through :func:`psycopg.sql.Identifier` with their schema);
* does only what needs the privilege: everything a tenant's own least-privilege role can do
  is done on that role's connections instead (see ``query/service.py``).

``tests/security/test_privileged.py`` fails when any other module opens such a session
(it looks for the cluster's superuser connection string being used elsewhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import make_conninfo

if TYPE_CHECKING:
    from .cluster import Cluster

PINNED: dict[str, str] = {
    # names resolve to the catalogs, never to a tenant's objects (pg_temp last, so even
    # a temporary object cannot shadow a catalog)
    "search_path": "pg_catalog,pg_temp",
    # the session's own identity: ALTER DATABASE … SET role = … would otherwise make the
    # superuser's session run as any role the tenant names
    "role": "none",
    # what SQL means
    "transform_null_equals": "off",
    "standard_conforming_strings": "on",
    "backslash_quote": "safe_encoding",
    "default_transaction_read_only": "off",
    "default_transaction_isolation": "read\\ committed",
    "check_function_bodies": "on",
    "client_encoding": "UTF8",
    # how values are rendered (the WAL decoder renders rows in its session's forms)
    "DateStyle": "ISO",
    "IntervalStyle": "iso_8601",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    # what it may cost or how long it may wait
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "idle_session_timeout": "0",
    "logical_decoding_work_mem": "64MB",
    "wal_sender_timeout": "60s",
    "work_mem": "4MB",
    "temp_buffers": "8MB",
    # nothing loaded or assumed on the tenant's behalf
    "local_preload_libraries": "",
    "default_tablespace": "",
    "temp_tablespaces": "",
    "row_security": "on",
}
"""Settings every privileged session starts with, whatever the database or role says."""


def _options(search_path: str | None = None) -> str:
    pinned = PINNED if search_path is None else {**PINNED, "search_path": search_path}
    return " ".join(f"-c {name}={value}" for name, value in pinned.items())


def options() -> str:
    """The pinned settings as a libpq ``options`` value."""
    return _options()


def conninfo(cluster: Cluster, dbname: str | None = None, **params: str) -> str:
    """The superuser's connection string for ``dbname`` (the maintenance database when
    ``None``), with the pinned settings; ``params`` adds libpq parameters (an
    ``options`` given here is appended after the pinned ones)."""
    extra = params.pop("options", "")
    options = f"{_options(params.pop('search_path', None))} {extra}".strip()
    return make_conninfo(
        cluster.admin_conninfo(dbname),
        options=options,
        application_name=params.pop("application_name", "millpond-admin"),
        **params,
    )


def control_conninfo(cluster: Cluster, **params: str) -> str:
    """The superuser's pinned connection string for the control database — the server's
    own, which no tenant can connect to or configure: its tables are found in ``public``
    (``pg_catalog`` is still searched first, as always when a path does not name it)."""
    return conninfo(cluster, cluster.settings.control_database, search_path="public", **params)


REPLICATION_ROLE = "millpond_replication"
"""The login role WAL streams connect as: ``REPLICATION``, no superuser, no privilege on
any table (logical decoding needs none), ``CONNECT`` on the databases it streams."""


def replication_conninfo(cluster_or_conninfo: Cluster | str, dbname: str | None = None) -> str:
    """A ``replication=database`` connection string for the WAL stream of ``dbname``: as
    :data:`REPLICATION_ROLE` when the cluster has it (``cluster.replication_password``),
    else as the superuser; settings pinned either way. Given a connection string made by
    this module, the same string in replication mode."""
    if isinstance(cluster_or_conninfo, str):
        base = cluster_or_conninfo
    elif cluster_or_conninfo.replication_password is not None:
        base = cluster_or_conninfo.role_conninfo(
            dbname or "postgres",
            REPLICATION_ROLE,
            cluster_or_conninfo.replication_password,
            options=_options(),
        )
    else:
        base = conninfo(cluster_or_conninfo, dbname)
    return make_conninfo(base, replication="database", application_name="millpond-realtime")


def connect(cluster: Cluster, dbname: str | None = None) -> psycopg.Connection[Any]:
    """A pinned autocommit superuser session on ``dbname``."""
    return psycopg.connect(conninfo(cluster, dbname), autocommit=True)


async def connect_async(conninfo_: str) -> psycopg.AsyncConnection[Any]:
    """A pinned autocommit session from a connection string made by this module."""
    return await psycopg.AsyncConnection.connect(conninfo_, autocommit=True)


async def terminate_backend(cluster: Cluster, pid: int, role: str) -> bool:
    """Terminate the backend ``pid`` if it is still a session of ``role`` (a pid alone
    could have been reused), waiting up to a second for it to exit. A terminated
    backend ends whatever it runs: unlike a cancel, no exception handler catches it."""
    async with await connect_async(conninfo(cluster)) as conn:
        cur = await conn.execute(
            "SELECT pg_catalog.pg_terminate_backend(a.pid, 1000)"
            " FROM pg_catalog.pg_stat_activity a"
            " WHERE a.pid OPERATOR(pg_catalog.=) %s AND a.usename OPERATOR(pg_catalog.=) %s",
            (pid, role),
        )
        row = await cur.fetchone()
    return bool(row and row[0])
