"""Moving a database to another cluster, with downtime (``POST …/move``, server admins).

1. The control row goes ``moving`` (announced: every replica's paths answer 503
   ``database_moving`` with ``Retry-After`` from then on), and this replica closes its
   pools, change streams and module workers for it (the drop hooks; realtime clients are
   told to come back later, 1013).
2. **Fence** (``provision.fence_database``): every session of the database is ended and
   it is renamed ``<pg_name>_moving``, so a session of any replica that missed the
   announcement cannot reach it any more. Nothing is written to it from here on.
3. **Copy**: ``pg_dump --format=custom`` of the fenced database as its ``_owner`` role
   into a file, the database and its roles made on the target, ``pg_restore`` as the
   target's ``_owner`` in one transaction — the per-database backup's tools and rules
   (``databases/backup.py``), and its manifest's privileges. The published module's row
   visibility rules are made again (their key derives from the same secret and name).
   Every realtime connection the fence cut gets its ``client_disconnected`` there, before
   any reconnection can run its ``client_connected`` (``Lifecycle.end_all``).
4. **Switch**: the row names the target cluster and is ``ready`` again (announced); the
   downtime is the time from 1 to here. The fenced source is dropped afterwards.

A failure before 4 drops the target's copy, renames the source back and leaves the
database ``ready`` where it was: nothing lost, the error says why. A crash part-way is
finished at start (:func:`recover`): a ``moving`` row is rolled back the same way, and a
fenced source whose database lives elsewhere is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...models.clusters import DatabaseMove, DatabaseMoved
from ..accounts.service import Principal, require_admin, require_write
from ..databases import backup, backup_grants, pg_tools
from ..databases.service import Access, DatabaseService, resolve
from ..errors import ServiceError, conflict
from ..modules import row_visibility
from ..modules.publishing import latest_version
from ..postgres import provision
from ..postgres.cluster import Cluster
from .service import draining

if TYPE_CHECKING:
    from .registry import Clusters

_log = logging.getLogger("millpond.clusters")


async def _never() -> None:
    await asyncio.Event().wait()


class Mover:
    def __init__(self, databases: DatabaseService) -> None:
        self.databases = databases
        self.store = databases.store
        self.clusters: Clusters = databases.clusters
        self.secret = databases.secret
        self.root = (databases.settings.data_dir / "restores").resolve()
        self.after_fence: list[Any] = []
        """Test seam: coroutine functions awaited once the source is fenced."""
        self.after_copy: list[Callable[[Access], Awaitable[object]]] = []
        """Awaited with the database's access on the target once it is copied, before the
        switch: the module's lifecycle ends the connections the fence cut."""

    async def move(self, principal: Principal, full_name: str, body: DatabaseMove) -> DatabaseMoved:
        require_admin(principal)
        require_write(principal)
        access = await resolve(self.store, principal, full_name, need="owner")
        if body.cluster == access.cluster:
            raise conflict(
                "already_on_cluster", f"{access.full_name} already lives on {body.cluster}"
            )
        target = await self.clusters.cluster_of(body.cluster)
        state = await self.store.fetchone(
            "SELECT state FROM clusters WHERE id = %s", (target.name,)
        )
        if state is None or state["state"] != "active":
            raise draining(target.name)
        source = await self.clusters.cluster_of(access.cluster)
        target.availability.check()
        source.availability.check()
        marked = await self.store.fetchone(
            "UPDATE databases SET state = 'moving', moving_to = %s, updated_at = now()"
            " WHERE id = %s AND state = 'ready' RETURNING id",
            (target.name, access.id),
        )
        if marked is None:
            raise conflict("database_busy", f"{access.full_name} is being changed; retry")
        self.store.changed()
        started = time.perf_counter()
        try:
            size = await self._copy(access, source, target)
        except BaseException:
            await asyncio.shield(self._undo(access, source, target))
            raise
        await self.store.execute(
            "UPDATE databases SET cluster_id = %s, state = 'ready', moving_to = NULL,"
            " updated_at = now() WHERE id = %s",
            (target.name, access.id),
        )
        self.store.changed()
        downtime = time.perf_counter() - started
        _log.info(
            "moved %s from %s to %s (%d bytes, %.0f ms down)",
            access.full_name,
            source.name,
            target.name,
            size,
            downtime * 1000,
        )
        try:
            await asyncio.to_thread(provision.drop_fenced, source, access.pg_name)
        except Exception as exc:  # recover() drops it at the next start
            _log.warning(
                "could not drop the moved %s on %s yet: %s", access.pg_name, source.name, exc
            )
        return DatabaseMoved(
            database=access.full_name,
            source=source.name,
            target=target.name,
            bytes=size,
            downtime_ms=round(downtime * 1000, 3),
        )

    async def _copy(self, access: Access, source: Cluster, target: Cluster) -> int:
        for hook in self.databases.move_hooks:
            await hook(access.pg_name)
        fenced = await asyncio.to_thread(provision.fence_database, source, access.pg_name)
        for seam in self.after_fence:
            await seam()
        origin = pg_tools.OwnerRole(source, self.secret, access.pg_name, dbname=fenced)
        async with await origin.session() as conn:
            grants = await backup_grants.capture(conn, origin.roles)
        await asyncio.to_thread(provision.create_database, target, self.secret, access.pg_name)
        copy = pg_tools.OwnerRole(target, self.secret, access.pg_name)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix="move-") as folder:
            archive = Path(folder) / "archive.dump"
            await _dump(origin, archive)
            listing = await backup.read_listing(archive)
            await backup.run_pg_restore(copy, archive, listing, _never)
            size = archive.stat().st_size
        async with await copy.session() as conn:
            await backup_grants.apply(conn, copy.roles, grants)
            for statement in await self._module_statements(access):
                await conn.execute(statement)
        there = dataclasses.replace(access, cluster=target.name)
        for ending in self.after_copy:
            try:
                await ending(there)
            except Exception:  # a module's bug must not fail the move
                _log.warning("after moving %s:", access.full_name, exc_info=True)
        return size

    async def _module_statements(self, access: Access) -> list[Any]:
        """The row visibility rules of the database's newest ready module, made again."""
        version = await latest_version(self.store, access.id)
        if version is None:
            return []
        return list(row_visibility.statements(version.definition, access.pg_name, self.secret))

    async def _undo(self, access: Access, source: Cluster, target: Cluster) -> None:
        await _roll_back(self.databases, access.id, access.pg_name, source, target)


async def _roll_back(
    databases: DatabaseService, db_id: int, pg_name: str, source: Cluster, target: Cluster | None
) -> None:
    """A move that did not switch: the source back under its name and the database ready
    where it was, then the target's copy dropped (``target``: None when it cannot be
    reached; a copy that cannot be dropped is logged, and left there)."""
    try:
        await asyncio.to_thread(provision.unfence_database, source, pg_name)
    finally:
        await databases.store.execute(
            "UPDATE databases SET state = 'ready', moving_to = NULL WHERE id = %s", (db_id,)
        )
        databases.store.changed()
    if target is None:
        return
    try:
        await asyncio.to_thread(provision.drop_database, target, pg_name)
    except Exception:
        _log.warning("could not drop the copy of %s on %s", pg_name, target.name, exc_info=True)


async def _dump(role: pg_tools.OwnerRole, archive: Path) -> None:
    env, extra = role.tool_env()
    with archive.open("wb") as out:
        process = await pg_tools.spawn("pg_dump", [*backup.DUMP_ARGS, *extra], env, stdout=out)
        try:
            stderr = await pg_tools.errors_of(process)
            code = await process.wait()
        finally:
            await pg_tools.stop(process)
    if code != 0:
        failed = pg_tools.failure("pg_dump", stderr, role.scrubbed())
        raise ServiceError(
            400, "move_failed", f"pg_dump failed (exit {code}): {failed.line}", failed.details()
        )


async def recover(databases: DatabaseService) -> int:
    """At start: roll back moves a crash interrupted, drop sources left fenced. Returns
    how many it repaired."""
    clusters = databases.clusters
    repaired = 0
    for row in await databases.store.fetchall(
        "SELECT id, pg_name, cluster_id, moving_to FROM databases WHERE state = 'moving'"
    ):
        target: Cluster | None = None
        with contextlib.suppress(ServiceError):  # gone or down: its copy is left there
            target = await clusters.cluster_of(row["moving_to"])
        source = await clusters.cluster_of(row["cluster_id"])
        await _roll_back(databases, row["id"], row["pg_name"], source, target)
        repaired += 1
    for cluster in clusters.loaded():
        for pg_name in await asyncio.to_thread(provision.fenced_databases, cluster):
            found = await databases.store.fetchone(
                "SELECT cluster_id, state FROM databases WHERE pg_name = %s", (pg_name,)
            )
            if found is not None and found["cluster_id"] == cluster.name:
                # still lives here (a move undone part-way): back under its name
                await asyncio.to_thread(provision.unfence_database, cluster, pg_name)
            else:  # moved away: the switch was made, the drop was not
                await asyncio.to_thread(provision.drop_fenced, cluster, pg_name)
            repaired += 1
    if repaired:
        databases.store.changed()
    return repaired


__all__ = ["Mover", "recover"]
