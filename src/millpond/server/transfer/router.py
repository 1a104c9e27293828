"""Routes for /v1/imports and /v1/exports (thin: see service.py).

``POST /v1/imports`` and ``POST /v1/imports/preview`` take either a multipart form (the
options as fields, the file as the ``file`` part, streamed to disk) or a JSON body with
``file_url``. The download link of an export is signed and needs no API key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError

from ...models.transfer import (
    ExportCreate,
    ExportJob,
    ImportJob,
    ImportOptions,
    ImportPreview,
    JobState,
)
from ..deps import Caller, Svc
from ..errors import ServiceError, invalid
from . import jobs
from .service import TransferService, validation_error

router = APIRouter(prefix="/v1")


class ExportFile(FileResponse):
    """An export's file, read and sent a MiB at a time (Starlette's 64 KiB chunks are a
    thread hop each: a 100 MB export took 1,500 of them)."""

    chunk_size = 1 << 20


def _transfer(svc: Svc) -> TransferService:
    service = svc.transfer
    if service is None:  # pragma: no cover - started by the lifespan
        raise ServiceError(503, "unavailable", "import and export jobs are not running")
    return service


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _options(request: Request) -> ImportOptions:
    try:
        return ImportOptions.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _unsupported() -> ServiceError:
    return invalid(
        "validation_error",
        "send multipart/form-data (fields and a 'file' part) or JSON with a file_url",
    )


@router.post("/imports", response_model=ImportJob, status_code=202)
async def create_import(request: Request, svc: Svc, who: Caller) -> ImportJob:
    service = _transfer(svc)
    base = _base_url(request)
    if _is_multipart(request):
        return await service.create_import(
            who,
            body=request.stream(),
            content_type=request.headers["content-type"],
            base_url=base,
        )
    if _is_json(request):
        return await service.create_import(who, options=await _options(request), base_url=base)
    raise _unsupported()


@router.post("/imports/preview", response_model=ImportPreview)
async def preview_import(request: Request, svc: Svc, who: Caller) -> ImportPreview:
    service = _transfer(svc)
    if _is_multipart(request):
        return await service.preview(
            who, body=request.stream(), content_type=request.headers["content-type"]
        )
    if _is_json(request):
        return await service.preview(who, options=await _options(request))
    raise _unsupported()


async def _page(
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many jobs")] = 50,
    before: Annotated[
        str | None, Query(max_length=64, description="Jobs older than this job id")
    ] = None,
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    database: Annotated[
        str | None, Query(max_length=200, description="Only jobs of this database (owner/name)")
    ] = None,
) -> jobs.JobPage:
    for value in (before, database):
        if value is not None and "\x00" in value:
            raise invalid("validation_error", "query parameters must not contain NUL characters")
    return jobs.JobPage(limit, before, state, database)


Page = Annotated[jobs.JobPage, Depends(_page)]


@router.get("/imports", response_model=list[ImportJob])
async def list_imports(page: Page, request: Request, svc: Svc, who: Caller) -> list[ImportJob]:
    """Your import jobs, newest first."""
    found: list[ImportJob] = await _transfer(svc).list_jobs(who, "import", page, _base_url(request))
    return found


@router.get("/exports", response_model=list[ExportJob])
async def list_exports(page: Page, request: Request, svc: Svc, who: Caller) -> list[ExportJob]:
    """Your export jobs, newest first (with their download links while the file lives)."""
    found: list[ExportJob] = await _transfer(svc).list_jobs(who, "export", page, _base_url(request))
    return found


@router.get("/imports/{job_id}", response_model=ImportJob)
async def get_import(job_id: str, request: Request, svc: Svc, who: Caller) -> ImportJob:
    return await _transfer(svc).get_import(who, job_id, _base_url(request))


@router.post("/exports", response_model=ExportJob, status_code=202)
async def create_export(body: ExportCreate, request: Request, svc: Svc, who: Caller) -> ExportJob:
    return await _transfer(svc).create_export(who, body, _base_url(request))


@router.get("/exports/{job_id}", response_model=ExportJob)
async def get_export(job_id: str, request: Request, svc: Svc, who: Caller) -> ExportJob:
    return await _transfer(svc).get_export(who, job_id, _base_url(request))


@router.get("/exports/{job_id}/download")
async def download_export(job_id: str, expires: int, signature: str, svc: Svc) -> ExportFile:
    path, name, media_type = await _transfer(svc).download(job_id, expires, signature)
    return ExportFile(path, media_type=media_type, filename=name)
