"""What the sync and async ``mp.imports`` and ``mp.exports`` share (no network here):
upload form fields, job filters, and where a streamed export is written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO

import httpx

from ..errors import MillpondError
from ..models.transfer import ExportCreate, ExportFormat, ExportJob, ImportJob, ImportOptions
from ._base import body, split_database

FileInput = str | os.PathLike[str] | IO[bytes]
"""A path, or a binary file object open for reading."""

_FILENAME = re.compile(r'filename="([^"]+)"')


def form(options: ImportOptions) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in body(options).items():
        fields[name] = json.dumps(value) if isinstance(value, dict) else str(value)
    return fields


def file_name_of(file: FileInput) -> str:
    if isinstance(file, str | os.PathLike):
        return os.path.basename(os.fspath(file))
    name = getattr(file, "name", None)
    return os.path.basename(name) if isinstance(name, str) else "upload"


def failure(kind: str, job: ImportJob | ExportJob) -> MillpondError:
    details = job.error_details or {}
    message = details.get("message") or "no details"
    return MillpondError(f"{kind} {job.id} failed: {job.error_type}: {message}")


def stream_target(path: str | os.PathLike[str], response: httpx.Response) -> tuple[Path, str]:
    """Where to write a streamed export (a directory: the server's file name in it), and
    that name."""
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = os.path.basename(found.group(1)) if found else ""
    name = name if name not in ("", ".", "..") else "export.csv"
    target = Path(path)
    return (target / name if target.is_dir() else target), name


def job_filter(
    database: str | None, state: str | None, limit: int | None = None, before: str | None = None
) -> dict[str, str]:
    params = {} if limit is None else {"limit": str(limit)}
    if database is not None:
        split_database(database)
        params["database"] = database
    if state is not None:
        params["state"] = state
    if before is not None:
        params["before"] = before
    return params


def job_id_of(job: ImportJob | ExportJob) -> str:
    return job.id


def export_request(
    db: str,
    query_string: str | None,
    table_name: str | None,
    schema_name: str | None,
    file_name: str | None,
    export_format: ExportFormat,
) -> ExportCreate:
    """What an export job and a streamed export send: ``query_string`` or ``table_name``
    (one of them) of ``"owner/name"``."""
    split_database(db)
    if (query_string is None) == (table_name is None):
        raise ValueError("give query_string or table_name (one of them)")
    return ExportCreate.model_construct(
        db_name=db,
        query_string=query_string,
        table_name=table_name,
        schema_name=schema_name,
        file_name=file_name,
        export_format=export_format,
    )
