"""Routes for /v1/imports and /v1/exports (thin: see service.py).

``POST /v1/imports`` and ``POST /v1/imports/preview`` take either a multipart form (the
options as fields, the file as the ``file`` part, streamed to disk) or a JSON body with
``file_url``. The download link of an export is signed and needs no API key.
``POST /v1/exports/stream`` answers with the CSV itself (see stream.py).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

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
from .exporter import CONTENT_TYPES
from .service import TransferService, validation_error
from .stream import CsvStream, CsvStreams, StreamBroken

router = APIRouter(prefix="/v1")

_CLIENT_GONE = 499  # "client closed request", as proxies log it


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


class CsvStreamResponse(StreamingResponse):
    """A streamed export's CSV, sent as it is read (chunked). An export that fails once
    the answer began leaves it cut short: no last chunk, the connection closed. A
    client that goes away stops the export at once; however the answer ends, the
    export's connection is closed before this returns."""

    media_type = CONTENT_TYPES["csv"]

    def __init__(self, stream: CsvStream) -> None:
        headers = {
            "Content-Disposition": f'attachment; filename="{stream.file_name}"',
            "Cache-Control": "no-store",
        }
        super().__init__(stream.blocks(), media_type=self.media_type, headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sending = asyncio.ensure_future(self._send(send))
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait({sending, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, gone):
                task.cancel()
            await asyncio.gather(sending, gone, return_exceptions=True)
            await self.stream.close()
        error = None if sending.cancelled() else sending.exception()
        if error is not None:
            raise error

    async def _send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async for block in self.body_iterator:
                await send({"type": "http.response.body", "body": block, "more_body": True})
        except StreamBroken:
            return  # returning without the last chunk: the server drops the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (or the answer is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@router.post(
    "/exports/stream",
    response_class=CsvStreamResponse,
    response_model=None,
    status_code=200,
    response_description="The CSV (its header first), chunked",
)
async def stream_export(
    body: ExportCreate, request: Request, svc: Svc, who: Caller
) -> CsvStreamResponse | Response:
    """The CSV of a query or a table as the answer itself, streamed while Postgres writes
    it (`export_format` csv only; docs/transfer.md). Errors before the first byte are
    the usual envelope; an export failing later leaves the answer cut short."""
    streams = CsvStreams(_transfer(svc), svc.budget)
    stream = await streams.open(who, body, lambda: disconnected(request.receive))
    if stream is None:  # the client left before the first byte: nobody reads this
        return Response(status_code=_CLIENT_GONE)
    return CsvStreamResponse(stream)


@router.get("/exports/{job_id}", response_model=ExportJob)
async def get_export(job_id: str, request: Request, svc: Svc, who: Caller) -> ExportJob:
    return await _transfer(svc).get_export(who, job_id, _base_url(request))


@router.get("/exports/{job_id}/download")
async def download_export(job_id: str, expires: int, signature: str, svc: Svc) -> ExportFile:
    path, name, media_type = await _transfer(svc).download(job_id, expires, signature)
    return ExportFile(path, media_type=media_type, filename=name)
