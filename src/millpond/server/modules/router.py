"""Routes for modules (thin: see service.py): publish, versions, rollback, schema, logs,
and reducer calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from ...models.modules import (
    CallResult,
    LogLine,
    ModulePublish,
    ModuleRollback,
    ModuleVersion,
    ModuleVersionDetail,
    PublishResult,
)
from ..deps import Caller, Svc
from .service import ModuleService

router = APIRouter(prefix="/v1/databases/{owner}/{name}")


def _modules(svc: Svc) -> ModuleService:
    service = svc.extra["modules"]
    assert isinstance(service, ModuleService)
    return service


@router.post("/module", response_model=PublishResult, status_code=201)
async def publish(
    owner: str, name: str, body: ModulePublish, svc: Svc, who: Caller
) -> PublishResult:
    """Publish a new version of the database's module (``dry_run``: only plan it)."""
    return await _modules(svc).publish(who, f"{owner}/{name}", body)


@router.get("/module")
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
) -> list[LogLine]:
    return await _modules(svc).logs(who, f"{owner}/{name}", after, limit)


@router.post("/call/{reducer}", response_model=CallResult, response_model_by_alias=True)
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
