"""Routes for modules (thin: see service.py): publish, versions, rollback, schema, logs,
and reducer calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from starlette.requests import Request

from ...models.modules import (
    AnonymousIdentity,
    CallResult,
    Connection,
    IdentityCreated,
    LogLine,
    ModulePublish,
    ModuleRollback,
    ModuleSettings,
    ModuleSettingsUpdate,
    ModuleVersion,
    ModuleVersionDetail,
    PublishResult,
    Schedule,
    TokenIssuer,
    TokenIssuerPut,
)
from ..deps import Caller, Svc, anonymous_allowed, principal, services
from ..routing import NamedRoute, json_body
from .service import ModuleService

router = APIRouter(prefix="/v1/databases/{owner}/{name}")


def _modules(svc: Svc) -> ModuleService:
    service = svc.extra["modules"]
    assert isinstance(service, ModuleService)
    return service


# The hottest route. Requests are served by ``call_route`` (below), which the app puts
# before every other route; this one documents it in the OpenAPI schema.
@router.post("/call/{reducer}", response_model=CallResult, response_model_by_alias=True)
@anonymous_allowed
async def call(
    owner: str,
    name: str,
    reducer: str,
    svc: Svc,
    who: Caller,
    args: Annotated[Any, Body(description="Arguments: a JSON array or object.")] = None,
) -> CallResult:
    """Call a reducer: one transaction, committed when it returns. A failed call is 422
    (``reducer_failed`` with the reducer's message, ``reducer_error``, ``reducer_timeout``,
    ``reducer_crashed``)."""
    return await _modules(svc).call(who, f"{owner}/{name}", reducer, [] if args is None else args)


@anonymous_allowed
async def call_fast(request: Request) -> Response:
    """``call`` as a plain Starlette endpoint: the same checks, errors and answer without
    FastAPI's per-request dependency solving and response-model validation (a third of
    the server's CPU per call). Errors go through the app's handlers like any route's."""
    who = await principal(request)
    args = await json_body(request)
    params = request.path_params
    full_name = f"{params['owner']}/{params['name']}"
    result = await _modules(services(request)).call(
        who, full_name, params["reducer"], [] if args is None else args
    )
    return Response(result.model_dump_json(by_alias=True), media_type="application/json")


call_route = NamedRoute("/v1/databases/{owner}/{name}/call/{reducer}", call_fast, methods=["POST"])


@router.post("/module", response_model=PublishResult, status_code=201)
async def publish(
    owner: str, name: str, body: ModulePublish, svc: Svc, who: Caller
) -> PublishResult:
    """Publish a new version of the database's module (``dry_run``: only plan it)."""
    return await _modules(svc).publish(who, f"{owner}/{name}", body)


@router.get("/module")
@anonymous_allowed
async def module_schema(owner: str, name: str, svc: Svc, who: Caller) -> dict[str, Any]:
    """The running version and its definition (tables, reducers, records)."""
    return await _modules(svc).schema(who, f"{owner}/{name}")


@router.get("/module/versions", response_model=list[ModuleVersion])
async def versions(owner: str, name: str, svc: Svc, who: Caller) -> list[ModuleVersion]:
    return await _modules(svc).versions(who, f"{owner}/{name}")


Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="A published version.")]


@router.get("/module/versions/{version}", response_model=ModuleVersionDetail)
async def version(
    owner: str, name: str, version: Version, svc: Svc, who: Caller
) -> ModuleVersionDetail:
    return await _modules(svc).version(who, f"{owner}/{name}", version)


@router.post("/module/rollback", response_model=PublishResult, status_code=201)
async def rollback(
    owner: str, name: str, body: ModuleRollback, svc: Svc, who: Caller
) -> PublishResult:
    """Publish an earlier version's files again, as a new version."""
    return await _modules(svc).rollback(who, f"{owner}/{name}", body)


@router.get("/module/logs", response_model=list[LogLine])
async def logs(
    owner: str,
    name: str,
    svc: Svc,
    who: Caller,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Only lines with a larger id.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last: Annotated[
        int | None,
        Query(ge=1, le=1000, description="Only the newest `last` lines (still oldest first)."),
    ] = None,
) -> list[LogLine]:
    """The module's log lines, oldest first: a page after ``after``, or the newest ``last``."""
    return await _modules(svc).logs(who, f"{owner}/{name}", after, limit, last)


@router.get("/module/settings", response_model=ModuleSettings)
async def module_settings(owner: str, name: str, svc: Svc, who: Caller) -> ModuleSettings:
    """The module's settings (owner and admins)."""
    return await _modules(svc).identities.settings_of(who, f"{owner}/{name}")


@router.patch("/module/settings", response_model=ModuleSettings)
async def update_module_settings(
    owner: str, name: str, body: ModuleSettingsUpdate, svc: Svc, who: Caller
) -> ModuleSettings:
    """Change the module's settings: ``anonymous_access`` off refuses every anonymous
    identity's token at once and closes their sockets."""
    identities = _modules(svc).identities
    return await identities.update_settings(who, f"{owner}/{name}", body.anonymous_access)


@router.post("/identities", response_model=IdentityCreated, status_code=201)
async def create_identity(owner: str, name: str, svc: Svc) -> IdentityCreated:
    """A new anonymous identity and its token (no API key needed): for public databases
    with a module whose owner has not turned anonymous access off."""
    return await _modules(svc).identities.create(f"{owner}/{name}")


@router.get("/identities", response_model=list[AnonymousIdentity])
async def list_identities(
    owner: str,
    name: str,
    svc: Svc,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    revoked: Annotated[bool, Query(description="Include revoked identities.")] = False,
) -> list[AnonymousIdentity]:
    """The database's anonymous identities, newest first (owner and admins)."""
    return await _modules(svc).identities.list(who, f"{owner}/{name}", limit, revoked)


@router.delete("/identities/{identity}", status_code=204)
async def revoke_identity(owner: str, name: str, identity: str, svc: Svc, who: Caller) -> Response:
    """Revoke an anonymous identity: its token is refused and its sockets are closed, on
    every replica (owner and admins)."""
    await _modules(svc).identities.revoke(who, f"{owner}/{name}", identity)
    return Response(status_code=204)


@router.get("/module/issuers", response_model=list[TokenIssuer])
async def list_issuers(owner: str, name: str, svc: Svc, who: Caller) -> list[TokenIssuer]:
    """The login providers whose tokens the module accepts (owner and admins)."""
    return await _modules(svc).issuers.configured(who, f"{owner}/{name}")


@router.put("/module/issuers", response_model=TokenIssuer)
async def put_issuer(
    owner: str, name: str, body: TokenIssuerPut, svc: Svc, who: Caller
) -> TokenIssuer:
    """Trust a login provider's tokens (or change how): its end users become identities
    ``sha256(issuer, subject)`` with the token's claims as ``ctx.sender_auth``."""
    return await _modules(svc).issuers.put(who, f"{owner}/{name}", body)


@router.delete("/module/issuers", status_code=204)
async def remove_issuer(
    owner: str,
    name: str,
    svc: Svc,
    who: Caller,
    issuer: Annotated[str, Query(min_length=1, max_length=1000, description="Its ``iss``.")],
) -> Response:
    """Stop trusting a login provider: its tokens are refused and their sockets closed."""
    await _modules(svc).issuers.remove(who, f"{owner}/{name}", issuer)
    return Response(status_code=204)


@router.get("/connections", response_model=list[Connection])
async def connections(owner: str, name: str, svc: Svc, who: Caller) -> list[Connection]:
    """Who is connected: the open realtime connections of a module with lifecycle
    reducers, oldest first (owner and admins)."""
    return await _modules(svc).lifecycle.connections(who, f"{owner}/{name}")


@router.get("/schedules", response_model=list[Schedule])
async def schedules(
    owner: str,
    name: str,
    svc: Svc,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[Schedule]:
    """The scheduled reducer runs of the database's schedule tables: one-shot and recurring,
    soonest first, failed ones last (owner and admins)."""
    return await _modules(svc).scheduler.schedules(who, f"{owner}/{name}", limit)
