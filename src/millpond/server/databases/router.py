"""Routes for /v1/databases (thin: see service.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...models import Collaborator, CollaboratorSet, Database, DatabaseCreate, DatabaseUpdate
from ...models.backups import MEDIA_TYPE, DatabaseRestore
from ..deps import Caller, Svc
from .backup import Backups, BackupStream

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


# -- one database's backup and restore (backup.py) ---------------------------------------------


class _BackupResponse(StreamingResponse):
    """The backup's bytes as ``pg_dump`` writes them; ``pg_dump`` ends with the response,
    however it ends (finished, failed, or the client gone)."""

    media_type = MEDIA_TYPE

    def __init__(self, stream: BackupStream) -> None:
        disposition = f'attachment; filename="{stream.filename}"'
        super().__init__(
            stream.chunks(), media_type=MEDIA_TYPE, headers={"Content-Disposition": disposition}
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.stream.close()


@router.get("/{owner}/{name}/backup", response_class=_BackupResponse, status_code=200)
async def backup_database(owner: str, name: str, svc: Svc, who: Caller) -> _BackupResponse:
    """The database as one file: a manifest, then `pg_dump --format=custom` of it
    (docs/databases.md#backups). Needs admin access."""
    backups = Backups(svc.databases, svc.budget)
    return _BackupResponse(await backups.backup(who, f"{owner}/{name}"))


@router.post("/{owner}/{name}/restore", response_model=DatabaseRestore)
async def restore_database(
    owner: str, name: str, request: Request, svc: Svc, who: Caller
) -> DatabaseRestore:
    """Restore a backup (the request body, as `GET …/backup` wrote it) into the database,
    which must hold no objects yet. Needs admin access; all or nothing."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    backups = Backups(svc.databases, svc.budget)
    return await backups.restore(who, f"{owner}/{name}", request.stream(), disconnected)
