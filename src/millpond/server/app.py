"""The app factory. ``create_app(settings)`` returns an ASGI app whose lifespan starts
Postgres (embedded or external), applies control-database migrations, creates the first
admin on first start, finishes interrupted database creations/deletions, and on
shutdown closes pools and stops the embedded Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolClosed, PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._version import __version__
from ..models import Health, Liveness, PostgresHealth, UserCreated
from .accounts import router as accounts_router
from .accounts.service import bootstrap_admin
from .apidocs import router as apidocs_router
from .budget import CAPACITY_SQL, ConnectionBudget, capacity_of, streams_of
from .clusters import router as clusters_router
from .clusters.move import Mover
from .clusters.move import recover as recover_moves
from .clusters.registry import Clusters
from .clusters.service import ClusterService
from .compat import bitio as bitio_compat
from .compat import schematic as schematic_compat
from .compat.spacetimedb import router as spacetimedb_compat
from .config import Settings
from .console import router as console_router
from .databases import router as databases_router
from .databases.service import DatabaseService
from .deps import Services
from .errors import ServiceError
from .flags import router as flags_router
from .flags import stream as flags_stream
from .flags.service import FlagService
from .gateway import Gateway
from .headers import SecurityHeaders
from .limits import BodyLimits, lone_surrogate
from .modules import router as modules_router
from .modules.row_visibility import RowRules
from .modules.service import ModuleService
from .observability import router as metrics_router
from .observability.metrics import Metrics, ObserveRequests
from .openapi import install as document_openapi
from .postgres import provision
from .postgres.availability import connection_lost, unavailable
from .postgres.cluster import Cluster
from .postgres.supervisor import Fatal, Supervisor, describe, exit_process
from .query import router as query_router
from .query.service import QueryService
from .realtime import router as realtime_router
from .realtime.service import RealtimeService
from .routing import is_json
from .store import Store
from .store.migrate import migrate
from .transfer import router as transfer_router
from .transfer.service import TransferService

_log = logging.getLogger("millpond.server")

ADMIN_KEY_FILE = "admin-key"
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}

Announce = Callable[[UserCreated, Path], None]


def _default_announce(created: UserCreated, path: Path) -> None:
    # the key itself never goes to a log; ``millpond up`` prints it on the terminal
    _log.warning("created admin user %r; its API key is in %s", created.user.username, path)


async def _server_secret(store: Store, settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    await store.execute(
        "INSERT INTO server_state (key, value) VALUES ('role_secret', %s) ON CONFLICT DO NOTHING",
        (secrets.token_urlsafe(48),),
    )
    row = await store.fetchone("SELECT value FROM server_state WHERE key = 'role_secret'")
    assert row is not None
    return str(row["value"]).encode()


def _write_admin_key(settings: Settings, created: UserCreated) -> Path:
    import os

    path = (settings.data_dir / ADMIN_KEY_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.api_key.secret + "\n")
    return path


async def _connection_budget(store: Store, settings: Settings) -> tuple[ConnectionBudget, int]:
    """The tenant connection budget and the number of realtime streams, sized from the
    running Postgres' settings."""
    row = await store.fetchone(CAPACITY_SQL)
    assert row is not None
    capacity = capacity_of(dict(row), settings.reserved_connections)
    budget = ConnectionBudget(settings.account_max_connections, capacity)
    streams = streams_of(dict(row), settings.realtime_max_streams)
    _log.info(
        "tenant connections: %d on this replica, at most %d per account; %d realtime streams",
        capacity,
        budget.per_account,
        streams,
    )
    return budget, streams


async def start_services(
    settings: Settings, announce: Announce, on_fatal: Fatal = exit_process
) -> Services:
    cluster = Cluster(settings)
    await asyncio.to_thread(cluster.start)
    await asyncio.to_thread(migrate, cluster.control_conninfo)
    store = Store(cluster.control_conninfo, availability=cluster.availability)
    await store.open()
    secret = await _server_secret(store, settings)
    await asyncio.to_thread(provision.ensure_replication_role, cluster, secret)
    clusters = Clusters(cluster, store, settings, secret)
    await clusters.load()
    placement = ClusterService(store, clusters, settings)
    budget, streams = await _connection_budget(store, settings)
    databases = DatabaseService(store, clusters, placement, secret, settings=settings)
    query = QueryService(store, clusters, secret, settings, budget)
    realtime = RealtimeService(query, settings.realtime_idle_seconds)
    realtime.max_streams = streams
    databases.drop_hooks.append(realtime.drop)
    databases.drop_hooks.append(query.drop_pools)
    databases.move_hooks.append(realtime.moving)
    databases.move_hooks.append(query.drop_pools)
    moved = await recover_moves(databases)
    if moved:
        _log.warning("finished %d database move(s) an earlier crash interrupted", moved)
    cleaned = await databases.reconcile()
    if cleaned:
        _log.warning("cleaned up %d database(s) left half-made by an earlier crash", cleaned)
    created = await bootstrap_admin(store)
    if created is not None:
        announce(created, _write_admin_key(settings, created))
    gateway = Gateway(settings, store, clusters, secret, budget=budget)
    await gateway.start()
    transfer = TransferService(store, clusters, secret, settings)
    await transfer.start()
    flags = FlagService(store, settings, cluster.control_conninfo)
    await flags.start()
    modules = ModuleService(store, clusters, secret, settings)
    await modules.start()
    query.row_rules = RowRules(store, modules.changes)
    databases.drop_hooks.append(modules.drop)
    databases.move_hooks.append(modules.drop)
    mover = Mover(databases)
    mover.after_copy.append(modules.lifecycle.end_all)
    supervisor = Supervisor(cluster, settings, on_fatal)
    supervisor.on_recovered.append(lambda: _drop_dead_connections(store, query))
    await supervisor.start()
    return Services(
        settings=settings,
        cluster=cluster,
        store=store,
        databases=databases,
        query=query,
        realtime=realtime,
        gateway=gateway,
        transfer=transfer,
        flags=flags,
        budget=budget,
        supervisor=supervisor,
        clusters=clusters,
        placement=placement,
        mover=mover,
        extra={"modules": modules},
    )


async def _drop_dead_connections(store: Store, query: QueryService) -> None:
    """After Postgres came back: the pools' idle connections died with it. The control
    pool drops them (``Store`` checks idle connections); the query pools, whose pending
    reconnects may still be backing off, are replaced (the next query makes a new one)."""
    await store.pool.check()
    for pg_name in {pg_name for pg_name, _ in list(query._pools)}:
        await query.drop_pools(pg_name)


async def stop_services(svc: Services) -> None:
    if svc.supervisor is not None:
        await svc.supervisor.stop()  # first: the cluster's stop is no death to repair
    if svc.gateway is not None:
        await svc.gateway.stop()
    if svc.transfer is not None:
        await svc.transfer.close()
    if svc.flags is not None:
        await svc.flags.close()
    modules = svc.extra.get("modules")
    if isinstance(modules, ModuleService):
        await modules.close()
    await svc.realtime.close()
    await svc.query.close()
    if svc.clusters is not None:
        await svc.clusters.close()
    await svc.store.close()
    await asyncio.to_thread(svc.cluster.stop)


def settle_heap() -> None:
    """Once started, move everything alive into the garbage collector's permanent
    generation (``gc.freeze``): the modules, settings, services and pools stay for the
    process's life, and a full collection walked all of them each time — a 60 ms pause
    of every request, some ten times in five seconds of a query load (p99 73 ms against
    20 for the same load without them). Garbage is collected first, so nothing dead is
    kept. Only for a process that serves one app: tests start many servers in one."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    announce: Announce = _default_announce,
    on_fatal: Fatal = exit_process,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """``on_fatal(reason)`` runs when the embedded Postgres died and could not be
    restarted; by default it ends the process with a non-zero status. ``freeze_heap``:
    the process serves this app alone (``millpond up``), see :func:`settle_heap`."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await start_services(settings, announce, on_fatal)
        app.state.services.extra["metrics"] = metrics
        metrics.watch(app.state.services)
        if freeze_heap:
            settle_heap()
        try:
            yield
        finally:
            await stop_services(app.state.services)

    app = FastAPI(
        title="millpond",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by apidocs/, with its own files
        redoc_url=None,
    )
    _install_error_handlers(app)
    app.add_exception_handler(UnicodeEncodeError, lone_surrogate)
    app.add_middleware(
        BodyLimits, max_bytes=settings.max_request_bytes, max_depth=settings.max_json_depth
    )
    app.add_middleware(CatchAll)
    app.add_middleware(schematic_compat.SchematicErrors)  # its errors in Schematic's shape
    # the answers as clients get them: counted, timed, given an id, logged
    app.add_middleware(ObserveRequests, metrics=metrics, access_log=settings.access_log)
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, even CatchAll's
    # routers are tried in this order, and every route before a match costs a regex and
    # more (some 10% of a reducer call's CPU in the server when modules came after the
    # flags' 62 routes): the hottest first. No two routers' paths overlap
    # (tests/modules/test_router_order.py), so the order changes nothing else.
    # the hottest, as plain routes before FastAPI's own (server/routing.py)
    app.router.routes[:0] = [modules_router.call_route, query_router.query_route]
    app.include_router(modules_router.router)
    app.include_router(accounts_router.router)
    app.include_router(databases_router.router)
    app.include_router(clusters_router.router)
    app.include_router(query_router.router)
    app.include_router(realtime_router.router)
    app.include_router(transfer_router.router)
    app.include_router(flags_router.router)
    app.include_router(flags_stream.router)
    app.include_router(schematic_compat.router)
    app.include_router(spacetimedb_compat.router)
    app.include_router(bitio_compat.router)
    app.include_router(console_router.router)
    app.include_router(apidocs_router.router)
    app.include_router(metrics_router.router)

    @app.get("/v1/health", response_model=Health)
    async def health(request: Request) -> Health:
        """Always 200 while the server answers: ``status`` says whether Postgres does."""
        return await _health(request.app.state.services)

    @app.get("/v1/health/live", response_model=Liveness)
    async def live() -> Liveness:
        """Liveness: the process serves (Postgres may be down: do not restart for that)."""
        return Liveness(status="ok", version=__version__)

    @app.get("/v1/health/ready", response_model=Health)
    async def ready(request: Request) -> Health:
        """Readiness: 200 when requests can be served (Postgres answers), else 503
        ``not_ready`` with the reason (take this replica out of the balancer)."""
        found = await _health(request.app.state.services)
        if not found.postgres.ok:
            raise ServiceError(
                503, "not_ready", f"Postgres: {found.postgres.error}", found.model_dump()
            )
        return found

    document_openapi(app)
    return app


_HEALTH_TIMEOUT_S = 2.0


async def _health(svc: Services) -> Health:
    """Fast even when Postgres is not: the supervisor's reason while it is down, else a
    query bounded by ``_HEALTH_TIMEOUT_S``."""
    started = time.perf_counter()
    availability = svc.cluster.availability
    try:
        availability.check()
        async with asyncio.timeout(_HEALTH_TIMEOUT_S):
            row = await svc.store.fetchone("SELECT current_setting('server_version') AS v")
        pg = PostgresHealth(
            ok=True,
            mode=svc.cluster.mode,
            version=row["v"] if row else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    except Exception as exc:
        if connection_lost(exc):
            availability.suspect()
        pg = PostgresHealth(ok=False, mode=svc.cluster.mode, error=_why(exc, availability.reason))
    return Health(status="ok" if pg.ok else "degraded", version=__version__, postgres=pg)


def _why(exc: Exception, reason: str | None) -> str:
    if reason:
        return reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {_HEALTH_TIMEOUT_S:g} s"
    return describe(exc) if connection_lost(exc) else type(exc).__name__


class CatchAll:
    """Outermost net: an exception no handler took becomes the 500 envelope, and the
    connection stays usable (Starlette's own last-resort handler re-raises, which makes
    the server drop a kept-alive connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            _log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
            err = ServiceError(500, "internal_error", "internal server error; see the server log")
            await JSONResponse(err.envelope(), status_code=500)(scope, receive, send)


_NOT_AN_OBJECT = ("model_attributes_type", "dict_type", "model_type")


def _not_json(content_type: str | None) -> str | None:
    """What to say when a JSON body was refused because it was not sent as JSON (curl's
    ``-d`` sends a form); None when it was."""
    if content_type and is_json(content_type):
        return None
    sent = f"as {content_type.split(';')[0]}" if content_type else "without a content type"
    return (
        f"the body was sent {sent}: send it as JSON, with the header Content-Type: application/json"
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(conn: Request | WebSocket, exc: ServiceError) -> JSONResponse | None:
        if isinstance(conn, WebSocket):  # say, Postgres went down while it connected
            if exc.status != 503:
                _log.warning("a socket failed with %s %s: %s", exc.status, exc.code, exc.message)
            await _close_socket(conn, 1013 if exc.status == 503 else 1011, exc.code)
            return None
        headers = getattr(exc, "headers", None)  # say, Retry-After of postgres_unavailable
        return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        if first["loc"] == ["body"] and first["type"] in _NOT_AN_OBJECT:
            message = _not_json(request.headers.get("content-type")) or message
        err = ServiceError(422, "validation_error", message, details)
        return JSONResponse(err.envelope(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        err = ServiceError(exc.status_code, code, str(exc.detail))
        return JSONResponse(err.envelope(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(PoolClosed)
    async def postgres_error(conn: Request | WebSocket, exc: Exception) -> JSONResponse | None:
        if not connection_lost(exc):
            if isinstance(conn, Request):
                return await unexpected(conn, exc)
            _log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
            await _close_socket(conn, 1011, "internal_error")
            return None
        svc: Services | None = getattr(conn.app.state, "services", None)
        availability = svc.cluster.availability if svc is not None else None
        if availability is not None:
            availability.suspect()  # Postgres went away under a request: look now
        _log.warning("a request lost its Postgres connection: %s", describe(exc))
        down = unavailable(exc, availability)
        if isinstance(conn, WebSocket):
            await _close_socket(conn, 1013, down.code)
            return None
        return JSONResponse(down.envelope(), status_code=503, headers=down.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        _log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        err = ServiceError(500, "internal_error", "internal server error; see the server log")
        return JSONResponse(err.envelope(), status_code=500)


async def _close_socket(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # it may be closed already
        await ws.close(code, reason)


__all__ = ["create_app", "settle_heap", "start_services", "stop_services"]
