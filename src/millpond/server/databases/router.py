"""Routes for /v1/databases (thin: see service.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ...models import Collaborator, CollaboratorSet, Database, DatabaseCreate, DatabaseUpdate
from ..deps import Caller, Svc

router = APIRouter(prefix="/v1/databases")


@router.post("", response_model=Database, status_code=201)
async def create_database(body: DatabaseCreate, svc: Svc, who: Caller) -> Database:
    return await svc.databases.create(who, body)


@router.get("", response_model=list[Database])
async def list_databases(svc: Svc, who: Caller) -> list[Database]:
    return await svc.databases.list(who)


@router.get("/{owner}/{name}", response_model=Database)
async def get_database(owner: str, name: str, svc: Svc, who: Caller) -> Database:
    return await svc.databases.get(who, f"{owner}/{name}")


@router.patch("/{owner}/{name}", response_model=Database)
async def update_database(
    owner: str, name: str, body: DatabaseUpdate, svc: Svc, who: Caller
) -> Database:
    return await svc.databases.update(who, f"{owner}/{name}", body)


@router.delete("/{owner}/{name}", status_code=204)
async def delete_database(owner: str, name: str, svc: Svc, who: Caller) -> Response:
    await svc.databases.delete(who, f"{owner}/{name}")
    return Response(status_code=204)


@router.get("/{owner}/{name}/collaborators", response_model=list[Collaborator])
async def list_collaborators(owner: str, name: str, svc: Svc, who: Caller) -> list[Collaborator]:
    return await svc.databases.collaborators(who, f"{owner}/{name}")


@router.put("/{owner}/{name}/collaborators/{username}", response_model=Collaborator)
async def set_collaborator(
    owner: str, name: str, username: str, body: CollaboratorSet, svc: Svc, who: Caller
) -> Collaborator:
    return await svc.databases.set_collaborator(who, f"{owner}/{name}", username, body)


@router.delete("/{owner}/{name}/collaborators/{username}", status_code=204)
async def remove_collaborator(
    owner: str, name: str, username: str, svc: Svc, who: Caller
) -> Response:
    await svc.databases.remove_collaborator(who, f"{owner}/{name}", username)
    return Response(status_code=204)
