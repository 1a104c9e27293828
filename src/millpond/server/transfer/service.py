"""Import and export jobs: the API's operations (each job's run: ``running.py``).

An accepted job is a row in the control database (and, for an upload, a file fsynced
under ``<data_dir>/transfer/jobs/<id>/``) before the client hears 202: a crash after
that leaves a job some replica runs or reports FAILED (see ``worker``).

Access: importing needs write access to the database, previewing and exporting read
access; both are checked again when the job runs, as the caller's Postgres role, so
privileges apply. A job is visible to the user who created it (and to server admins).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from ...models.transfer import (
    CsvDialect,
    ExportCreate,
    ExportJob,
    ImportColumn,
    ImportJob,
    ImportOptions,
    ImportPreview,
    PreviewTable,
)
from ..accounts.service import Principal
from ..budget import check_count
from ..clusters.registry import Clusters
from ..config import Settings
from ..databases.service import Access, resolve
from ..errors import ServiceError, invalid, not_found
from ..store import Store
from . import exporter, fetch, infer, jobs, names, signing, sniff, sources, upload
from .errors import JobError
from .loader import target_names
from .progress import Progress
from .running import JobRunner, strip_gz
from .worker import TransferWorker

_log = logging.getLogger("millpond.transfer")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

FormFields = Callable[[dict[str, str]], dict[str, str]]
"""A caller's own check of an upload form's fields (the console's CSRF token): called
with the fields as they arrive (before the file, when they come first, so a refused form
stops before the upload) and again once the body is read; it raises to refuse the form
and returns the fields to import with, its own removed."""


def _node_id(root: Path) -> str:
    """This data directory's id (jobs whose files are here run here)."""
    path = root / "node-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        node = "node_" + secrets.token_hex(6)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(node + "\n")
        os.replace(tmp, path)
        return node


_STALE_PREVIEW_S = 6 * 3600.0
"""A preview's folder lives for its one request; one untouched this long was left by a
process that died. (With shared storage the folder is every replica's: a replica that
starts must not remove the previews others are making.)"""


def _remove_stale_previews(root: Path, now: float) -> None:
    for folder in root.iterdir():
        try:
            touched = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
        except OSError:  # its request ended meanwhile
            continue
        if now - touched > _STALE_PREVIEW_S:
            shutil.rmtree(folder, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return json.loads(json.dumps(value, default=str))


class TransferService:
    def __init__(self, store: Store, clusters: Clusters, secret: bytes, settings: Settings) -> None:
        self.store = store
        self.clusters = clusters
        self.cluster = clusters.home
        self.secret = secret
        self.settings = settings
        self.root = (settings.data_dir / "transfer").resolve()
        self.jobs_root = self.root / "jobs"
        self.preview_root = self.root / "preview"
        for path in (self.root, self.jobs_root, self.preview_root):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.node_id = _node_id(self.root)
        self.worker = TransferWorker(self)
        self.runner = JobRunner(self)

    @property
    def store_conninfo(self) -> str:
        return self.cluster.control_conninfo

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_root / job_id

    async def start(self) -> None:
        await asyncio.to_thread(
            _remove_stale_previews, self.preview_root, datetime.now(UTC).timestamp()
        )
        await self.worker.start()

    async def close(self) -> None:
        await self.worker.stop()

    # -- validation --------------------------------------------------------------------------

    def _import_options(self, fields: dict[str, str]) -> ImportOptions:
        data: dict[str, Any] = {k: v for k, v in fields.items() if v != ""}
        if "column_types" in data:
            try:
                data["column_types"] = json.loads(data["column_types"])
            except ValueError as exc:
                raise invalid(
                    "validation_error",
                    'column_types: must be a JSON object, like {"price": "numeric"}',
                ) from exc
        try:
            return ImportOptions.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    def _import_params(self, opts: ImportOptions) -> dict[str, Any]:
        for what, value in (("table_name", opts.table_name), ("schema_name", opts.schema_name)):
            why = names.check_identifier(value, what) if value is not None else None
            if why:
                raise invalid("invalid_name", why, {"field": what})
        column_types: dict[str, str] = {}
        for column, spelling in (opts.column_types or {}).items():
            sql_type = infer.canonical_type(spelling)
            if sql_type is None:
                raise invalid(
                    "invalid_column_type",
                    f"column_types: {spelling!r} (for {column!r}) is not a type imports accept",
                    {"column": column, "type": spelling, "accepted": infer.accepted_types()},
                )
            column_types[column] = sql_type
        if opts.encoding:
            try:
                sniff.codec_name(opts.encoding)
            except LookupError as exc:
                raise invalid(
                    "invalid_encoding", f"unknown encoding {opts.encoding!r}", {"field": "encoding"}
                ) from exc
        for what, char in (("delimiter", opts.delimiter), ("quote", opts.quote)):
            if char is not None and char in "\r\n":
                raise invalid("validation_error", f"{what}: must not be a line break")
        if opts.file_url is not None:
            why = fetch.check_url(opts.file_url)
            if why:
                raise invalid("invalid_url", f"file_url: {why}", {"field": "file_url"})
            if not self.settings.transfer_allow_private_urls and fetch.literal_refused(
                opts.file_url
            ):
                raise invalid(
                    "url_not_allowed",
                    "file_url points at a loopback, link-local or private address; such URLs"
                    " are refused unless the server allows them"
                    " (MILLPOND_TRANSFER_ALLOW_PRIVATE_URLS)",
                    {"field": "file_url"},
                )
        params = opts.model_dump(exclude_none=True)
        params["column_types"] = column_types
        return params

    # -- imports -----------------------------------------------------------------------------

    async def create_import(
        self,
        principal: Principal,
        *,
        body: AsyncIterator[bytes] | None = None,
        content_type: str = "",
        options: ImportOptions | None = None,
        base_url: str = "",
        db_name: str | None = None,
        form_fields: FormFields | None = None,
    ) -> ImportJob:
        """An import of an uploaded file (``body``, multipart) or of ``options.file_url``.
        ``db_name``: the database, when the form does not name it (bit.io's has it in
        its path). ``form_fields``: see :data:`FormFields`."""
        job_id = jobs.new_id("import")
        folder = self.job_dir(job_id)
        async with self.store.transaction() as conn:  # refuse before receiving the file
            await self._check_job_limit(conn, principal)
        try:
            file_path: Path | None = None
            file_name: str | None = None
            size: int | None = None
            if body is not None:
                folder.mkdir(mode=0o700)
                received = await self._receive(
                    body, content_type, folder / "upload", "write", principal, db_name, form_fields
                )
                fields = received.fields
                options = self._import_options(
                    {**fields, "db_name": db_name} if db_name else fields
                )
                if received.path is not None:
                    file_path, size = received.path, received.size
                    file_name = options.file_name or received.file_name
            if options is None:  # pragma: no cover - the router always gives one
                raise invalid("validation_error", "no import options")
            if file_path is None and options.file_url is None:
                raise invalid(
                    "missing_file", "give the file to import (a 'file' part) or a file_url"
                )
            if file_path is not None and options.file_url is not None:
                raise invalid("validation_error", "give a file or a file_url, not both")
            params = self._import_params(options)
            access = await resolve(self.store, principal, options.db_name, need="write")
            if file_name is None and options.file_url is not None:
                file_name = options.file_name or _url_name(options.file_url)
            await self._insert(
                job_id,
                "import",
                principal,
                access,
                params,
                file_path=file_path,
                file_name=file_name,
                bytes_total=size,
                node_id=self.node_id if file_path is not None else None,
            )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        self.worker.wake()
        return await self.get_import(principal, job_id, base_url)

    async def _receive(
        self,
        body: AsyncIterator[bytes],
        content_type: str,
        dest: Path,
        need: str,
        principal: Principal,
        db_name: str | None = None,
        form_fields: FormFields | None = None,
    ) -> upload.Upload:
        screen = form_fields or dict

        async def before_file(fields: dict[str, str]) -> None:
            fields = screen(fields)
            db = db_name or fields.get("db_name") or fields.get("database")
            if db:  # refuse before the upload when the database says no
                await resolve(self.store, principal, db, need=need)  # type: ignore[arg-type]

        received = await upload.receive(
            body,
            content_type,
            dest,
            max_bytes=self.settings.transfer_max_file_bytes,
            before_file=before_file,
        )
        received.fields = screen(received.fields)  # (again: the file may have come first)
        return received

    async def _insert(
        self,
        job_id: str,
        kind: str,
        principal: Principal,
        access: Access,
        params: dict[str, Any],
        *,
        file_path: Path | None = None,
        file_name: str | None = None,
        bytes_total: int | None = None,
        node_id: str | None = None,
    ) -> None:
        async with self.store.transaction() as conn:
            await self._check_job_limit(conn, principal)
            await conn.execute(
                "INSERT INTO transfer_jobs (id, kind, user_id, key_scope, service_account_id,"
                " database_id, params, node_id, file_path, file_name, bytes_total)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    job_id,
                    kind,
                    principal.user_id,
                    principal.scope,
                    principal.service_account_id,
                    access.id,
                    Jsonb(params),
                    node_id,
                    str(file_path) if file_path else None,
                    file_name,
                    bytes_total,
                ),
            )

    async def _check_job_limit(self, conn: Any, principal: Principal) -> None:
        """``account_max_running_jobs``: the user's queued and running jobs, whichever of
        its keys (its service accounts' included) made them."""
        if principal.is_admin and self.settings.account_limits_exempt_admins:
            return
        await check_count(
            conn,
            "account_max_running_jobs",
            "queued or running import/export jobs",
            self.settings.account_max_running_jobs,
            "SELECT count(*) FROM transfer_jobs WHERE user_id = %s"
            " AND state IN ('RECEIVED', 'PROCESSING')",
            principal.user_id,
        )

    async def _job_row(self, principal: Principal, job_id: str, kind: str) -> DictRow:
        row = None
        if job_id.isascii() and "\x00" not in job_id:
            row = await self.store.fetchone(
                jobs.JOB_SELECT + " WHERE j.id = %s AND j.kind = %s", (job_id, kind)
            )
        if row is None or (row["user_id"] != principal.user_id and not principal.is_admin):
            raise not_found(f"{kind}_not_found", f"no {kind} job {job_id!r} of yours")
        return row

    async def get_import(self, principal: Principal, job_id: str, base_url: str = "") -> ImportJob:
        return jobs.import_job(await self._job_row(principal, job_id, "import"), base_url)

    async def list_jobs(
        self,
        principal: Principal,
        kind: str,
        page: jobs.JobPage,
        base_url: str = "",
    ) -> list[Any]:
        """The caller's jobs of ``kind``, newest first (``page.before``: older than that
        job), optionally of one database or state. Jobs are kept
        ``transfer_job_retention_days`` after they finish."""
        where = ["j.kind = %(kind)s", "j.user_id = %(user)s"]
        params: dict[str, Any] = {"kind": kind, "user": principal.user_id, "limit": page.limit}
        if page.state is not None:
            where.append("j.state = %(state)s")
            params["state"] = page.state
        if page.database is not None:
            owner, _, name = page.database.partition("/")
            where.append("lower(u.username) = lower(%(owner)s) AND lower(d.name) = lower(%(db)s)")
            params.update(owner=owner, db=name)
        if page.before is not None:
            where.append(
                "(j.created_at, j.id) < (SELECT created_at, id FROM transfer_jobs"
                " WHERE id = %(before)s AND user_id = %(user)s)"
            )
            params["before"] = page.before
        rows = await self.store.fetchall(
            jobs.JOB_SELECT
            + " WHERE "
            + " AND ".join(where)
            + " ORDER BY j.created_at DESC, j.id DESC LIMIT %(limit)s",
            params,
        )
        if kind == "import":
            return [jobs.import_job(row, base_url) for row in rows]
        return [self._export_model(row, base_url) for row in rows]

    # -- previews ----------------------------------------------------------------------------

    async def preview(
        self,
        principal: Principal,
        *,
        body: AsyncIterator[bytes] | None = None,
        content_type: str = "",
        options: ImportOptions | None = None,
        form_fields: FormFields | None = None,
    ) -> ImportPreview:
        """What importing the file would do (format, dialect, header, columns and types,
        first rows) without loading anything."""
        folder = self.preview_root / secrets.token_hex(8)
        folder.mkdir(mode=0o700)
        try:
            path: Path | None = None
            file_name: str | None = None
            if body is not None:
                received = await self._receive(
                    body, content_type, folder / "upload", "read", principal, None, form_fields
                )
                options = self._import_options(received.fields)
                path = received.path
                file_name = options.file_name or received.file_name
            if options is None:  # pragma: no cover - the router always gives one
                raise invalid("validation_error", "no import options")
            params = self._import_params(options)
            await resolve(self.store, principal, options.db_name, need="read")
            if path is None:
                if options.file_url is None:
                    raise invalid(
                        "missing_file", "give the file to preview (a 'file' part) or a file_url"
                    )
                path = folder / "download"
                fetched = await self.download_source(options.file_url, path, Progress())
                file_name = options.file_name or fetched
            assert path is not None
            return await asyncio.to_thread(self._preview, path, folder, file_name, params)
        except JobError as exc:
            raise ServiceError(400, exc.error_type, exc.message, exc.details) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def _preview(
        self, path: Path, folder: Path, file_name: str | None, params: dict[str, Any]
    ) -> ImportPreview:
        size = path.stat().st_size
        compression = None
        if sources.is_gzip(path):
            compression = "gzip"
            data = folder / "data"
            sources.decompress(path, data, self.settings.transfer_max_file_bytes, Progress())
            path = data
        plan = sources.plan(path, strip_gz(file_name), self.source_options(params))
        targets = target_names(plan, params["table_name"])
        dialect = None
        if plan.csv is not None:
            d = plan.csv.dialect
            dialect = CsvDialect(
                encoding=plan.csv.encoding,
                delimiter=d.delimiter,
                quote=d.quote,
                escape=d.escape,
                line_terminator=d.line_terminator,
                postgres_reads_directly=plan.tables[0].fast is not None,
            )
        return ImportPreview(
            file_format=plan.file_format,
            compression=compression,
            file_name=file_name,
            size_bytes=size,
            dialect=dialect,
            tables=[
                PreviewTable(
                    table_name=target,
                    source_name=t.source_name,
                    header=t.header,
                    columns=[
                        ImportColumn(name=c.name, source=c.source, type=c.type) for c in t.columns
                    ],
                    sample=[[_jsonable(v) for v in row] for row in t.sample],
                )
                for t, target in zip(plan.tables, targets, strict=True)
            ],
        )

    def source_options(self, params: dict[str, Any]) -> sources.Options:
        return sources.Options(
            header=params.get("infer_header", "auto"),
            file_format=params.get("file_format"),
            encoding=params.get("encoding"),
            delimiter=params.get("delimiter"),
            quote=params.get("quote"),
            sheet=params.get("sheet_name"),
            column_types=dict(params.get("column_types") or {}),
            max_value_bytes=self.settings.transfer_max_value_bytes,
        )

    async def download_source(self, url: str, dest: Path, progress: Progress) -> str | None:
        return await asyncio.to_thread(
            fetch.download,
            url,
            dest,
            max_bytes=self.settings.transfer_max_file_bytes,
            timeout_s=self.settings.transfer_url_timeout_s,
            allow_private=self.settings.transfer_allow_private_urls,
            progress=progress,
        )

    # -- exports -----------------------------------------------------------------------------

    async def create_export(
        self, principal: Principal, body: ExportCreate, base_url: str = ""
    ) -> ExportJob:
        file_name = export_file_name(body)
        access = await resolve(self.store, principal, body.db_name, need="read")
        job_id = jobs.new_id("export")
        params = body.model_dump(exclude_none=True)
        await self._insert(job_id, "export", principal, access, params, file_name=file_name)
        self.worker.wake()
        return await self.get_export(principal, job_id, base_url)

    async def get_export(self, principal: Principal, job_id: str, base_url: str = "") -> ExportJob:
        return self._export_model(await self._job_row(principal, job_id, "export"), base_url)

    def _export_model(self, row: DictRow, base_url: str) -> ExportJob:
        """The export with its signed download link while its file lives."""
        job_id = row["id"]
        link = None
        expires_at = row["expires_at"]
        live = expires_at is not None and expires_at > datetime.now(UTC)
        if row["state"] == "DONE" and row["file_path"] and live:
            expires = int(expires_at.timestamp())
            signature = signing.sign(self.secret, job_id, expires)
            link = (
                f"{base_url}/v1/exports/{job_id}/download?expires={expires}&signature={signature}"
            )
        return jobs.export_job(row, base_url, link)

    async def download(self, job_id: str, expires: int, signature: str) -> tuple[Path, str, str]:
        """The file behind a signed link: (path, file name, content type)."""
        verdict = signing.verify(self.secret, job_id, expires, signature)
        if verdict == "invalid":
            raise ServiceError(403, "invalid_signature", "this download link is not valid")
        if verdict == "expired":
            raise ServiceError(410, "export_expired", "this download link has expired")
        row = await self.store.fetchone(
            "SELECT state, file_path, file_name, node_id, params, expires_at < now() AS expired"
            " FROM transfer_jobs WHERE id = %s AND kind = 'export'",
            (job_id,),
        )
        if row is None or row["state"] != "DONE":
            raise not_found("export_not_found", f"no finished export {job_id!r}")
        if not row["file_path"] or row["expired"]:
            raise ServiceError(410, "export_expired", "the exported file has expired")
        path = Path(row["file_path"])
        if not await asyncio.to_thread(path.is_file):
            if row["node_id"] != self.node_id and not self.settings.transfer_shared_storage:
                raise ServiceError(
                    503,
                    "export_unavailable",
                    "the file is on another replica's disk; share <data_dir>/transfer between"
                    " replicas (MILLPOND_TRANSFER_SHARED_STORAGE)",
                )
            raise ServiceError(410, "export_expired", "the exported file is gone")
        fmt = row["params"]["export_format"]
        return path, row["file_name"], exporter.CONTENT_TYPES[fmt]


def export_file_name(body: ExportCreate) -> str:
    """The file name of the export ``body`` asks for, once its fields are checked (a
    query or a table, valid identifiers): 422 otherwise."""
    if (body.query_string is None) == (body.table_name is None):
        raise invalid("validation_error", "give query_string or table_name (one of them)")
    if body.schema_name is not None and body.table_name is None:
        raise invalid("validation_error", "schema_name goes with table_name")
    for what, value in (("table_name", body.table_name), ("schema_name", body.schema_name)):
        why = names.check_identifier(value, what) if value is not None else None
        if why:
            raise invalid("invalid_name", why, {"field": what})
    ext = exporter.EXTENSIONS[body.export_format]
    stem = body.file_name or body.table_name or "export"
    stem = _SAFE_NAME.sub("_", os.path.basename(stem)).strip("._") or "export"
    return stem if stem.lower().endswith("." + ext) else f"{stem}.{ext}"


def _url_name(url: str) -> str | None:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return name or None


def validation_error(exc: ValidationError) -> ServiceError:
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return ServiceError(422, "validation_error", message, details)
