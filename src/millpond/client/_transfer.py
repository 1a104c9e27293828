"""What the sync and async ``mp.imports`` and ``mp.exports`` share (no network here): the
progress bar, upload form fields, job filters, and where a streamed export is written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, Any

import httpx

from ..errors import MillpondError
from ..models.transfer import ExportJob, ImportJob, ImportOptions
from ._base import body, split_database

FileInput = str | os.PathLike[str] | IO[bytes]
"""A path, or a binary file object open for reading."""

_FILENAME = re.compile(r'filename="([^"]+)"')


class ProgressBar:
    """A progress bar on stderr while waiting (rich's, when rich is installed); with
    ``rows=False``, the bytes received so far (a streamed export's size is not known)."""

    def __init__(self, enabled: bool, label: str, rows: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )
        except ImportError:  # pragma: no cover - rich comes with the CLI
            return
        counts: list[Any] = [DownloadColumn(), TransferSpeedColumn()]
        if rows:
            counts = [BarColumn(), *counts, TextColumn("{task.fields[rows]} rows")]
        self._bar = Progress(
            TextColumn("{task.description}"),
            *counts,
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=None, rows=0)

    def update(self, job: ImportJob | ExportJob) -> None:
        if self._bar is None:
            return
        total = getattr(job, "bytes_total", None)
        done = job.bytes_done
        if job.state == "DONE" and total:
            done = total
        self._bar.update(
            self._task,
            total=total or None,
            completed=done,
            rows=job.rows_done,
            description=job.state.lower(),
        )

    def received(self, size: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=size)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


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
