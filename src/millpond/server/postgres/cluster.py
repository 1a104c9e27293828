"""The Postgres cluster millpond runs on: embedded (pgserver wheel) or external (a URL).

Everything else asks this object (or, for sessions with the superuser's rights,
:mod:`.privileged`) for connection strings; it is the one place that knows where Postgres
is. Its raw superuser connection string is for :mod:`.privileged` alone, which pins the
settings of every privileged session.
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


class Cluster:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedPostgres | None = (
            EmbeddedPostgres(settings.data_dir, allow_root_setup=settings.allow_root_setup)
            if settings.database_url is None
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
        """Start the embedded cluster if there is one, and make sure the control database
        exists with ``CONNECT`` revoked from ``PUBLIC``."""
        if self.embedded:
            self.embedded.start()
            self._base = self.embedded.url()
        else:
            assert self.settings.database_url is not None
            self._base = self.settings.database_url
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

    @property
    def control_conninfo(self) -> str:
        """The control database, as the superuser, with the pinned settings."""
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
