"""Imports and exports in the console: upload a file to a database (a preview first:
its format, dialect, header, the inferred column types — which can be changed — and
its first rows), export a query's or a table's rows, and follow a job until it is done
(its page refreshes itself while the job runs; an export's is where its file is
downloaded). All of it is the transfer service's, as ``/v1/imports`` and
``/v1/exports`` are.

An upload is read by the transfer service as it streams (the file never passes through
a parsed form here), so the form's CSRF token is checked by the hook the service calls
with the form's fields before the file arrives (the token field comes first)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models.transfer import ExportCreate
from ..errors import ServiceError
from ..transfer import jobs
from ..transfer.service import TransferService
from .databases import database_url
from .pages import (
    Console,
    form_session,
    platform_page,
    redirect,
    refuse_cross_site,
    same,
    session_of,
    to_login,
    validated,
)

router = APIRouter(include_in_schema=False)

TYPE_FIELD = "type:"
"""Form fields ``type:<column>``: the column's SQL type, as the user left it."""
RUNNING = ("RECEIVED", "PROCESSING")


def _service(console: Console) -> TransferService:
    service = console.svc.transfer
    if service is None:  # pragma: no cover - started by the lifespan
        raise ServiceError(503, "unavailable", "import and export jobs are not running")
    return service


def _base(console: Console) -> str:
    return str(console.request.base_url).rstrip("/")


def job_url(kind: str, job_id: str) -> str:
    return f"/console/jobs/{kind}/{job_id}"


def _screen(console: Console, full_name: str) -> Any:
    """The upload form's fields checked (its token) and made into the service's: the
    database from the page's path, the types the user left into ``column_types``."""

    def screen(fields: dict[str, str]) -> dict[str, str]:
        if not same(fields.get("csrf", ""), console.csrf):
            raise ServiceError(403, "csrf_failed", "the form's token is missing or wrong: reload")
        kept = {k: v for k, v in fields.items() if k != "csrf" and not k.startswith(TYPE_FIELD)}
        types = {
            k.removeprefix(TYPE_FIELD): v.strip()
            for k, v in fields.items()
            if k.startswith(TYPE_FIELD) and v.strip()
        }
        if types:
            kept["column_types"] = json.dumps(types)
        kept["db_name"] = full_name
        return kept

    return screen


async def _import_page(
    console: Console,
    full_name: str,
    status: int = 200,
    flash: str | None = None,
    preview: Any = None,
    template: str = "import.html",
) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    return console.render(
        template,
        status,
        title=f"Import · {db.full_name}",
        section="databases",
        db=db,
        url=database_url(db.full_name),
        preview=preview,
        type_field=TYPE_FIELD,
        fragment=template.startswith("_"),
        flash=flash,
    )


@router.get("/databases/{owner}/{name}/import", response_class=HTMLResponse)
async def import_page(request: Request, owner: str, name: str) -> Response:
    return await platform_page(
        request, "Import", "databases", lambda console: _import_page(console, f"{owner}/{name}")
    )


async def _upload_session(request: Request) -> Console | None:
    """The session of a same-site upload (its token is checked as the body streams)."""
    refuse_cross_site(request)
    console = await session_of(request)
    if console is not None:
        console.require_platform()
    return console


@router.post("/databases/{owner}/{name}/import/preview", response_class=HTMLResponse)
async def preview_import(request: Request, owner: str, name: str) -> Response:
    """The preview: a fragment for the page's script (``?fragment=1``: the file stays
    chosen in the form), else the whole page (choose the file again to import it)."""
    console = await _upload_session(request)
    if console is None:
        return to_login(request)
    full_name = f"{owner}/{name}"
    fragment = request.query_params.get("fragment") == "1"
    template = "_preview.html" if fragment else "import.html"
    try:
        preview = await _service(console).preview(
            console.who,
            body=request.stream(),
            content_type=request.headers.get("content-type", ""),
            form_fields=_screen(console, full_name),
        )
    except ServiceError as exc:
        if exc.code in ("csrf_failed", "database_not_found"):
            raise
        flash = f"{exc.message} ({exc.code})"
        return await _import_page(console, full_name, exc.status, flash, template=template)
    return await _import_page(console, full_name, preview=preview, template=template)


@router.post("/databases/{owner}/{name}/import")
async def create_import(request: Request, owner: str, name: str) -> Response:
    console = await _upload_session(request)
    if console is None:
        return to_login(request)
    full_name = f"{owner}/{name}"
    try:
        job = await _service(console).create_import(
            console.who,
            body=request.stream(),
            content_type=request.headers.get("content-type", ""),
            base_url=_base(console),
            form_fields=_screen(console, full_name),
        )
    except ServiceError as exc:
        if exc.code in ("csrf_failed", "database_not_found"):
            raise
        return await _import_page(console, full_name, exc.status, f"{exc.message} ({exc.code})")
    await console.notify(f"Importing {job.file_name or 'the file'} into {job.table_name}.")
    return redirect(job_url("import", job.id))


@router.post("/databases/{owner}/{name}/export")
async def create_export(request: Request, owner: str, name: str) -> Response:
    """An export of the SQL editor's query or of a table (the form's ``sql``, or its
    ``schema`` and ``table``), in the form's ``export_format``."""
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    try:
        console.require_platform()
        body = validated(
            ExportCreate,
            db_name=f"{owner}/{name}",
            export_format=form.get("export_format", "csv"),
            **_what(form),
        )
        job = await _service(console).create_export(console.who, body, _base(console))
    except ServiceError as exc:
        return console.error(exc, "Export", section="databases")
    await console.notify(f"Exporting to {job.file_name}.")
    return redirect(job_url("export", job.id))


def _what(form: dict[str, str]) -> dict[str, str]:
    if form.get("sql", "").strip():
        return {"query_string": form["sql"]}
    what = {"table_name": form.get("table", "")}
    if form.get("schema"):
        what["schema_name"] = form["schema"]
    return what


# -- jobs ------------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request) -> Response:
    return await platform_page(request, "Jobs", "jobs", _jobs)


async def _jobs(console: Console) -> HTMLResponse:
    service, base = _service(console), _base(console)
    page = jobs.JobPage(limit=50)
    return console.render(
        "jobs.html",
        title="Imports and exports",
        section="jobs",
        imports=await service.list_jobs(console.who, "import", page, base),
        exports=await service.list_jobs(console.who, "export", page, base),
        flash=await console.notice(),
        flash_kind="ok",
    )


@router.get("/jobs/{kind}/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, kind: str, job_id: str) -> Response:
    return await platform_page(request, "Job", "jobs", lambda console: _job(console, kind, job_id))


async def _job(console: Console, kind: str, job_id: str) -> HTMLResponse:
    service, base = _service(console), _base(console)
    if kind == "import":
        job: Any = await service.get_import(console.who, job_id, base)
    elif kind == "export":
        job = await service.get_export(console.who, job_id, base)
    else:
        raise ServiceError(404, "job_not_found", f"no {kind} jobs")
    return console.render(
        "job.html",
        title=f"{kind.capitalize()} {job.id}",
        section="jobs",
        kind=kind,
        job=job,
        running=job.state in RUNNING,
        database=database_url(job.db_name),
        flash=await console.notice(),
        flash_kind="ok",
    )
