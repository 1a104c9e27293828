"""Databases as a service: create, list, get, update, delete, collaborators, access.

Access to ``owner/name``, from strongest to weakest:

* ``owner`` — the owner, or a server admin;
* ``admin`` / ``write`` / ``read`` — a collaborator with that role;
* ``read`` — any authenticated user, when the database is public.

A ``read``-scoped key caps every access at ``read``. Private databases a caller cannot
read do not exist for them (404, never 403), so their names do not leak.

Creation and deletion are crash-safe: the control row is written first in state
``creating``/``deleting`` and :func:`reconcile` finishes or undoes such rows at start-up.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from ...models import (
    AccessRole,
    Collaborator,
    CollaboratorSet,
    Database,
    DatabaseCreate,
    DatabaseUpdate,
)
from ..accounts.service import Principal, find_user, is_username, require_write
from ..budget import check_count
from ..config import Settings
from ..errors import ServiceError, conflict, forbidden, invalid, not_found
from ..postgres import provision
from ..postgres.cluster import HOME
from ..store import Store

if TYPE_CHECKING:
    from ..clusters.registry import Clusters
    from ..clusters.service import ClusterService

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # used with fullmatch
_RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3, "owner": 4}
_SQL_ROLE: dict[str, provision.SqlRole] = {
    "read": "ro",
    "write": "rw",
    "admin": "owner",
    "owner": "owner",
}

DropHook = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Access:
    """A caller's resolved access to one database."""

    id: int
    pg_name: str
    owner: str
    name: str
    is_private: bool
    storage_limit_bytes: int | None
    role: AccessRole
    cluster: str = HOME
    """The name of the Postgres cluster it lives on (``server/clusters/``)."""

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def sql_role(self) -> provision.SqlRole:
        return _SQL_ROLE[self.role]

    def at_least(self, role: AccessRole) -> bool:
        return _RANK[self.role] >= _RANK[role]


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise invalid(
            "invalid_name",
            "database names are 1-63 letters, digits, '_' or '-', starting with a letter or digit",
            {"field": "name"},
        )


def split_full_name(full_name: str) -> tuple[str, str]:
    owner, sep, name = full_name.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise invalid("invalid_name", f"database names look like 'owner/name', not {full_name!r}")
    return owner, name


_ACCESS_SQL = """
SELECT d.id, d.pg_name, u.username AS owner, d.name, d.is_private, d.storage_limit_bytes,
       d.owner_id, c.role AS collaborator_role, d.cluster_id, d.state
FROM databases d
JOIN users u ON u.id = d.owner_id
LEFT JOIN collaborators c ON c.database_id = d.id AND c.user_id = %(user_id)s
WHERE lower(u.username) = lower(%(owner)s) AND lower(d.name) = lower(%(name)s)
  AND d.state IN ('ready', 'moving')
"""


def _role_of(row: DictRow, principal: Principal) -> AccessRole | None:
    role: AccessRole | None
    if principal.end_user:  # an end user reads, nothing more: public databases, or any
        # whose owner trusts the issuer of the user's token (server/modules/issuers.py)
        return "read" if principal.issuer is not None or not row["is_private"] else None
    if row["owner_id"] == principal.user_id or principal.is_admin:
        role = "owner"
    elif row["collaborator_role"] is not None:
        role = row["collaborator_role"]
    elif not row["is_private"]:
        role = "read"
    else:
        return None
    if not principal.can_write:
        role = "read"
    return role


def access_of(row: DictRow, role: AccessRole) -> Access:
    """The :class:`Access` of a ``databases`` row (with ``owner``, its owner's name) in
    ``role``."""
    return Access(
        id=row["id"],
        pg_name=row["pg_name"],
        owner=row["owner"],
        name=row["name"],
        is_private=row["is_private"],
        storage_limit_bytes=row["storage_limit_bytes"],
        role=role,
        cluster=row["cluster_id"],
    )


class DatabaseMoving(ServiceError):
    """503 ``database_moving`` (with ``Retry-After``): the database is being moved to
    another cluster (``clusters/move.py``)."""

    def __init__(self, full_name: str) -> None:
        super().__init__(
            503,
            "database_moving",
            f"{full_name} is being moved to another Postgres cluster; retry in a moment",
            {"database": full_name},
        )
        self.headers = {"Retry-After": "1"}


async def resolve(
    store: Store, principal: Principal, full_name: str, need: AccessRole = "read"
) -> Access:
    """The caller's access to ``owner/name``; 404 if they cannot see it, 403 if too weak."""
    owner, name = split_full_name(full_name)
    if not is_username(owner) or not _NAME.fullmatch(name):  # cannot exist
        raise not_found("database_not_found", f"no database {full_name!r} visible to you")
    params = {"user_id": principal.user_id, "owner": owner, "name": name}
    row = await store.cache.get_or_load(
        ("db", principal.user_id, owner.lower(), name.lower()),
        lambda: store.fetchone(_ACCESS_SQL, params),
    )
    role = _role_of(row, principal) if row is not None else None
    if row is None or role is None:
        raise not_found("database_not_found", f"no database {full_name!r} visible to you")
    access = access_of(row, role)
    if not access.at_least(need):
        if not principal.can_write:
            raise forbidden("this API key is read-only", "read_only_key")
        raise forbidden(f"this needs {need} access to {access.full_name}; you have {role}")
    if row["state"] == "moving":
        raise DatabaseMoving(access.full_name)
    return access


_DB_SELECT = """
SELECT d.id, u.username AS owner, d.name, d.is_private, d.storage_limit_bytes,
       d.created_at, d.updated_at, d.pg_name, d.cluster_id,
       CASE WHEN d.cluster_id = 'default' AND %(sizes)s THEN pg_database_size(d.pg_name)
       END AS size_bytes
FROM databases d JOIN users u ON u.id = d.owner_id
"""
"""A database's row; its size when it is on the home cluster and ``sizes`` (the others'
are asked of their cluster: :meth:`DatabaseService._sized`)."""


def _to_model(row: DictRow, role: AccessRole | None) -> Database:
    return Database(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        full_name=f"{row['owner']}/{row['name']}",
        is_private=row["is_private"],
        storage_limit_bytes=row["storage_limit_bytes"],
        size_bytes=row.get("size_bytes"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        role=role,
        cluster=row["cluster_id"],
    )


class DatabaseService:
    def __init__(
        self,
        store: Store,
        clusters: Clusters,
        placement: ClusterService,
        secret: bytes,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.clusters = clusters
        self.cluster = clusters.home
        self.placement = placement
        self.secret = secret
        self.settings = settings or Settings()
        self.drop_hooks: list[DropHook] = []
        self.move_hooks: list[DropHook] = []
        """Run before a database is fenced for a move (``clusters/move.py``): close what
        this replica holds open on it."""

    async def create(self, principal: Principal, body: DatabaseCreate) -> Database:
        require_write(principal)
        check_name(body.name)
        cluster = await self.clusters.cluster_of(
            await self.placement.place(principal, body.cluster)
        )
        async with self.store.transaction() as conn:
            await self._check_limit(conn, principal)
            cur = await conn.execute(
                "INSERT INTO databases (owner_id, name, pg_name, is_private, storage_limit_bytes,"
                " cluster_id) VALUES (%s, %s, 'mp_pending_' || gen_random_uuid(), %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (
                    principal.user_id,
                    body.name,
                    body.is_private,
                    body.storage_limit_bytes,
                    cluster.name,
                ),
            )
            row = await cur.fetchone()
        if row is None:
            raise conflict("database_exists", f"you already have a database named {body.name!r}")
        db_id = row["id"]
        pg_name = provision.pg_name_for(db_id)
        await self.store.execute(
            "UPDATE databases SET pg_name = %s WHERE id = %s", (pg_name, db_id)
        )
        try:
            await asyncio.to_thread(provision.create_database, cluster, self.secret, pg_name)
        except BaseException:
            await asyncio.to_thread(provision.drop_database, cluster, pg_name)
            await self.store.execute("DELETE FROM databases WHERE id = %s", (db_id,))
            raise
        await self.store.execute("UPDATE databases SET state = 'ready' WHERE id = %s", (db_id,))
        return await self._describe(db_id, "owner")

    async def _describe(self, db_id: int, role: AccessRole | None) -> Database:
        row = await self.store.fetchone(
            _DB_SELECT + " WHERE d.id = %(id)s", {"id": db_id, "sizes": True}
        )
        if row is None:
            raise not_found("database_not_found", "the database no longer exists")
        return (await self._sized([_to_model(row, role)]))[0]

    async def _sized(self, found: builtins.list[Database]) -> builtins.list[Database]:
        """``found`` with the sizes of those on other clusters than the home one (asked of
        their cluster, one session each; unknown when it cannot be reached)."""
        elsewhere: dict[str, builtins.list[str]] = {}
        for db in found:
            if db.cluster != HOME and db.size_bytes is None:
                elsewhere.setdefault(db.cluster, []).append(provision.pg_name_for(db.id))
        sizes: dict[str, int] = {}
        for name, pg_names in elsewhere.items():
            with contextlib.suppress(Exception):
                cluster = await self.clusters.cluster_of(name)
                sizes |= await asyncio.to_thread(provision.database_sizes, cluster, pg_names)
        return [
            db.model_copy(update={"size_bytes": sizes[key]})
            if (key := provision.pg_name_for(db.id)) in sizes
            else db
            for db in found
        ]

    async def _check_limit(self, conn: AsyncConnection[DictRow], principal: Principal) -> None:
        """``account_max_databases``: every database the user owns (whichever of its keys,
        its service accounts' included, made it) counts, half-made and half-dropped too."""
        if principal.is_admin and self.settings.account_limits_exempt_admins:
            return
        await check_count(
            conn,
            "account_max_databases",
            "databases",
            self.settings.account_max_databases,
            "SELECT count(*) FROM databases WHERE owner_id = %s",
            principal.user_id,
        )

    async def list(self, principal: Principal, *, sizes: bool = False) -> builtins.list[Database]:
        """The caller's databases and those shared with them; ``sizes``: with each one's
        size (a walk of its files each: the console shows it against the limit)."""
        rows = await self.store.fetchall(
            _DB_SELECT.replace("SELECT", "SELECT c.role AS collaborator_role,", 1)
            + " LEFT JOIN collaborators c ON c.database_id = d.id AND c.user_id = %(uid)s"
            " WHERE d.state IN ('ready', 'moving')"
            " AND (d.owner_id = %(uid)s OR c.user_id IS NOT NULL)"
            " ORDER BY u.username, d.name",
            {"uid": principal.user_id, "sizes": sizes},
        )
        result = []
        for row in rows:
            role: AccessRole = row["collaborator_role"] or "owner"
            result.append(_to_model(row, role if principal.can_write else "read"))
        return await self._sized(result) if sizes else result

    async def get(self, principal: Principal, full_name: str) -> Database:
        access = await resolve(self.store, principal, full_name)
        return await self._describe(access.id, access.role)

    async def update(self, principal: Principal, full_name: str, body: DatabaseUpdate) -> Database:
        access = await resolve(self.store, principal, full_name, need="admin")
        if body.name is not None:
            check_name(body.name)
        if body.clear_storage_limit and body.storage_limit_bytes is not None:
            raise invalid("validation_error", "give storage_limit_bytes or clear_storage_limit")
        limit = None if body.clear_storage_limit else body.storage_limit_bytes
        async with self.store.transaction() as conn:
            if body.name is not None and body.name.lower() != access.name.lower():
                taken = await (
                    await conn.execute(
                        "SELECT 1 FROM databases WHERE owner_id = (SELECT owner_id FROM databases"
                        " WHERE id = %s) AND lower(name) = lower(%s)",
                        (access.id, body.name),
                    )
                ).fetchone()
                if taken:
                    raise conflict(
                        "database_exists", f"{access.owner} already has a database {body.name!r}"
                    )
            await conn.execute(
                "UPDATE databases SET name = coalesce(%(name)s, name),"
                " is_private = coalesce(%(private)s, is_private),"
                " storage_limit_bytes = CASE WHEN %(clear)s THEN NULL"
                "   ELSE coalesce(%(limit)s, storage_limit_bytes) END,"
                " updated_at = now() WHERE id = %(id)s",
                {
                    "name": body.name,
                    "private": body.is_private,
                    "clear": body.clear_storage_limit,
                    "limit": limit,
                    "id": access.id,
                },
            )
        self.store.changed()
        return await self._describe(access.id, access.role)

    async def delete(self, principal: Principal, full_name: str) -> None:
        access = await resolve(self.store, principal, full_name, need="owner")
        await self.store.execute(
            "UPDATE databases SET state = 'deleting' WHERE id = %s", (access.id,)
        )
        self.store.changed()
        await self.drop(access.pg_name, access.cluster)
        await self.store.execute("DELETE FROM databases WHERE id = %s", (access.id,))

    async def drop(self, pg_name: str, cluster: str = HOME) -> None:
        """Close our pools to the database, then drop it and its roles."""
        for hook in self.drop_hooks:
            await hook(pg_name)
        target = await self.clusters.cluster_of(cluster)
        await asyncio.to_thread(provision.drop_database, target, pg_name)

    async def drop_marked(self, pg_name: str) -> None:
        """Drop a database already marked ``deleting`` and remove its row."""
        row = await self.store.fetchone(
            "SELECT cluster_id FROM databases WHERE pg_name = %s", (pg_name,)
        )
        await self.drop(pg_name, row["cluster_id"] if row else HOME)
        await self.store.execute("DELETE FROM databases WHERE pg_name = %s", (pg_name,))

    async def reconcile(self) -> int:
        """Finish what a crash interrupted: half-created or half-deleted databases are
        dropped and their rows removed. Returns how many were cleaned up."""
        rows = await self.store.fetchall(
            "SELECT id, pg_name, cluster_id FROM databases WHERE state IN ('creating', 'deleting')"
        )
        for row in rows:
            await self.drop(row["pg_name"], row["cluster_id"])
            await self.store.execute("DELETE FROM databases WHERE id = %s", (row["id"],))
        await self.harden()
        return len(rows)

    async def harden(self) -> None:
        """Apply the current :func:`provision.harden_database` to databases made by an
        older version (once per version, recorded in ``server_state``)."""
        done = await self.store.fetchone(
            "SELECT value FROM server_state WHERE key = 'hardening_version'"
        )
        if done is not None and int(done["value"]) >= provision.HARDENING_VERSION:
            return
        for row in await self.store.fetchall(
            "SELECT pg_name, cluster_id FROM databases WHERE state = 'ready'"
        ):
            cluster = await self.clusters.cluster_of(row["cluster_id"])
            await asyncio.to_thread(provision.ensure_roles, cluster, self.secret, row["pg_name"])
            await asyncio.to_thread(provision.harden_database, cluster, row["pg_name"])
            await asyncio.to_thread(provision.reset_database_roles, cluster, row["pg_name"])
        await self.store.execute(
            "INSERT INTO server_state (key, value) VALUES ('hardening_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(provision.HARDENING_VERSION),),
        )

    # -- collaborators ------------------------------------------------------------------

    async def collaborators(
        self, principal: Principal, full_name: str
    ) -> builtins.list[Collaborator]:
        access = await resolve(self.store, principal, full_name)
        rows = await self.store.fetchall(
            "SELECT u.username, c.role, c.created_at FROM collaborators c"
            " JOIN users u ON u.id = c.user_id WHERE c.database_id = %s ORDER BY u.username",
            (access.id,),
        )
        return [Collaborator(**r) for r in rows]

    async def set_collaborator(
        self, principal: Principal, full_name: str, username: str, body: CollaboratorSet
    ) -> Collaborator:
        access = await resolve(self.store, principal, full_name, need="admin")
        user = await find_user(self.store, username)
        if user["username"].lower() == access.owner.lower():
            raise invalid("validation_error", "the owner cannot also be a collaborator")
        row = await self.store.fetchone(
            "INSERT INTO collaborators (database_id, user_id, role) VALUES (%s, %s, %s)"
            " ON CONFLICT (database_id, user_id) DO UPDATE SET role = excluded.role"
            " RETURNING role, created_at",
            (access.id, user["id"], body.role),
        )
        self.store.changed()
        assert row is not None
        return Collaborator(username=user["username"], **row)

    async def remove_collaborator(
        self, principal: Principal, full_name: str, username: str
    ) -> None:
        access = await resolve(self.store, principal, full_name, need="admin")
        user = await find_user(self.store, username)
        touched = await self.store.execute(
            "DELETE FROM collaborators WHERE database_id = %s AND user_id = %s",
            (access.id, user["id"]),
        )
        self.store.changed()
        if not touched:
            raise not_found("collaborator_not_found", f"{username} is not a collaborator")


__all__ = ["Access", "DatabaseService", "ServiceError", "resolve", "split_full_name"]
