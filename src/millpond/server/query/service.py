"""``POST /v1/query``: run SQL in one transaction as the caller's role for the database.

Connections come from a pool per (database, role). Rights are Postgres privileges of the
role — a read-only caller is connected as the ``ro`` role, so writes fail inside
Postgres, not by parsing SQL. After every call the session is reset (``DISCARD ALL``) so
nothing a query ``SET`` leaks into the next caller's.

Limits: ``statement_timeout`` (a server setting, also enforced from the outside by
cancelling the backend should a query turn it off), rows and bytes returned
(``truncated``), and the database's storage limit: when a limit is set, a transaction
that grew the database past it is rolled back with ``storage_limit_exceeded``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...models import QueryRequest
from ..accounts.service import Principal
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError
from ..postgres import provision
from ..postgres.cluster import Cluster
from ..store import Store
from .adapters import (
    TYPE_NAMES_SQL,
    is_builtin,
    parse_text_arrays,
    register_json_loaders,
    type_name,
)
from .stream import StatementResult, run_bounded

_log = logging.getLogger("millpond.query")
_SIZE_SQL = "SELECT pg_database_size(current_database())"
_SIZE_AFTER_SQL = (
    "SELECT pg_database_size(current_database()), pg_current_xact_id_if_assigned() IS NOT NULL"
)
_OVERRUN_GRACE_S = 5.0


class QueryService:
    def __init__(self, store: Store, cluster: Cluster, secret: bytes, settings: Settings) -> None:
        self.store = store
        self.cluster = cluster
        self.secret = secret
        self.settings = settings
        self._pools: dict[tuple[str, str], AsyncConnectionPool[AsyncConnection[Any]]] = {}
        self._types: dict[str, dict[int, str]] = {}
        self._lock = asyncio.Lock()
        self._releasing: set[asyncio.Task[None]] = set()

    # -- pools ------------------------------------------------------------------------------

    async def pool_for(self, pg_name: str, sql_role: provision.SqlRole) -> AsyncConnectionPool[Any]:
        key = (pg_name, sql_role)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        async with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._new_pool(pg_name, sql_role)
                await pool.open()
                self._pools[key] = pool
        return pool

    def _new_pool(self, pg_name: str, sql_role: provision.SqlRole) -> AsyncConnectionPool[Any]:
        role = provision.DatabaseRoles(pg_name).role(sql_role)
        options = (
            f"-c statement_timeout={self.settings.statement_timeout_ms} -c DateStyle=ISO"
            " -c IntervalStyle=iso_8601 -c TimeZone=UTC"
        )
        conninfo = self.cluster.role_conninfo(
            pg_name,
            role,
            provision.role_password(self.secret, role),
            options=options,
            application_name="millpond-query",
        )

        async def configure(conn: AsyncConnection[Any]) -> None:
            register_json_loaders(conn.adapters)

        async def reset(conn: AsyncConnection[Any]) -> None:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.rollback()  # the SQL began a transaction and left it open
            await conn.execute("DISCARD ALL")

        return AsyncConnectionPool(
            conninfo,
            connection_class=self._healing_connection(role),
            min_size=0,
            max_size=self.settings.pool_max_size,
            # no prepared statements: DISCARD ALL would make psycopg's cache lie
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=configure,
            reset=reset,
            open=False,
            name=role,
        )

    def _healing_connection(self, role: str) -> type[AsyncConnection[Any]]:
        """A connection class that, when the role's password was changed (any role may
        change its own), restores the derived password and logs in again."""
        cluster, secret = self.cluster, self.secret

        class _Healing(AsyncConnection[Any]):
            @classmethod
            async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
                try:
                    return await super().connect(conninfo, **kwargs)
                except psycopg.OperationalError as exc:
                    if "password authentication failed" not in str(exc):
                        raise
                    _log.warning("restoring the password of role %s", role)
                    await asyncio.to_thread(provision.reset_password, cluster, secret, role)
                    return await super().connect(conninfo, **kwargs)

        return _Healing

    async def drop_pools(self, pg_name: str) -> None:
        for key in [k for k in self._pools if k[0] == pg_name]:
            await self._pools.pop(key).close()
        self._types.pop(pg_name, None)

    async def close(self) -> None:
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    # -- running ------------------------------------------------------------------------------

    async def run(self, principal: Principal, request: QueryRequest) -> dict[str, Any]:
        """Run the query; return the JSON body of a ``QueryResult`` (built as plain data:
        this is the hot path, and the shape is pinned by the API tests)."""
        access = await resolve(self.store, principal, request.database)
        pool = await self.pool_for(access.pg_name, access.sql_role)
        started = time.perf_counter()
        try:
            conn = await pool.getconn(timeout=self.settings.pool_timeout_s)
        except PoolTimeout as exc:
            raise ServiceError(
                503, "postgres_unavailable", "no database connection became free in time; retry"
            ) from exc
        try:
            result = await self._run_in(conn, access, request)
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:
                raise ServiceError(
                    503, "postgres_unavailable", "the database could not be reached; retry"
                ) from exc
            raise _sql_error(exc) from exc
        except psycopg.Error as exc:
            raise _sql_error(exc) from exc
        finally:
            self._release(pool, conn)
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _release(self, pool: AsyncConnectionPool[Any], conn: AsyncConnection[Any]) -> None:
        """Give the connection back in the background: its reset (``DISCARD ALL``) need
        not delay the response."""
        task = asyncio.create_task(pool.putconn(conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _run_in(
        self, conn: AsyncConnection[Any], access: Access, request: QueryRequest
    ) -> dict[str, Any]:
        if not access.storage_limit_bytes:
            # autocommit + one simple-protocol query string = one implicit transaction
            # for all its statements, with no BEGIN/COMMIT round trips
            result = await self._execute(conn, request.sql)
            return await self._shape(conn, access.pg_name, result, request)
        limit = access.storage_limit_bytes
        async with conn.transaction():
            size_before = await _scalar(conn, _SIZE_SQL)
            result = await self._execute(conn, request.sql)
            cur = await conn.execute(_SIZE_AFTER_SQL)
            size_after, wrote = (await cur.fetchone()) or (0, False)
            # a transaction that wrote nothing cannot have grown the database: growth then
            # comes from autovacuum (free space and visibility maps) running meanwhile
            if wrote and size_after > limit and size_after > size_before:
                raise ServiceError(
                    403,
                    "storage_limit_exceeded",
                    f"{access.full_name} would grow to {size_after} bytes, over its limit of"
                    f" {limit}; the transaction was rolled back. Free space or raise the limit.",
                    {"size_bytes": size_after, "storage_limit_bytes": limit},
                )
        return await self._shape(conn, access.pg_name, result, request)

    async def _execute(self, conn: AsyncConnection[Any], sql_text: str) -> StatementResult:
        """Run the SQL within the row/byte limits; if it outlives the statement timeout
        (say it turned the timeout off), cancel it and drop the connection."""
        deadline = self.settings.statement_timeout_ms / 1000 + _OVERRUN_GRACE_S
        try:
            async with asyncio.timeout(deadline):
                return await run_bounded(
                    conn, sql_text, self.settings.query_max_rows, self.settings.query_max_bytes
                )
        except TimeoutError:
            await conn.close()  # psycopg already sent the cancel request
            raise ServiceError(
                400,
                "statement_timeout",
                f"the query ran longer than {self.settings.statement_timeout_ms} ms",
            ) from None

    async def _shape(
        self,
        conn: AsyncConnection[Any],
        pg_name: str,
        result: StatementResult,
        request: QueryRequest,
    ) -> dict[str, Any]:
        """The JSON body of a result: columns with type names, rows as lists or objects."""
        types = await self._type_names(conn, pg_name, result.type_oids)
        rows: list[Any] = result.rows
        unparsed = [
            i
            for i, (oid, name) in enumerate(zip(result.type_oids, types, strict=True))
            if name.endswith("[]") and not is_builtin(oid)
        ]
        if unparsed:  # arrays of user types (enums…) come as text: make them arrays
            rows = [parse_text_arrays(row, unparsed) for row in rows]
        data: list[Any]
        if request.data_format == "objects":
            _check_unique(result.names)
            data = [dict(zip(result.names, row, strict=True)) for row in rows]
        else:
            data = [list(row) for row in rows]
        return {
            "columns": [{"name": n, "type": t} for n, t in zip(result.names, types, strict=True)],
            "data": data,
            "row_count": result.row_count,
            "truncated": result.truncated,
            "command": result.command,
        }

    async def _type_names(
        self, conn: AsyncConnection[Any], pg_name: str, oids: list[int]
    ) -> list[str]:
        cache = self._types.setdefault(pg_name, {})
        missing = [oid for oid in oids if type_name(oid, cache) is None]
        if missing:
            cur = await conn.execute(TYPE_NAMES_SQL, (missing,))
            for oid, name in await cur.fetchall():
                cache[oid] = name
        return [cache.get(oid, "unknown") for oid in oids]


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ServiceError(
                400,
                "duplicate_column",
                f"the result has two columns named {name!r}, which objects cannot hold:"
                " give them distinct aliases (AS …) or use data_format=list",
                {"column": name},
            )
        seen.add(name)


async def _scalar(conn: AsyncConnection[Any], query: str) -> int:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _sql_error(exc: psycopg.Error) -> ServiceError:
    diag = exc.diag
    if isinstance(exc, errors.QueryCanceled) and "statement timeout" in str(exc):
        return ServiceError(400, "statement_timeout", diag.message_primary or str(exc))
    position = diag.statement_position
    return ServiceError(
        400,
        "sql_error",
        diag.message_primary or str(exc).strip(),
        {
            "sqlstate": exc.sqlstate,
            "position": int(position) if position else None,
            "detail": diag.message_detail,
            "hint": diag.message_hint,
        },
    )
