"""The server's Prometheus metrics, in a registry of its own per app (never the
process-wide default one: tests run several apps in one process), and its access log
(:class:`ObserveRequests`).

- ``millpond_http_requests_total{method, route, status}`` and
  ``millpond_http_request_duration_seconds{method, route}``: every HTTP request, by the
  route's template (``/v1/databases/{owner}/{name}``), ``unmatched`` for paths no route
  has (so a scanner's paths cannot grow the label set);
- read when scraped: ``millpond_up`` (1: Postgres reachable), ``millpond_realtime_connections``
  (open realtime and SpacetimeDB sockets), ``millpond_realtime_streams`` (databases
  streamed, each a replication connection), ``millpond_realtime_subscriptions`` (distinct
  queries subscribed), ``millpond_gateway_sessions``, ``millpond_info{version}``;
  ``millpond_pool_connections{pool, state}`` and ``millpond_pool_waiting{pool}`` (the
  control database's pool and each tenant pool holding connections);
  ``millpond_flag_checks_total{reason, value}`` (the flags service's tally);
- read from the control database, in one query at most once per ``SAMPLE_TTL_S``
  (:class:`ControlReads`, which the router refreshes before it renders):
  ``millpond_transfer_jobs{kind, state}`` (import/export jobs queued and running, over
  every replica) and ``millpond_realtime_lag_bytes{database}`` (per stream, the WAL
  Postgres wrote that it has not received yet; a stopped stream's series disappears).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._version import __version__
from .context import request_id as current_request

_log = logging.getLogger("millpond.server")
_access = logging.getLogger("millpond.access")
REQUEST_ID_MAX = 54
"""Longest X-Request-Id taken from a caller: ``millpond <id>`` then fits Postgres'
``application_name`` (63 bytes) whole."""
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX}}}")
SAMPLE_TTL_S = 1.0
"""How long one reading of the control database serves scrapes."""
_MAX_COUNTED = 4096
"""(method, route, status) triples whose metric children are kept (routes are templates)."""
_SAMPLE_TIMEOUT_S = 2.0
_JOB_STATES = {"RECEIVED": "queued", "PROCESSING": "running"}
_CONTROL_SQL = """
SELECT (pg_catalog.pg_current_wal_lsn() - '0/0'::pg_catalog.pg_lsn)::bigint AS wal,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(kind, state, n)), '[]'::jsonb)
          FROM (SELECT kind, state, count(*) AS n FROM transfer_jobs
                WHERE state IN ('RECEIVED', 'PROCESSING') GROUP BY kind, state) q) AS jobs
"""
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "millpond_http_requests",
            "HTTP requests answered, by route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "millpond_http_request_duration_seconds",
            "Time to answer an HTTP request (until its last byte was handed over).",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.control: ControlReads | None = None

    def watch(self, services: Any) -> None:
        """Read the live gauges from ``services`` when scraped."""
        self.control = ControlReads(lambda: _read_control(services))
        self.registry.register(_Live(services, self.control))

    async def refresh(self) -> None:
        """Before rendering: read the control database, unless a recent reading serves."""
        if self.control is not None:
            await self.control.refresh()


@dataclass(frozen=True)
class ControlSample:
    """One reading of the control database."""

    wal_lsn: int
    """Postgres' current WAL position (its byte offset)."""
    jobs: dict[tuple[str, str], int]
    """Active transfer jobs by (kind, state): ``import``/``export``, ``queued``/``running``."""


class ControlReads:
    """The scrape-time reading of the control database, shared: a scrape within
    ``ttl`` seconds of the last reading (or while one is under way) gets its answer, so
    scrapes cannot hammer Postgres; a failed reading (Postgres down) is None for
    ``ttl`` too, and its metrics are left out."""

    def __init__(
        self,
        read: Callable[[], Awaitable[ControlSample]],
        ttl: float = SAMPLE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self.sample: ControlSample | None = None
        self.reads = 0
        self._at = -math.inf
        self._lock = asyncio.Lock()

    async def refresh(self) -> ControlSample | None:
        async with self._lock:
            if self.clock() - self._at < self.ttl:
                return self.sample
            self.reads += 1
            try:
                self.sample = await self.read()
            except Exception as exc:  # Postgres down: millpond_up says so
                _log.debug("metrics: cannot read the control database: %s", exc)
                self.sample = None
            self._at = self.clock()
            return self.sample


async def _read_control(svc: Any) -> ControlSample:
    svc.cluster.availability.check()  # known down: no waiting for a connection
    async with asyncio.timeout(_SAMPLE_TIMEOUT_S):
        row = await svc.store.fetchone(_CONTROL_SQL)
    assert row is not None
    jobs = {(kind, state): 0 for kind in ("import", "export") for state in _JOB_STATES.values()}
    for kind, state, count in row["jobs"]:
        jobs[(kind, _JOB_STATES[state])] = int(count)
    return ControlSample(int(row["wal"]), jobs)


class _Live(Collector):
    def __init__(self, services: Any, control: ControlReads) -> None:
        self.services = services
        self.control = control

    def collect(self) -> Iterator[Metric]:
        svc = self.services
        yield InfoMetricFamily("millpond", "The server's version.", value={"version": __version__})
        up = GaugeMetricFamily("millpond_up", "1 when Postgres is reachable, else 0.")
        up.add_metric([], 1.0 if svc.cluster.availability.up else 0.0)
        yield up
        clusters = GaugeMetricFamily(
            "millpond_cluster_up",
            "1 when this server reaches the Postgres cluster, else 0 (docs/clusters.md).",
            labels=["cluster"],
        )
        for cluster in svc.clusters.loaded() if svc.clusters is not None else [svc.cluster]:
            clusters.add_metric([cluster.name], 1.0 if cluster.availability.up else 0.0)
        yield clusters
        sockets = GaugeMetricFamily(
            "millpond_realtime_connections", "Open realtime WebSockets on this server."
        )
        sockets.add_metric([], float(sum(svc.realtime_sockets.counts.values())))
        yield sockets
        hubs = list(svc.realtime.hubs.values())
        streams = GaugeMetricFamily(
            "millpond_realtime_streams", "Databases whose changes this server streams."
        )
        streams.add_metric([], float(len(hubs)))
        yield streams
        queries = GaugeMetricFamily(
            "millpond_realtime_subscriptions", "Distinct queries subscribed, over all streams."
        )
        queries.add_metric([], float(sum(len(hub.queries) for hub in hubs)))
        yield queries
        gateway = GaugeMetricFamily("millpond_gateway_sessions", "Open gateway connections.")
        gateway.add_metric([], float(svc.gateway.connection_count() if svc.gateway else 0))
        yield gateway
        yield from _pools(svc)
        if svc.flags is not None:
            yield _flag_checks(svc.flags.checker.counts)
        sample = self.control.sample
        if sample is not None:
            yield _jobs(sample)
            yield _lag(sample, hubs)


def _pools(svc: Any) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "millpond_pool_connections",
        "Connections of a pool by state (in_use, idle): the control database's (control)"
        " and each tenant pool holding any (its role, mp_db_<id>_<role>).",
        labels=("pool", "state"),
    )
    waiting = GaugeMetricFamily(
        "millpond_pool_waiting", "Requests waiting for a connection of a pool.", labels=("pool",)
    )
    pools = [("control", svc.store.pool)] + [(pool.name, pool) for pool in svc.query.pools()]
    for name, pool in pools:
        stats = pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        queued = stats.get("requests_waiting", 0)
        if name != "control" and not size and not queued:
            continue  # an unused tenant pool: no series (their number is unbounded)
        connections.add_metric([name, "in_use"], float(max(0, size - idle)))
        connections.add_metric([name, "idle"], float(idle))
        waiting.add_metric([name], float(queued))
    yield connections
    yield waiting


def _flag_checks(counts: dict[tuple[str, bool], int]) -> Metric:
    checks = CounterMetricFamily(
        "millpond_flag_checks",
        "Flags checked by the server (API and compatibility routes), by reason and value.",
        labels=("reason", "value"),
    )
    for (reason, value), count in sorted(dict(counts).items()):
        checks.add_metric([reason, "true" if value else "false"], float(count))
    return checks


def _jobs(sample: ControlSample) -> Metric:
    jobs = GaugeMetricFamily(
        "millpond_transfer_jobs",
        "Import and export jobs queued and running, over every replica.",
        labels=("kind", "state"),
    )
    for (kind, state), count in sorted(sample.jobs.items()):
        jobs.add_metric([kind, state], float(count))
    return jobs


def _lag(sample: ControlSample, hubs: list[Any]) -> Metric:
    lag = GaugeMetricFamily(
        "millpond_realtime_lag_bytes",
        "Per database streamed: bytes of WAL Postgres wrote that its stream has not"
        " received yet (sampled with the control reading).",
        labels=("database",),
    )
    for hub in hubs:
        received = hub.received_lsn
        if received:  # 0: not started yet
            lag.add_metric([hub.pg_name], float(max(0, sample.wal_lsn - received)))
    return lag


class ObserveRequests:
    """Every HTTP request (pure ASGI): counted and timed by its route's template; given
    an id — the caller's ``X-Request-Id`` when it is a plain token of at most
    ``REQUEST_ID_MAX`` characters, else a new one — sent back in ``X-Request-Id``, put in
    the request's state (``request.state.request_id``) and, while it is served, in
    :data:`.context.request_id` (JSON logs, Postgres' ``application_name`` of its
    queries); and, with ``access_log``, one line on the
    ``millpond.access`` logger: method, path (never the query string: it may carry a
    token), status, milliseconds, id."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # each (method, route, status)'s children, looked up once: ``labels()`` builds
        # and checks the label tuple under a lock on every call
        self._counted: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request.set(request_id)  # logs and Postgres name it
        header = (b"x-request-id", request_id.encode())

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            children = self._counted.get((method, route, status))
            if children is None:
                children = self._children(method, route, status)
            children[0].inc()
            children[1].observe(seconds)
            if self.access_log:
                _access.info(
                    "%s %s %s %.1fms id=%s",
                    method,
                    scope.get("path", ""),
                    status,
                    seconds * 1000,
                    request_id,
                )
            current_request.reset(token)

    def _children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        children = (
            self.metrics.requests.labels(method, route, str(status)),
            self.metrics.latency.labels(method, route),
        )
        if len(self._counted) < _MAX_COUNTED:
            self._counted[(method, route, status)] = children
        return children


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return _new_request_id()


_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count()


def _new_request_id() -> str:
    """A request id unique across processes and restarts: 64 random bits drawn when the
    process starts, and a counter (``uuid4`` per request reads the kernel's random
    source each time: 2% of a query's CPU)."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"
