"""``pg_dump`` and ``pg_restore`` as a database's own ``_owner`` role, never as the
superuser: the one place that starts them (for ``backup.py``).

The tools are the ones shipped next to the embedded Postgres (``embedded.bin_dir()``),
run as asyncio subprocesses with a fresh environment: the connection (password included)
is given as ``PG*`` environment variables, never on the command line, and nothing of the
server's own environment (its ``MILLPOND_*`` settings, a superuser URL) reaches them.

Before a tool logs in as the role, :func:`owner_session` opens a session of it the way
every tenant session is opened: a password the role changed is restored, role-level
settings a caller gave the shared role are removed (``provision.TAMPERED_SETTINGS_SQL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from asyncio.subprocess import Process
from collections.abc import Sequence
from typing import IO, Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import ServiceError, clip
from ..postgres import provision
from ..postgres.availability import connection_lost, unavailable
from ..postgres.cluster import Cluster
from ..postgres.embedded import bin_dir

_log = logging.getLogger("millpond.backup")

PINNED = (
    "-c search_path=pg_catalog,pg_temp -c default_transaction_read_only=off"
    " -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
    " -c client_connection_check_interval=1000"
)
"""Startup options of every session here, the tools' included: they win over settings
of the database and the role. A tool killed mid-statement (its client went away) has its
backend end that statement, and roll back, within a second."""
_SESSION_TIMEOUT = " -c statement_timeout=60000"
_TAMPER_RETRIES = 3
_STDERR_BYTES = 64 * 1024
_ENV_OF = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "channel_binding": "PGCHANNELBINDING",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "require_auth": "PGREQUIREAUTH",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "service": "PGSERVICE",
}


class ToolFailed(Exception):
    """A tool exited non-zero: its first error line (server paths and hosts removed)."""

    def __init__(self, tool: str, line: str, detail: str | None) -> None:
        super().__init__(f"{tool}: {line}")
        self.line = line
        self.detail = detail

    def details(self) -> dict[str, str]:
        found = {"error": self.line}
        if self.detail:
            found["detail"] = self.detail
        return found


class OwnerRole:
    """How to reach one database as its ``_owner`` role."""

    def __init__(
        self, cluster: Cluster, secret: bytes, pg_name: str, dbname: str | None = None
    ) -> None:
        """``dbname``: the database's name in Postgres when it is not ``pg_name`` (one
        fenced for a move: ``provision.fence_database``)."""
        self.cluster = cluster
        self.secret = secret
        self.pg_name = pg_name
        self.dbname = dbname or pg_name
        self.roles = provision.DatabaseRoles(pg_name)
        self.name = self.roles.role("owner")

    def conninfo(self, options: str = PINNED) -> str:
        return self.cluster.role_conninfo(
            self.dbname,
            self.name,
            provision.role_password(self.secret, self.name),
            options=options,
            application_name="millpond-backup",
        )

    def tool_env(self) -> tuple[dict[str, str], list[str]]:
        """The environment of a tool logging in as the role, and its ``--dbname``: the
        database and the connection parameters that have no environment variable."""
        params = {k: str(v) for k, v in conninfo_to_dict(self.conninfo()).items() if v}
        env = {
            "PATH": os.defpath,
            "LC_ALL": "C",
            "HOME": os.environ.get("HOME", "/"),
            "PGCONNECT_TIMEOUT": "10",
        }
        rest = {"dbname": params.pop("dbname", self.dbname)}
        for key, value in params.items():
            if key in _ENV_OF:
                env[_ENV_OF[key]] = value
            elif "password" in key:
                raise RuntimeError(f"{key} cannot be given to pg_dump outside its command line")
            else:
                rest[key] = value
        return env, [f"--dbname={make_conninfo('', **rest)}"]

    def scrubbed(self) -> list[str]:
        """Texts of the server that must not reach a client: where Postgres is, where
        its installation is (an extension's control file names it)."""
        params = conninfo_to_dict(self.conninfo())
        values = [str(params.get(k) or "") for k in ("host", "hostaddr", "password")]
        return [v for v in (*values, str(bin_dir().parent)) if len(v) > 2]

    async def session(self) -> AsyncConnection[Any]:
        """A session of the role (``search_path`` ``pg_catalog``), healed first: see the
        module's docstring. Postgres out of reach: 503 ``postgres_unavailable``."""
        conninfo = self.conninfo(PINNED + _SESSION_TIMEOUT)
        try:
            for _ in range(_TAMPER_RETRIES):
                conn = await self._login(conninfo)
                row = await (await conn.execute(provision.TAMPERED_SETTINGS_SQL)).fetchone()
                if not row or not row[0]:
                    return conn
                await conn.close()
                _log.warning("removing role-level settings of role %s", self.name)
                await asyncio.to_thread(provision.reset_role_settings, self.cluster, self.name)
        except psycopg.OperationalError as exc:
            if connection_lost(exc):
                self.cluster.availability.suspect()
                raise unavailable(exc, self.cluster.availability) from exc
            raise
        raise ServiceError(503, "postgres_unavailable", f"role {self.name} keeps getting settings")

    async def _login(self, conninfo: str) -> AsyncConnection[Any]:
        try:
            return await AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            if "password authentication failed" not in str(exc):
                raise
            _log.warning("restoring the password of role %s", self.name)
            await asyncio.to_thread(provision.reset_password, self.cluster, self.secret, self.name)
            return await AsyncConnection.connect(conninfo, autocommit=True)


async def spawn(
    tool: str, args: Sequence[str], env: dict[str, str], *, stdout: int | IO[bytes] | None = None
) -> Process:
    """Start ``tool`` (``pg_dump``, ``pg_restore``) with ``args``; its stdout goes to
    ``stdout`` (``PIPE``, a file; none), its stderr is piped (read it with
    :func:`errors_of`), its stdin is empty."""
    return await asyncio.create_subprocess_exec(
        str(bin_dir() / tool),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL if stdout is None else stdout,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a signal to the server's process group is not theirs
    )


async def errors_of(process: Process) -> str:
    """What ``process`` wrote on stderr (its first 64 KiB; the rest is read and dropped,
    so it never blocks on a full pipe)."""
    assert process.stderr is not None
    kept = bytearray()
    while chunk := await process.stderr.read(_STDERR_BYTES):
        kept += chunk[: max(0, _STDERR_BYTES - len(kept))]
    return kept.decode(errors="replace")


async def stop(process: Process) -> None:
    """Kill ``process`` if it still runs, and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            process.kill()
    await process.wait()


def failure(tool: str, stderr: str, scrub: Sequence[str]) -> ToolFailed:
    """The first error a tool reported, without the server's paths, hosts or secrets."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    first = next((line for line in lines if "error:" in line), lines[0] if lines else "")
    detail = next((line for line in lines if line.startswith("DETAIL:")), None)

    def clean(text: str) -> str:
        for secret in scrub:
            text = text.replace(secret, "…")
        return clip(text.removeprefix(f"{tool}: ").removeprefix("error: "), 2000)

    return ToolFailed(tool, clean(first) or f"{tool} failed", clean(detail) if detail else None)
