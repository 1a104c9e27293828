"""Dependencies the routers need, looked up on the app so tests can swap any of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from .accounts.service import Principal, authenticate, require_unbound
from .budget import ConnectionBudget, Tally
from .clusters.move import Mover
from .clusters.registry import Clusters
from .clusters.service import ClusterService
from .config import Settings
from .databases.service import DatabaseService
from .errors import ServiceError
from .flags.service import FlagService
from .gateway import Gateway
from .modules.identities import TOKEN_PREFIX, authenticate_token, refusal_error
from .modules.jwt import looks_like_jwt
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
    clusters: Clusters | None = None
    placement: ClusterService | None = None
    mover: Mover | None = None
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
    token = token.strip()
    if token.startswith(TOKEN_PREFIX):
        return _end_user(request, await _anonymous(request, token))
    if looks_like_jwt(token):
        return _end_user(request, await _issued(request, token))
    who = await authenticate(services(request).store, token)
    if who is None:
        raise ServiceError(401, "unauthorized", "unknown, revoked or expired API key")
    path = request.scope["path"]  # (``request.url`` would build the whole URL: 5% of a query)
    if not (path.startswith("/v1/flags/") or path in ("/v1/flags", "/v1/me")):
        require_unbound(who)
    return who


F = TypeVar("F", bound=Callable[..., Any])
_ANONYMOUS_ENDPOINTS: set[object] = set()


def anonymous_allowed(endpoint: F) -> F:
    """Mark a route's endpoint as one an anonymous identity's token may call (all others
    refuse it with 403 ``anonymous_identity``: default deny)."""
    _ANONYMOUS_ENDPOINTS.add(endpoint)
    return endpoint


async def _anonymous(request: Request, token: str) -> Principal:
    svc = services(request)
    secret = getattr(svc.extra.get("modules"), "secret", None)
    if not isinstance(secret, bytes):
        raise ServiceError(401, "unauthorized", "identity tokens are not accepted here")
    who = await authenticate_token(svc.store, secret, token)
    if isinstance(who, str):
        raise refusal_error(who)
    return who


async def _issued(request: Request, token: str) -> Principal:
    """The end user of a token of an issuer the named database's owner trusts."""
    issuers = getattr(services(request).extra.get("modules"), "issuers", None)
    owner, name = request.path_params.get("owner"), request.path_params.get("name")
    if issuers is None or owner is None or name is None:
        raise _end_user_refused()
    who: Principal = await issuers.authenticate(token, f"{owner}/{name}")
    return who


def _end_user(request: Request, who: Principal) -> Principal:
    if request.scope.get("endpoint") not in _ANONYMOUS_ENDPOINTS:
        raise _end_user_refused()
    return who


def _end_user_refused() -> ServiceError:
    return ServiceError(
        403,
        "anonymous_identity",
        "an end user's token (an anonymous identity's, or a login provider's) can only call"
        " reducers, read the module's schema and open the realtime socket of its database:"
        " use a millpond API key",
    )


async def _services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, on every request
    return services(request)


Svc = Annotated[Services, Depends(_services)]
Caller = Annotated[Principal, Depends(principal)]
