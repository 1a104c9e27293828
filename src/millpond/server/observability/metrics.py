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
  queries subscribed), ``millpond_gateway_sessions``, ``millpond_info{version}``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._version import __version__

_access = logging.getLogger("millpond.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
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

    def watch(self, services: Any) -> None:
        """Read the live gauges from ``services`` when scraped."""
        self.registry.register(_Live(services))


class _Live(Collector):
    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        svc = self.services
        yield InfoMetricFamily("millpond", "The server's version.", value={"version": __version__})
        up = GaugeMetricFamily("millpond_up", "1 when Postgres is reachable, else 0.")
        up.add_metric([], 1.0 if svc.cluster.availability.up else 0.0)
        yield up
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


class ObserveRequests:
    """Every HTTP request (pure ASGI): counted and timed by its route's template; given
    an id — the caller's ``X-Request-Id`` when it is a plain token of at most 64
    characters, else a new one — sent back in ``X-Request-Id`` and put in the request's
    state (``request.state.request_id``); and, with ``access_log``, one line on the
    ``millpond.access`` logger: method, path (never the query string: it may carry a
    token), status, milliseconds, id."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
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
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(seconds)
            if self.access_log:
                _access.info(
                    "%s %s %s %.1fms id=%s",
                    method,
                    scope.get("path", ""),
                    status,
                    seconds * 1000,
                    request_id,
                )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex
