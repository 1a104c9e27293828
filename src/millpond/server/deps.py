"""Dependencies the routers need, looked up on the app so tests can swap any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from .accounts.service import Principal, authenticate, require_unbound
from .budget import ConnectionBudget, Tally
from .config import Settings
from .databases.service import DatabaseService
from .errors import ServiceError
from .flags.service import FlagService
from .gateway import Gateway
from .postgres.cluster import Cluster
from .postgres.supervisor import Supervisor
from .query.service import QueryService
from .realtime.service import RealtimeService
from .store import Store
from .transfer.service import TransferService


@dataclass
class Services:
    settings: Settings
    cluster: Cluster
    store: Store
    databases: DatabaseService
    query: QueryService
    realtime: RealtimeService
    gateway: Gateway | None = None
    transfer: TransferService | None = None
    flags: FlagService | None = None
    supervisor: Supervisor | None = None
    budget: ConnectionBudget = field(default_factory=ConnectionBudget)
    realtime_sockets: Tally = field(default_factory=Tally)
    """Open realtime WebSockets per account (``account_max_realtime_connections``)."""
    extra: dict[str, object] = field(default_factory=dict)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not token or scheme.lower() != "bearer":
        raise ServiceError(
            401,
            "unauthorized",
            "missing API key: send the header 'Authorization: Bearer mp_…'",
        )
    who = await authenticate(services(request).store, token.strip())
    if who is None:
        raise ServiceError(401, "unauthorized", "unknown, revoked or expired API key")
    path = request.url.path
    if not (path.startswith("/v1/flags/") or path in ("/v1/flags", "/v1/me")):
        require_unbound(who)
    return who


async def _services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, on every request
    return services(request)


Svc = Annotated[Services, Depends(_services)]
Caller = Annotated[Principal, Depends(principal)]
