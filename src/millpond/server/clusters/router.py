"""Routes for /v1/clusters and moving a database between them (thin: see service.py
and move.py). Server admins only."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ...models.clusters import ClusterAdd, ClusterInfo, ClusterUpdate, DatabaseMove, DatabaseMoved
from ..deps import Caller, Svc
from .move import Mover
from .service import ClusterService

router = APIRouter()


def _clusters(svc: Svc) -> ClusterService:
    assert svc.placement is not None
    return svc.placement


def _mover(svc: Svc) -> Mover:
    assert svc.mover is not None
    return svc.mover


@router.get("/v1/clusters", response_model=list[ClusterInfo])
async def list_clusters(svc: Svc, who: Caller) -> list[ClusterInfo]:
    return await _clusters(svc).list(who)


@router.post("/v1/clusters", response_model=ClusterInfo, status_code=201)
async def add_cluster(body: ClusterAdd, svc: Svc, who: Caller) -> ClusterInfo:
    return await _clusters(svc).add(who, body)


@router.get("/v1/clusters/{name}", response_model=ClusterInfo)
async def get_cluster(name: str, svc: Svc, who: Caller) -> ClusterInfo:
    return await _clusters(svc).get(who, name)


@router.patch("/v1/clusters/{name}", response_model=ClusterInfo)
async def update_cluster(name: str, body: ClusterUpdate, svc: Svc, who: Caller) -> ClusterInfo:
    return await _clusters(svc).update(who, name, body)


@router.delete("/v1/clusters/{name}", status_code=204)
async def remove_cluster(name: str, svc: Svc, who: Caller) -> Response:
    await _clusters(svc).remove(who, name)
    return Response(status_code=204)


@router.post("/v1/databases/{owner}/{name}/move", response_model=DatabaseMoved)
async def move_database(
    owner: str, name: str, body: DatabaseMove, svc: Svc, who: Caller
) -> DatabaseMoved:
    return await _mover(svc).move(who, f"{owner}/{name}", body)
