"""A Postgres cluster millpond runs databases on: embedded (pgserver wheel) or external
(a URL).

The *home* cluster is the one the server starts on (the embedded one, or
``MILLPOND_DATABASE_URL``) and holds the control database; others are added by URL
(``server/clusters/``) and hold user databases only. Everything else asks this object
(or, for sessions with the superuser's rights, :mod:`.privileged`) for connection
strings; it is the one place that knows where Postgres is. Its raw superuser connection
string is for :mod:`.privileged` alone, which pins the settings of every privileged
session.
"""

from __future__ import annotations

import logging
from typing import Literal

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..config import Settings
from . import privileged
from .availability import Availability
from .embedded import EmbeddedPostgres

_log = logging.getLogger("millpond.postgres")


HOME = "default"
"""The home cluster's name in the ``clusters`` table."""


class Cluster:
    def __init__(self, settings: Settings, name: str = HOME, url: str | None = None) -> None:
        """The home cluster from ``settings``; with ``url``, another cluster, ``name``."""
        self.settings = settings
        self.name = name
        self.home = url is None
        self._url = settings.database_url if url is None else url
        self.embedded: EmbeddedPostgres | None = (
            EmbeddedPostgres(settings.data_dir, allow_root_setup=settings.allow_root_setup)
            if self._url is None
            else None
        )
        self._base: str | None = None
        self.replication_password: str | None = None
        """Set by ``provision.ensure_replication_role`` once the role exists."""
        self.availability = Availability()
        """Up or down, as the supervisor (``supervisor.py``) last saw it."""

    @property
    def mode(self) -> Literal["embedded", "external"]:
        return "embedded" if self.embedded else "external"

    def start(self) -> None:
        """Start the embedded cluster if there is one; on the home cluster, make sure the
        control database exists with ``CONNECT`` revoked from ``PUBLIC``."""
        if self.embedded:
            self.embedded.start()
            self._base = self.embedded.url()
        else:
            assert self._url is not None
            self._base = self._url
        if self.home:
            self._ensure_control_database()

    def stop(self) -> None:
        if self.embedded:
            self.embedded.stop()

    def admin_conninfo(self, dbname: str | None = None) -> str:
        """Superuser (or the configured admin role) connection string for ``dbname``;
        ``None`` means the maintenance database of the URL (``postgres`` when embedded).
        Raw, without pinned settings: only :mod:`.privileged` may use it."""
        if self._base is None:
            raise RuntimeError("cluster not started")
        if dbname is None:
            return self._base
        return make_conninfo(self._base, dbname=dbname)

    def server_conninfo(self) -> str:
        """Where Postgres listens (host, port, TLS parameters), with no credentials."""
        return make_conninfo(self.admin_conninfo(), user=None, password=None, dbname=None)

    def role_conninfo(self, dbname: str, role: str, password: str, **options: str) -> str:
        """Connection string for a least-privilege login role."""
        params = {k: v for k, v in conninfo_to_dict(self.admin_conninfo(dbname)).items()}
        params.update(user=role, password=password, **options)
        return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})

    def address(self) -> str:
        """Where it listens, for people: ``host:port`` (a socket directory's path is not
        shown), no credentials."""
        params = conninfo_to_dict(self.server_conninfo())
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        port = str(params.get("port") or "5432")
        return f"local socket, port {port}" if host.startswith("/") else f"{host}:{port}"

    @property
    def control_conninfo(self) -> str:
        """The control database, as the superuser, with the pinned settings (the home
        cluster's only)."""
        if not self.home:
            raise RuntimeError(f"cluster {self.name} holds no control database")
        return privileged.control_conninfo(self)

    def _ensure_control_database(self) -> None:
        name = self.settings.control_database
        with privileged.connect(self) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)
            )
            if exists.fetchone() is None:
                _log.info("creating control database %s", name)
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
            )
            if self.embedded:
                for db in ("postgres", "template1"):
                    conn.execute(
                        sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                            sql.Identifier(db)
                        )
                    )
