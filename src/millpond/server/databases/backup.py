"""One database's backup and restore, over the API, for its owner and admins.

``GET /v1/databases/{owner}/{name}/backup`` streams the file ``models/backups.py``
describes: the magic line, the manifest (versions, the database's name and millpond
attributes, the privileges of its roles that differ from the defaults —
``backup_grants.py``), then ``pg_dump --format=custom`` of the database as it writes it.

``POST …/restore`` takes such a file as its body (streamed to disk, capped at
``transfer_max_file_bytes``) into a database with no objects of its own yet, with
``pg_restore --single-transaction``: all of it or nothing.

Both tools run as the database's ``_owner`` role (``pg_tools.py``), never as a superuser:
the archive is the tenant's SQL, and restoring it can do no more than its owner could
with any SQL. Left out of every backup: millpond's internal schema
(``row_visibility.SCHEMA``: a key derived from the server secret), ownership, grants
(``--no-acl``: the manifest carries what matters), publications and subscriptions; left
out of every restore: the policies of row visibility rules (a module makes them again
when it is published), tablespaces and security labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..._version import __version__
from ...models.backups import (
    FORMAT,
    MAX_HEAD_BYTES,
    BackupManifest,
    DatabaseRestore,
    NotABackup,
    encode_head,
    parse_head,
)
from ..accounts.service import Principal
from ..budget import BudgetExceeded, ConnectionBudget
from ..errors import ServiceError
from ..modules.row_visibility import REDUCER_POLICY, RULE_POLICY
from ..modules.row_visibility import SCHEMA as INTERNAL_SCHEMA
from ..transfer.upload import too_large
from . import backup_grants, pg_tools
from .service import Access, DatabaseService, resolve

CHUNK = 256 * 1024
_STALE_S = 24 * 3600
DUMP_ARGS = (
    "--format=custom",
    "--no-owner",
    "--no-acl",
    "--no-publications",
    "--no-subscriptions",
    "--no-tablespaces",
    "--no-security-labels",
    f"--exclude-schema={INTERNAL_SCHEMA}",
    "--lock-wait-timeout=60000",
)
_RESTORE_ARGS = (
    "--no-owner",
    "--no-acl",
    "--exit-on-error",
    "--single-transaction",
    "--no-publications",
    "--no-subscriptions",
    "--no-tablespaces",
    "--no-security-labels",
)
_SKIPPED_POLICY = re.compile(
    rf"^\d+; \d+ \d+ POLICY .* (?:{RULE_POLICY}|{REDUCER_POLICY})(?: \S*)?$"
)
"""A row visibility rule's policies in ``pg_restore --list``: they call the internal
schema's function, which is not restored (publishing the module makes them again)."""

_OBJECTS_SQL = f"""
SELECT kind, pg_catalog.count(*) FROM (
    SELECT 'schemas' AS kind FROM pg_catalog.pg_namespace n
    WHERE {backup_grants.USER_SCHEMA} AND n.nspname <> 'public'
    UNION ALL SELECT 'relations' FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {backup_grants.USER_SCHEMA}
    UNION ALL SELECT 'functions' FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {backup_grants.USER_SCHEMA}
    UNION ALL SELECT 'types' FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE {backup_grants.USER_SCHEMA} AND t.typrelid = 0 AND t.typelem = 0
    UNION ALL SELECT 'operators' FROM pg_catalog.pg_operator o
    JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace WHERE {backup_grants.USER_SCHEMA}
    UNION ALL SELECT 'collations' FROM pg_catalog.pg_collation l
    JOIN pg_catalog.pg_namespace n ON n.oid = l.collnamespace WHERE {backup_grants.USER_SCHEMA}
    UNION ALL SELECT 'text search configurations' FROM pg_catalog.pg_ts_config f
    JOIN pg_catalog.pg_namespace n ON n.oid = f.cfgnamespace WHERE {backup_grants.USER_SCHEMA}
    UNION ALL SELECT 'extensions' FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'
    UNION ALL SELECT 'large objects' FROM pg_catalog.pg_largeobject_metadata
) AS found GROUP BY kind ORDER BY kind
"""
"""What a database holds of its own (as its owner sees it): a restore needs none."""

Disconnected = Callable[[], Awaitable[None]]
"""Returns when the client has gone away."""


class BackupStream:
    """A backup being sent: the manifest, then the chunks of ``pg_dump``'s output.
    :meth:`close` (idempotent) ends ``pg_dump`` and gives back the connection budget;
    the route calls it however the response ends."""

    def __init__(
        self,
        manifest: BackupManifest,
        process: Process,
        errors: asyncio.Future[str],
        first: bytes,
        release: Callable[[], None],
    ) -> None:
        self.manifest = manifest
        self._process = process
        self._errors = errors
        self._first = first
        self._release: Callable[[], None] | None = release

    @property
    def filename(self) -> str:
        owner, _, name = self.manifest.database.partition("/")
        return f"{owner}-{name}.mpdb"

    async def chunks(self) -> AsyncIterator[bytes]:
        yield encode_head(self.manifest)
        yield self._first
        stdout = self._process.stdout
        assert stdout is not None
        while chunk := await stdout.read(CHUNK):
            yield chunk
        code = await self._process.wait()
        if code != 0:  # the answer began with 200: cut it short, the client sees it broken
            stderr = await self._errors
            raise RuntimeError(f"pg_dump of {self.manifest.database} failed: {stderr.strip()}")

    async def close(self) -> None:
        await pg_tools.stop(self._process)
        with contextlib.suppress(Exception):
            await self._errors
        release, self._release = self._release, None
        if release is not None:
            release()


class Backups:
    """Backups and restores of single databases (see the module's docstring)."""

    def __init__(self, databases: DatabaseService, budget: ConnectionBudget) -> None:
        self.databases = databases
        self.store = databases.store
        self.cluster = databases.cluster
        self.secret = databases.secret
        self.settings = databases.settings
        self.budget = budget
        self.root = (self.settings.data_dir / "restores").resolve()

    async def _role(self, access: Access) -> pg_tools.OwnerRole:
        cluster = await self.databases.clusters.cluster_of(access.cluster)
        cluster.availability.check()
        return pg_tools.OwnerRole(cluster, self.secret, access.pg_name)

    async def _hold(self, principal: Principal) -> Callable[[], None]:
        """Count the tool's connection against the caller's budget and the server's
        tenant connections (as a gateway session's); returns what gives it back."""
        exempt = principal.is_admin and self.settings.account_limits_exempt_admins
        try:
            return await self.budget.session(principal.user_id, principal.username, exempt)
        except BudgetExceeded as exc:
            raise exc.service_error() from None

    # -- backup ------------------------------------------------------------------------------

    async def backup(self, principal: Principal, full_name: str) -> BackupStream:
        """Start the backup of ``full_name`` (``admin`` access): the manifest is made and
        ``pg_dump`` has written its first bytes (a failure before those is an error
        answer, 400 ``backup_failed``); the rest streams from :class:`BackupStream`."""
        self.cluster.availability.check()
        access = await resolve(self.store, principal, full_name, need="admin")
        release = await self._hold(principal)
        process: Process | None = None
        try:
            role = await self._role(access)
            manifest = await self._manifest(access, role)
            env, extra = role.tool_env()
            process = await pg_tools.spawn("pg_dump", [*DUMP_ARGS, *extra], env, stdout=PIPE)
            errors = asyncio.ensure_future(pg_tools.errors_of(process))
            assert process.stdout is not None
            first = await process.stdout.read(CHUNK)
            if not first:
                code = await process.wait()
                failed = pg_tools.failure("pg_dump", await errors, role.scrubbed())
                raise _backup_failed(failed, code)
        except BaseException:
            if process is not None:
                await pg_tools.stop(process)
            release()
            raise
        return BackupStream(manifest, process, errors, first, release)

    async def _manifest(self, access: Access, role: pg_tools.OwnerRole) -> BackupManifest:
        async with await role.session() as conn:
            row = await (await conn.execute("SHOW server_version")).fetchone()
            grants = await backup_grants.capture(conn, role.roles)
        return BackupManifest(
            format=FORMAT,
            millpond=__version__,
            postgres=str(row[0]) if row else "",
            database=access.full_name,
            created_at=datetime.now(UTC),
            is_private=access.is_private,
            storage_limit_bytes=access.storage_limit_bytes,
            grants=grants,
        )

    # -- restore -----------------------------------------------------------------------------

    async def restore(
        self,
        principal: Principal,
        full_name: str,
        body: AsyncIterator[bytes],
        disconnected: Disconnected,
    ) -> DatabaseRestore:
        """Restore the backup streamed in ``body`` into ``full_name`` (``admin`` access;
        it must hold no objects). Refused before the body is read whole, the rest of it is
        read and dropped first, so that the client hears why."""
        started = time.perf_counter()
        received = _Body(body)
        release: Callable[[], None] | None = None
        try:
            self.cluster.availability.check()
            access = await resolve(self.store, principal, full_name, need="admin")
            release = await self._hold(principal)
            role = await self._role(access)
            await self._check_empty(role, access)
        except ServiceError:
            if release is not None:
                release()
            await received.drain(self.settings.transfer_max_file_bytes)
            raise
        assert release is not None
        try:
            return await self._restore(access, role, received, disconnected, started)
        finally:
            release()

    async def _restore(
        self,
        access: Access,
        role: pg_tools.OwnerRole,
        body: _Body,
        disconnected: Disconnected,
        started: float,
    ) -> DatabaseRestore:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(_remove_stale, self.root)
        with tempfile.TemporaryDirectory(dir=self.root, prefix="restore-") as folder:
            archive = Path(folder) / "archive.dump"
            manifest = await self._receive(body, archive)
            listing = await self._listing(archive)
            await self._check_empty(role, access)  # again: the upload took a while
            await self._pg_restore(role, archive, listing, disconnected)
        async with await role.session() as conn:
            await backup_grants.apply(conn, role.roles, manifest.grants)
        return DatabaseRestore(
            database=access.full_name,
            manifest=manifest,
            bytes=body.size,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def _check_empty(self, role: pg_tools.OwnerRole, access: Access) -> None:
        found = await _objects(role)
        if found:
            raise ServiceError(
                409,
                "database_not_empty",
                f"{access.full_name} is not empty ({_listed(found)}): restore into a new"
                " database, or drop what it holds first",
                {"objects": found},
            )

    async def _receive(self, body: _Body, archive: Path) -> BackupManifest:
        """The backup's head, checked as soon as it is in; its archive written to
        ``archive``. A file that is not a backup: 400 before the rest is read."""
        limit = self.settings.transfer_max_file_bytes
        head = b""
        parsed: tuple[BackupManifest, int] | None = None
        with archive.open("wb") as out:
            async for chunk in body.chunks(limit):
                if parsed is None:
                    head += chunk
                    parsed = await self._head(head, body)
                    if parsed is not None:
                        out.write(head[parsed[1] :])
                else:
                    out.write(chunk)
        if parsed is None:
            raise _invalid("the file ends before its pg_dump archive begins")
        return parsed[0]

    async def _head(self, head: bytes, body: _Body) -> tuple[BackupManifest, int] | None:
        try:
            parsed = parse_head(head[:MAX_HEAD_BYTES])
        except NotABackup as exc:
            await body.drain(self.settings.transfer_max_file_bytes)
            if exc.unsupported is not None:
                raise ServiceError(
                    400, "unsupported_backup_format", str(exc), {"format": exc.unsupported}
                ) from None
            raise _invalid(str(exc)) from None
        return parsed

    async def _listing(self, archive: Path) -> Path:
        return await read_listing(archive)

    async def _pg_restore(
        self, role: pg_tools.OwnerRole, archive: Path, listing: Path, disconnected: Disconnected
    ) -> None:
        await run_pg_restore(role, archive, listing, disconnected)


async def read_listing(archive: Path) -> Path:
    """The archive's table of contents as ``pg_restore --use-list`` takes it, less
    the row visibility policies; a file pg_restore cannot read: 400. (Through files:
    a crafted archive's table of contents may be as long as the file.)"""
    raw, listing = archive.with_name("contents"), archive.with_name("listing")
    env = {"PATH": os.defpath, "LC_ALL": "C"}
    with raw.open("wb") as out:
        process = await pg_tools.spawn("pg_restore", ["--list", str(archive)], env, stdout=out)
        stderr = await pg_tools.errors_of(process)
        code = await process.wait()
    if code != 0:
        failed = pg_tools.failure("pg_restore", stderr, [str(archive.parent)])
        raise _invalid(f"not a pg_dump archive: {failed.line}")
    await asyncio.to_thread(_filter_listing, raw, listing)
    return listing


async def run_pg_restore(
    role: pg_tools.OwnerRole, archive: Path, listing: Path, disconnected: Disconnected
) -> None:
    """``pg_restore`` of ``archive`` (its ``listing``) as ``role``, one transaction;
    400 ``restore_failed`` saying why (rolled back when ``disconnected`` returns)."""
    env, extra = role.tool_env()
    args = [*_RESTORE_ARGS, *extra, f"--use-list={listing}", str(archive)]
    process = await pg_tools.spawn("pg_restore", args, env)
    errors = asyncio.ensure_future(pg_tools.errors_of(process))
    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({errors, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done():  # the client left: roll it all back (it is one transaction)
            raise ServiceError(400, "restore_failed", "the client went away: rolled back")
        code = await process.wait()
    finally:
        gone.cancel()
        await pg_tools.stop(process)
    if code != 0:
        scrub = [*role.scrubbed(), str(archive.parent)]
        raise await _restore_failed(role, pg_tools.failure("pg_restore", errors.result(), scrub))


class _Body:
    """The request body, counted."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self.size = 0
        self.done = False

    async def chunks(self, limit: int) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            self.size += len(chunk)
            if self.size > limit:
                raise too_large(limit)
            if chunk:
                yield chunk
        self.done = True

    async def drain(self, limit: int) -> None:
        """Read the rest and drop it (up to ``limit`` bytes in all)."""
        if self.done:
            return
        with contextlib.suppress(ServiceError):
            async for _ in self.chunks(limit):
                pass


async def _objects(role: pg_tools.OwnerRole) -> dict[str, int]:
    """What the database holds of its own, by kind (as its owner sees it)."""
    async with await role.session() as conn:
        rows = await (await conn.execute(_OBJECTS_SQL)).fetchall()
    return {str(kind): int(count) for kind, count in rows if count}


def _listed(found: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in found.items())


async def _restore_failed(role: pg_tools.OwnerRole, failed: pg_tools.ToolFailed) -> ServiceError:
    """400 ``restore_failed``: the one transaction rolled back — unless the archive ended
    it itself (a crafted one can: a ``COMMIT`` in a statement), which is then said."""
    details: dict[str, Any] = failed.details()
    left = await _objects(role)
    if not left:
        message = f"the restore failed, nothing was changed: {failed.line}"
    else:
        details["left"] = left
        message = (
            f"the restore failed: {failed.line}; the archive ended the restore's transaction"
            f" itself, and what it had done by then stays ({_listed(left)})"
        )
    return ServiceError(400, "restore_failed", message, details)


def _invalid(message: str) -> ServiceError:
    return ServiceError(400, "invalid_backup", message)


def _backup_failed(failed: pg_tools.ToolFailed, code: int) -> ServiceError:
    if "connection to server" in failed.line:
        return ServiceError(503, "postgres_unavailable", f"pg_dump could not connect: {failed}")
    return ServiceError(
        400, "backup_failed", f"pg_dump failed (exit {code}): {failed.line}", failed.details()
    )


def _filter_listing(raw: Path, listing: Path) -> None:
    with raw.open("rb") as lines, listing.open("wb") as out:
        for line in lines:
            if not _SKIPPED_POLICY.match(line.decode(errors="replace").rstrip("\n")):
                out.write(line)


def _remove_stale(root: Path) -> None:
    """Folders of restores a crash interrupted (older than a day)."""
    now = time.time()
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime > _STALE_S:
                shutil.rmtree(entry)


__all__ = ["BackupStream", "Backups"]
