"""``GET /v1/health``."""

from __future__ import annotations

from typing import Literal

from .common import WireModel


class PostgresHealth(WireModel):
    ok: bool
    mode: Literal["embedded", "external"]
    version: str | None = None
    latency_ms: float | None = None
    error: str | None = None


class Health(WireModel):
    status: Literal["ok", "degraded"]
    version: str
    postgres: PostgresHealth


class Liveness(WireModel):
    status: Literal["ok"]
    version: str
