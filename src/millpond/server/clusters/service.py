"""The cluster registry's API: list, add, drain or activate, remove; and placement.

Server admins only. Adding a cluster connects to it first and refuses one that could not
host databases (the role lacks ``CREATEDB``/``CREATEROLE``, ``wal_level`` is not
``logical``) or that is already registered (the same ``system_identifier``): a clear
400/409 and nothing recorded. A cluster is removed only when no database lives on it.

Placement (the ``placement`` setting) picks the cluster of a new database:
``fewest-databases`` — the active, reachable cluster with the fewest databases (the home
one first on a tie); ``home`` — the home cluster. A server admin may name one instead
(``cluster`` in the create request); a draining cluster gets none either way.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow

from ...models.clusters import ClusterAdd, ClusterInfo, ClusterUpdate
from ..accounts.service import Principal, require_admin, require_write
from ..config import Settings
from ..errors import ServiceError, conflict, forbidden, invalid
from ..postgres import privileged
from ..postgres.cluster import HOME, Cluster
from ..store import Store
from .registry import Clusters, seal, unknown_cluster

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_CONNECT_TIMEOUT_S = 10
_CHECK_SQL = """
SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole,
       pg_catalog.current_setting('wal_level') AS wal_level,
       pg_catalog.current_setting('server_version') AS version,
       pg_catalog.pg_is_in_recovery() AS standby,
       (SELECT s.system_identifier FROM pg_catalog.pg_control_system() AS s)::text
       OPERATOR(pg_catalog.||) '/'
       OPERATOR(pg_catalog.||) pg_catalog.pg_postmaster_start_time()::text AS system_id
FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER
"""


class ClusterService:
    def __init__(self, store: Store, clusters: Clusters, settings: Settings) -> None:
        self.store = store
        self.clusters = clusters
        self.settings = settings

    # -- reading ----------------------------------------------------------------------------

    async def list(self, principal: Principal) -> list[ClusterInfo]:
        require_admin(principal)
        rows = await self.store.fetchall(
            "SELECT c.id, c.state, c.created_at,"
            " (SELECT count(*) FROM databases d WHERE d.cluster_id = c.id) AS databases"
            " FROM clusters c ORDER BY c.id <> 'default', c.id"
        )
        return list(await asyncio.gather(*(self._info(row) for row in rows)))

    async def get(self, principal: Principal, name: str) -> ClusterInfo:
        require_admin(principal)
        return await self._info(await self._row(name))

    async def _row(self, name: str) -> DictRow:
        row = await self.store.fetchone(
            "SELECT c.id, c.state, c.created_at,"
            " (SELECT count(*) FROM databases d WHERE d.cluster_id = c.id) AS databases"
            " FROM clusters c WHERE c.id = %s",
            (name,),
        )
        if row is None:
            raise unknown_cluster(name)
        return row

    async def _info(self, row: DictRow) -> ClusterInfo:
        name = str(row["id"])
        version: str | None = None
        error: str | None = None
        address = "unknown"
        try:
            cluster = await self.clusters.cluster_of(name)
            address = cluster.address()
            version = await asyncio.to_thread(_version, cluster)
        except Exception as exc:
            error = _reason(exc)
        return ClusterInfo(
            name=name,
            home=name == HOME,
            address=address,
            state=row["state"],
            databases=int(row["databases"]),
            up=error is None,
            postgres=version,
            error=error,
            created_at=row["created_at"],
        )

    # -- changing ---------------------------------------------------------------------------

    async def add(self, principal: Principal, body: ClusterAdd) -> ClusterInfo:
        require_admin(principal)
        require_write(principal)
        name = body.name or await self._free_name()
        if not _NAME.fullmatch(name):
            raise invalid(
                "invalid_cluster_name",
                "cluster names are 1-63 lowercase letters, digits, '_' or '-'",
                {"field": "name"},
            )
        url = _check_url(body.url)
        found = await asyncio.to_thread(_inspect, url)
        await self._check_new(found["system_id"])
        row = await self.store.fetchone(
            "INSERT INTO clusters (id, url_sealed) VALUES (%s, %s) ON CONFLICT DO NOTHING"
            " RETURNING id",
            (name, seal(self.clusters.secret, name, url)),
        )
        if row is None:
            raise conflict("cluster_exists", f"there is already a cluster named {name!r}")
        self.store.changed()
        await self.clusters.add(name, url)
        return await self._info(await self._row(name))

    async def _free_name(self) -> str:
        rows = await self.store.fetchall("SELECT id FROM clusters")
        taken = {str(r["id"]) for r in rows}
        return next(f"cluster-{n}" for n in range(2, len(taken) + 3) if f"cluster-{n}" not in taken)

    async def _check_new(self, system_id: str) -> None:
        """409 when the Postgres behind the URL is one a cluster already names (the same
        system identifier and start time: one running Postgres)."""
        for cluster in self.clusters.loaded():
            try:
                known = await asyncio.to_thread(_system_id, cluster)
            except Exception:
                continue
            if known == system_id:
                raise conflict(
                    "cluster_exists",
                    f"that Postgres is already the cluster {cluster.name!r}",
                )

    async def update(self, principal: Principal, name: str, body: ClusterUpdate) -> ClusterInfo:
        require_admin(principal)
        require_write(principal)
        await self._row(name)
        await self.store.execute("UPDATE clusters SET state = %s WHERE id = %s", (body.state, name))
        return await self._info(await self._row(name))

    async def remove(self, principal: Principal, name: str) -> None:
        require_admin(principal)
        require_write(principal)
        if name == HOME:
            raise invalid(
                "cluster_is_home",
                "the home cluster holds the control database and cannot be removed",
            )
        row = await self._row(name)
        if row["databases"]:
            raise conflict(
                "cluster_not_empty",
                f"{row['databases']} database(s) live on {name}: move them first"
                f" (`millpond clusters move OWNER/NAME --to CLUSTER`)",
            )
        async with self.store.transaction() as conn:
            # the row lock and the count together: no database is placed on it meanwhile
            await conn.execute("SELECT 1 FROM clusters WHERE id = %s FOR UPDATE", (name,))
            busy = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM databases WHERE cluster_id = %s OR moving_to = %s",
                    (name, name),
                )
            ).fetchone()
            if busy and busy["n"]:
                raise conflict("cluster_not_empty", f"databases live on {name}: move them first")
            await conn.execute("DELETE FROM clusters WHERE id = %s", (name,))
        self.store.changed()
        await self.clusters.forget(name)

    # -- placement --------------------------------------------------------------------------

    async def place(self, principal: Principal, requested: str | None) -> str:
        """The cluster a new database of ``principal`` goes to (see the module's
        docstring)."""
        if requested is not None:
            if not principal.is_admin:
                raise forbidden(
                    "only a server admin may choose a database's cluster", "admin_required"
                )
            row = await self._row(requested)
            if row["state"] != "active":
                raise draining(requested)
            return requested
        if self.settings.placement == "home":
            row = await self._row(HOME)
            if row["state"] == "active":
                return HOME
            raise draining(HOME)
        rows = await self.store.fetchall(
            "SELECT c.id, (SELECT count(*) FROM databases d WHERE d.cluster_id = c.id) AS n"
            " FROM clusters c WHERE c.state = 'active' ORDER BY n, c.id <> 'default', c.id"
        )
        for row in rows:
            name = str(row["id"])
            try:
                cluster = await self.clusters.cluster_of(name)
            except ServiceError:
                continue
            if cluster.availability.up:
                return name
        raise ServiceError(
            503,
            "no_active_cluster",
            "no active Postgres cluster can take a new database: `millpond clusters list`"
            " shows their states (`millpond clusters activate NAME` ends a drain)",
        )


def draining(name: str) -> ServiceError:
    """409 ``cluster_draining``: ``name`` takes no new databases."""
    return conflict(
        "cluster_draining",
        f"cluster {name} is draining and takes no new databases"
        f" (`millpond clusters activate {name}` ends that)",
    )


def _check_url(url: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise invalid(
            "invalid_cluster_url",
            f"not a Postgres URL or connection string: {str(exc).splitlines()[0]}",
            {"field": "url"},
        ) from None
    if "options" in params:
        raise invalid(
            "invalid_cluster_url",
            "the URL may not carry options: the server pins every session's settings itself",
            {"field": "url"},
        )
    return url


def _inspect(url: str) -> dict[str, Any]:
    """Connect to ``url`` and check it can host databases; 400 saying what is missing."""
    conninfo = make_conninfo(
        url, connect_timeout=str(_CONNECT_TIMEOUT_S), options=privileged.options()
    )
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            cur = conn.execute(_CHECK_SQL)
            names = [c.name for c in cur.description or []]
            row = cur.fetchone()
    except psycopg.Error as exc:
        raise invalid(
            "cluster_unreachable",
            f"could not connect to the cluster: {_reason(exc)}",
            {"field": "url"},
        ) from None
    assert row is not None
    found = dict(zip(names, row, strict=True))
    missing = []
    if not (found["rolsuper"] or (found["rolcreatedb"] and found["rolcreaterole"])):
        missing.append("its role needs CREATEDB and CREATEROLE")
    if found["standby"]:
        missing.append("it is a standby (read-only): give the primary's address")
    if found["wal_level"] != "logical":
        missing.append(f"wal_level is {found['wal_level']}, realtime needs logical")
    if missing:
        raise invalid(
            "cluster_unsuitable",
            "this cluster cannot host millpond databases: " + "; ".join(missing),
            {"missing": missing},
        )
    return found


def _version(cluster: Cluster) -> str:
    return _scalar(cluster, "SELECT pg_catalog.current_setting('server_version')")


def _system_id(cluster: Cluster) -> str:
    return _scalar(
        cluster,
        "SELECT s.system_identifier::text OPERATOR(pg_catalog.||) '/'"
        " OPERATOR(pg_catalog.||) pg_catalog.pg_postmaster_start_time()::text"
        " FROM pg_catalog.pg_control_system() AS s",
    )


def _scalar(cluster: Cluster, query: LiteralString) -> str:
    """The one value ``query`` returns on a privileged session of ``cluster``."""
    with privileged.connect(cluster) as conn:
        row = conn.execute(query).fetchone()
    return str(row[0]) if row else ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return exc.message
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["ClusterService"]
