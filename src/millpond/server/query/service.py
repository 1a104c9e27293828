"""``POST /v1/query``: run SQL in one transaction as the caller's role for the database.

Connections come from a pool per (database, role). Rights are Postgres privileges of the
role — a read-only caller is connected as the ``ro`` role, so writes fail inside
Postgres, not by parsing SQL. After every call the session is reset (what ``DISCARD ALL``
does, in the round trip of the ``COMMIT``: ``stream.RESET_SESSION``) so nothing a query
``SET`` leaks into the next caller's.

One transaction, all or nothing: the server begins it (``BEGIN``, ``READ ONLY`` for
readers) in the same query string as the caller's SQL, and ends it itself — ``COMMIT``
for writers once the storage limit is checked, always ``ROLLBACK`` for read-only callers
(whatever they ran, nothing of it persists). Statements that would end the transaction
early (``COMMIT``, ``END``, ``ROLLBACK``, ``PREPARE TRANSACTION``…) are refused before
anything runs (``transaction_control``, see :mod:`.statements`); a ``COMMIT`` inside a
procedure or ``DO`` block fails in Postgres, since the transaction is an explicit one.
The ``BEGIN`` also sets ``application_name`` to ``millpond <request id>`` for the
transaction (``SET LOCAL``: its end reverts it), so ``pg_stat_activity`` and Postgres'
log name the HTTP request (its ``X-Request-Id``) a session is serving.

Limits: ``statement_timeout`` (a server setting); a query that outlives it by
``_OVERRUN_GRACE_S`` (it turned the timeout off, or caught ``query_canceled``) has its
backend terminated, so no work outlives its call. Rows and bytes returned
(``truncated``), and the database's storage limit: when a limit is set, a transaction
that grew the database past it is rolled back with ``storage_limit_exceeded``.

Every statement the server itself runs in a tenant's session names its catalogs with
their schema (``pg_catalog.…``): the session's ``search_path`` is the tenant's.

Row visibility rules (``modules/row_visibility.py``): when the database's module has any,
a caller connected as a reader or writer gets the proof of its identity in its session
first (one round trip, a bind parameter), and the reset takes it away with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg import sql as psql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from ...models import QueryRequest
from ..accounts.service import Principal
from ..budget import BudgetExceeded, ConnectionBudget
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError
from ..modules import row_visibility
from ..modules.identities import sender_of
from ..modules.row_visibility import RowRules
from ..observability.context import current_request_id
from ..postgres import privileged, provision
from ..postgres.availability import connection_lost, unavailable
from ..postgres.cluster import HOME, Cluster
from ..postgres.embedded import hide_install
from ..store import Store, connection_alive
from .adapters import (
    TYPE_NAMES_SQL,
    is_builtin,
    parse_text_arrays,
    register_json_loaders,
    type_name,
)
from .budgeted import budgeted_class, reclaim_idle
from .statements import transaction_control
from .stream import StatementResult, end_and_reset, run_bounded

if TYPE_CHECKING:
    from ..clusters.registry import Clusters

_log = logging.getLogger("millpond.query")
_SIZE_SQL = "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())"
_SIZE_AFTER_SQL = (
    "SELECT pg_catalog.pg_database_size(pg_catalog.current_database()),"
    " pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL"
)
_OVERRUN_GRACE_S = 1.0
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LAST_RESORT_S = 5.0
_DEAD_CONNECTION_RETRIES = 4
_TAMPER_RETRIES = 3


class QueryService:
    def __init__(
        self,
        store: Store,
        clusters: Clusters,
        secret: bytes,
        settings: Settings,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self.store = store
        self.clusters = clusters
        self.cluster = clusters.home
        self.secret = secret
        self.settings = settings
        self.budget = budget or ConnectionBudget()
        self.budget.reclaimers.append(self._reclaim_idle)
        self._pools: dict[tuple[str, str], AsyncConnectionPool[AsyncConnection[Any]]] = {}
        self._pool_cluster: dict[tuple[str, str], str] = {}
        """The cluster each pool connects to: a database moved elsewhere gets a new one."""
        self._types: dict[str, dict[int, str]] = {}
        self._lock = asyncio.Lock()
        self._releasing: set[asyncio.Task[None]] = set()
        self.row_rules: RowRules | None = None
        """Which databases have row visibility rules (set by the app: their callers'
        sessions get the proof of their identity, ``modules/row_visibility.py``)."""

    # -- pools ------------------------------------------------------------------------------

    async def pool_for(
        self, pg_name: str, sql_role: provision.SqlRole, cluster: str = HOME
    ) -> AsyncConnectionPool[Any]:
        """The pool of ``sql_role`` sessions on ``pg_name``, which lives on ``cluster``."""
        key = (pg_name, sql_role)
        pool = self._pools.get(key)
        if pool is not None and self._pool_cluster.get(key) == cluster:
            return pool
        where = await self.clusters.cluster_of(cluster)
        async with self._lock:
            pool = self._pools.get(key)
            if pool is not None and self._pool_cluster.get(key) != cluster:
                self._pools.pop(key)
                await pool.close()  # the database moved: its old cluster's sessions go
                pool = None
            if pool is None:
                pool = self._new_pool(pg_name, sql_role, where)
                await pool.open()
                self._pools[key] = pool
                self._pool_cluster[key] = cluster
        return pool

    def _new_pool(
        self, pg_name: str, sql_role: provision.SqlRole, cluster: Cluster
    ) -> AsyncConnectionPool[Any]:
        role = provision.DatabaseRoles(pg_name).role(sql_role)
        options = (
            f"-c statement_timeout={self.settings.statement_timeout_ms} -c DateStyle=ISO"
            " -c IntervalStyle=iso_8601 -c TimeZone=UTC"
        )
        if sql_role == "ro":
            options += " -c default_transaction_read_only=on"
        conninfo = cluster.role_conninfo(
            pg_name,
            role,
            provision.role_password(self.secret, role),
            options=options,
            application_name="millpond-query",
        )

        async def configure(conn: AsyncConnection[Any]) -> None:
            register_json_loaders(conn.adapters)
            conn.add_notify_handler(_drop)  # else psycopg keeps every one, unbounded

        return AsyncConnectionPool(
            conninfo,
            connection_class=budgeted_class(self._healing_connection(role, cluster), self.budget),
            min_size=0,
            max_size=self.settings.pool_max_size,
            max_idle=self.settings.pool_max_idle_s,
            # no prepared statements: the reset's DEALLOCATE ALL would make psycopg's
            # cache lie
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=configure,
            # no reset: a call resets its session with its COMMIT, or ``_give_back`` does
            # before it returns it (the pool's would be one more round trip, in its
            # worker task)
            open=False,
            name=role,
        )

    def _healing_connection(self, role: str, cluster: Cluster) -> type[AsyncConnection[Any]]:
        """A connection class that repairs what one caller sharing the role may have done
        to it for the others: a changed password (any role may change its own) is
        restored, and role-level settings (``ALTER ROLE CURRENT_USER SET …``, which would
        apply to every later session of the role) are removed before the session is
        used."""
        secret = self.secret

        class _Healing(AsyncConnection[Any]):
            @classmethod
            async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
                for _ in range(_TAMPER_RETRIES):
                    conn = await cls._login(conninfo, **kwargs)
                    cur = await conn.execute(provision.TAMPERED_SETTINGS_SQL)
                    row = await cur.fetchone()
                    if not row or not row[0]:
                        return conn
                    await conn.close()
                    _log.warning("removing role-level settings of role %s", role)
                    await asyncio.to_thread(provision.reset_role_settings, cluster, role)
                raise psycopg.OperationalError(f"role {role} keeps getting role settings")

            @classmethod
            async def _login(cls, conninfo: str, **kwargs: Any) -> Any:
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
            self._pool_cluster.pop(key, None)
            await self._pools.pop(key).close()
        self._types.pop(pg_name, None)

    def pools(self) -> list[AsyncConnectionPool[Any]]:
        """The open pools, one per (database, role), each named by its role
        (``mp_db_<id>_<role>``): ``/metrics`` reads their use."""
        return list(self._pools.values())

    async def close(self) -> None:
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
        self._pool_cluster.clear()

    # -- running ------------------------------------------------------------------------------

    async def run(self, principal: Principal, request: QueryRequest) -> dict[str, Any]:
        """Run the query; return the JSON body of a ``QueryResult`` (built as plain data:
        this is the hot path, and the shape is pinned by the API tests)."""
        availability = self.cluster.availability
        availability.check()  # Postgres is known to be down: 503 at once
        access = await resolve(self.store, principal, request.database)
        if access.cluster != HOME:
            availability = (await self.clusters.cluster_of(access.cluster)).availability
            availability.check()
        proof = await self._proof(principal, access)
        pool = await self.pool_for(access.pg_name, access.sql_role, access.cluster)
        started = time.perf_counter()
        account = principal.user_id
        await self._hold(principal)
        try:
            # fails fast, too, should Postgres go down while this waits for a connection
            conn = await availability.guard(self._getconn(pool, started))
        except PoolClosed as exc:  # its pools were replaced after Postgres came back
            self.budget.unhold(account)
            raise unavailable(exc, availability) from exc
        except BaseException:
            self.budget.unhold(account)
            raise
        reset = False
        try:
            result, reset = await self._run_in(conn, access, request, proof)
        except psycopg.OperationalError as exc:
            if connection_lost(exc):
                availability.suspect()
                raise unavailable(exc, availability) from exc
            raise _sql_error(exc) from exc
        except psycopg.Error as exc:
            raise _sql_error(exc) from exc
        finally:
            self._release(pool, conn, account, reset)
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _release(
        self,
        pool: AsyncConnectionPool[Any],
        conn: AsyncConnection[Any],
        account: int,
        reset: bool,
    ) -> None:
        """Give the connection back in the background (a call that failed leaves its
        session to reset, which need not delay the error). The account holds it until it
        is back in the pool."""
        task = asyncio.create_task(_give_back(pool, conn, reset))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        task.add_done_callback(lambda _: self.budget.unhold(account))

    # -- the connection budget (server/budget.py) ---------------------------------------------

    async def _hold(self, principal: Principal) -> None:
        """Count the query against its caller's connection budget, waiting a while for
        one of the account's own queries to end."""
        exempt = principal.is_admin and self.settings.account_limits_exempt_admins
        try:
            await self.budget.wait_hold(
                principal.user_id, self.settings.pool_timeout_s, principal.username, exempt
            )
        except BudgetExceeded as exc:
            raise exc.service_error() from None

    async def _getconn(
        self, pool: AsyncConnectionPool[Any], started: float
    ) -> AsyncConnection[Any]:
        """A connection of ``pool``; when it has none idle and the server's tenant
        connections are all busy, refuse at once rather than wait for nothing."""
        stats = pool.get_stats()
        idle, size = stats.get("pool_available", 0), stats.get("pool_size", 0)
        if not idle and not size and not await self.budget.make_room():
            raise self.budget.server_full().service_error()
        for _ in range(_DEAD_CONNECTION_RETRIES):
            timeout = max(0.1, self.settings.pool_timeout_s - (time.perf_counter() - started))
            try:
                conn: AsyncConnection[Any] = await pool.getconn(timeout=timeout)
            except PoolTimeout as exc:
                if self.budget.server_busy:
                    raise self.budget.server_full().service_error() from exc
                raise ServiceError(
                    503,
                    "postgres_unavailable",
                    "no database connection became free in time; retry",
                ) from exc
            if await connection_alive(conn):  # one that died idle is never handed out
                return conn
            await conn.close()
            await pool.putconn(conn)  # the pool replaces it
        raise ServiceError(503, "postgres_unavailable", "the database could not be reached; retry")

    async def _reclaim_idle(self, limit: int) -> int:
        return await reclaim_idle(list(self._pools.values()), limit)

    async def _proof(self, principal: Principal, access: Access) -> str | None:
        """The proof of the caller's identity for a database whose row visibility rules
        apply to its role (the owner's role sees every row); None otherwise."""
        if access.sql_role == "owner" or self.row_rules is None:
            return None
        if not await self.row_rules.active(access.id):
            return None
        return row_visibility.proof(self.secret, access.pg_name, sender_of(self.secret, principal))

    async def _run_in(
        self,
        conn: AsyncConnection[Any],
        access: Access,
        request: QueryRequest,
        proof: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The answer's body, and whether the session was reset for the next caller."""
        refused = transaction_control(request.sql)
        if refused is not None:
            raise _transaction_control(refused)
        if proof is not None:  # a parameter: other sessions of the role see the text
            await conn.execute(row_visibility.SET_PROOF_SQL, (proof,))  # DISCARD ALL ends it
        read_only = access.sql_role == "ro"
        limit = None if read_only else access.storage_limit_bytes
        begin = ("BEGIN READ ONLY;" if read_only else "BEGIN;") + _request_tag(conn)
        size_before = 0
        if limit:
            await conn.execute(begin)
            size_before = await _scalar(conn, _SIZE_SQL)
            begin = ""
        # on any error ``_give_back`` rolls the transaction back
        cluster = self.clusters.get(access.cluster)
        result = await self._execute(conn, begin + request.sql, offset=len(begin), cluster=cluster)
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            # the lexer missed a statement that ended the transaction: whatever ran
            # after it is outside the promise; never hand the session on
            await conn.close()
            raise _transaction_control(None)
        if limit:
            await self._check_storage(conn, access, limit, size_before)
        shaped = await self._shape(conn, access.pg_name, result, request)
        # readers' transactions never commit: nothing they ran can persist
        # a LISTEN of the SQL would have the commit deliver every NOTIFY (gigabytes) to
        # this connection: cancelled first, in the same round trip (with the reset)
        ending = (b"ROLLBACK",) if read_only else (b"UNLISTEN *", b"COMMIT")
        return shaped, await end_and_reset(conn, *ending)

    async def _check_storage(
        self, conn: AsyncConnection[Any], access: Access, limit: int, size_before: int
    ) -> None:
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

    async def _execute(
        self,
        conn: AsyncConnection[Any],
        sql_text: str,
        offset: int = 0,
        cluster: Cluster | None = None,
    ) -> StatementResult:
        """Run the SQL within the row/byte limits; if it outlives the statement timeout
        (it turned the timeout off, or caught the cancel), terminate its backend: the
        call has ended, and so must its work. ``offset``: characters the server put
        before the caller's SQL (error positions are the caller's)."""
        deadline = self.settings.statement_timeout_ms / 1000 + _OVERRUN_GRACE_S
        # a timer, not a task: nothing is created per query unless it overruns
        ending: list[asyncio.Task[bool]] = []
        pid, role = conn.info.backend_pid, conn.info.user
        where = cluster or self.cluster
        timer = asyncio.get_running_loop().call_later(
            deadline,
            lambda: ending.append(asyncio.create_task(self._end_overrun(where, pid, role))),
        )
        try:
            # the last resort, should Postgres not even answer the termination
            async with asyncio.timeout(deadline + _LAST_RESORT_S):
                return await run_bounded(
                    conn,
                    sql_text,
                    self.settings.query_max_rows,
                    self.settings.query_max_bytes,
                    self.settings.max_json_depth,
                )
        except (psycopg.Error, TimeoutError) as exc:
            if ending:
                await asyncio.gather(*ending, return_exceptions=True)
                await conn.close()
                raise ServiceError(
                    400,
                    "statement_timeout",
                    f"the query ran longer than {self.settings.statement_timeout_ms} ms"
                    " and was ended",
                ) from None
            if isinstance(exc, psycopg.Error) and offset:
                _shift_position(exc, offset)
            raise
        finally:
            timer.cancel()

    async def _end_overrun(self, cluster: Cluster, pid: int, role: str) -> bool:
        """Terminate a session's backend whose statement ignored the timeout (it disabled
        it, or caught the cancel). Terminating, not cancelling, because no exception
        handler catches it; psycopg then sees the connection end."""
        _log.warning("terminating backend %s: its query outlived the statement timeout", pid)
        return await privileged.terminate_backend(cluster, pid, role)

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


async def _give_back(
    pool: AsyncConnectionPool[Any], conn: AsyncConnection[Any], reset: bool = False
) -> None:
    """Return the connection, reset for the next caller. A call that succeeded reset it
    already (with its ``COMMIT``); otherwise roll back what a failed call left open (the
    pool would too, with a warning in the log for what is the normal end of a failed
    query) and reset it (whatever the SQL set, prepared, listened to, locked or created
    as temporary goes). A session that cannot be reset is closed: the pool replaces
    it."""
    if not reset and not conn.closed:
        try:
            idle = conn.info.transaction_status == TransactionStatus.IDLE
            if not await end_and_reset(conn, *(() if idle else (b"ROLLBACK",))):
                await conn.close()
        except psycopg.Error:
            await conn.close()
    await pool.putconn(conn)


def _request_tag(conn: AsyncConnection[Any]) -> str:
    """``SET LOCAL application_name`` to the id of the request being served (after the
    ``BEGIN``, in its round trip), so Postgres shows whose transaction this is in
    ``pg_stat_activity`` and its log; the transaction's end reverts it. Nothing outside
    a request."""
    request_id = current_request_id()
    if request_id is None:
        return ""
    if _PLAIN_TOKEN.fullmatch(request_id):  # as every id the server accepts or makes is
        return f" SET LOCAL application_name = 'millpond {request_id}';"
    # anything else quoted by psycopg (never trusted to be plain)
    name = psql.Literal(f"millpond {request_id}").as_string(conn)
    return f" SET LOCAL application_name = {name};"


def _transaction_control(statement: str | None) -> ServiceError:
    what = f"{statement!r} would end" if statement else "the SQL ended"
    return ServiceError(
        400,
        "transaction_control",
        f"{what} the transaction the query runs in: an HTTP query is one transaction,"
        " which the server commits when every statement succeeded. Leave out COMMIT,"
        " ROLLBACK, BEGIN, END and PREPARE TRANSACTION (savepoints are fine), or connect"
        " directly (millpond db connect) to control transactions yourself.",
        {"statement": statement},
    )


def _shift_position(exc: psycopg.Error, offset: int) -> None:
    """Make an error's statement position count from the caller's SQL."""
    position = exc.diag.statement_position
    if position:
        exc.millpond_position = max(1, int(position) - offset)  # type: ignore[attr-defined]


def _drop(_: psycopg.Notify) -> None:
    """Notifications a tenant's SQL had delivered to a pooled connection: nobody reads
    them."""


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
    position = getattr(exc, "millpond_position", None) or diag.statement_position
    return ServiceError(
        400,
        "sql_error",
        hide_install(diag.message_primary or str(exc).strip()) or "",
        {
            "sqlstate": exc.sqlstate,
            "position": int(position) if position else None,
            "detail": hide_install(diag.message_detail),
            "hint": hide_install(diag.message_hint),
        },
    )
