"""``mp.imports`` and ``mp.exports``: load files into tables, export queries and tables
to files, as jobs the server runs::

    job = await mp.imports.create("alice/shop", "orders", file="orders.csv.gz")
    job = await mp.imports.wait(job.id, progress=True)   # DONE or FAILED
    job = await mp.exports.create("alice/shop", query_string="SELECT …", export_format="parquet")
    await mp.exports.download(job.id, "orders.parquet")  # waits for it first
    await mp.exports.stream("alice/shop", "orders.csv", table_name="orders")  # no job: CSV

A job's ``state`` moves RECEIVED → PROCESSING → DONE or FAILED; a FAILED job says why
in ``error_type`` and ``error_details`` (with the row and line for a bad value).
``file`` is a path or a binary file object; it is streamed, never read whole. Every
method takes keyword-only ``timeout=`` and ``max_retries=`` (uploads are never retried).
``list()`` answers one page of jobs; ``iter()`` takes the same filters and goes on to the
oldest, a page (``page_size``) per request. ``exports.stream()`` is a CSV export in one
request, written to its file as the server reads it from Postgres (docs/transfer.md).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from time import monotonic
from typing import Any

import httpx

from ...errors import MillpondError, TransportError, error_for_status
from ...errors import TimeoutError as ReadTimeoutError
from ...models.transfer import (
    TERMINAL_STATES,
    ExportFormat,
    ExportJob,
    ImportFormat,
    ImportJob,
    ImportMode,
    ImportOptions,
    ImportPreview,
    InferHeader,
    JobState,
    StreamedExport,
)
from .._base import (
    Attempts,
    Call,
    Retry,
    TimeoutTypes,
    body,
    parse_list,
    parse_model,
    segment,
    split_database,
)
from .._paging import PAGE_SIZE, Pages
from .._progress import ProgressBar
from .._transfer import (
    FileInput,
    export_request,
    failure,
    file_name_of,
    form,
    job_filter,
    job_id_of,
    stream_target,
)
from ._transport import AsyncTransport


class Imports:
    """``mp.imports``: create, preview, inspect and wait for import jobs."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    def _options(self, db: str, table: str, **fields: Any) -> ImportOptions:
        split_database(db)
        return ImportOptions.model_construct(db_name=db, table_name=table, **fields)

    async def _send(
        self,
        path: str,
        options: ImportOptions,
        file: FileInput | None,
        parse: Any,
        timeout: TimeoutTypes,
        max_retries: int | None,
    ) -> Any:
        if file is None:
            call = Call("POST", path, parse, json=body(options))
            return await self._transport.request(call, timeout=timeout, max_retries=max_retries)
        # an upload: one attempt (a file object cannot be rewound for a retry)
        attempts = Attempts(
            self._transport.config, Call("POST", path, parse), timeout=timeout, max_retries=0
        )
        spec = attempts.request
        opened = open(file, "rb") if isinstance(file, str | os.PathLike) else None  # noqa: SIM115
        try:
            stream = opened if opened is not None else file
            assert not isinstance(stream, str | os.PathLike)
            try:
                response = await self._transport._http.post(
                    spec.url,
                    data=form(options),
                    files={"file": (file_name_of(file), stream, "application/octet-stream")},
                    headers=spec.headers,
                    timeout=spec.timeout,
                )
            except httpx.TransportError as exc:
                attempts.after_error(exc)
                raise  # pragma: no cover - after_error raises
        finally:
            if opened is not None:
                opened.close()
        return attempts.after_response(response)

    async def create(
        self,
        db: str,
        table: str,
        file: FileInput | None = None,
        file_url: str | None = None,
        *,
        schema_name: str | None = None,
        infer_header: InferHeader | None = None,
        mode: ImportMode | None = None,
        file_format: ImportFormat | None = None,
        file_name: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        quote: str | None = None,
        sheet_name: str | None = None,
        column_types: dict[str, str] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ImportJob:
        """Start importing ``file`` (a path or binary file object, uploaded) or
        ``file_url`` (fetched by the server) into table ``table`` of ``"owner/name"``.

        ``mode``: ``create`` (default; the table must not exist), ``append`` (columns
        matched by name) or ``replace``. ``infer_header``: ``auto``, ``first_row`` or
        ``no_header``. ``file_format`` (csv, tsv, json, ndjson, xlsx, xls, sqlite,
        parquet), ``encoding``, ``delimiter`` and ``quote`` are sniffed when unset;
        ``sheet_name`` picks one sheet (XLSX/XLS) or table (SQLite) — all by default;
        ``column_types`` (``{"price": "numeric"}``) overrides inferred types. Returns the
        job as accepted (state RECEIVED); see :meth:`wait`."""
        if (file is None) == (file_url is None):
            raise ValueError("give file or file_url (one of them)")
        options = self._options(
            db,
            table,
            schema_name=schema_name,
            file_url=file_url,
            infer_header=infer_header,
            mode=mode,
            file_format=file_format,
            file_name=file_name,
            encoding=encoding,
            delimiter=delimiter,
            quote=quote,
            sheet_name=sheet_name,
            column_types=column_types,
        )
        return await self._send(  # type: ignore[no-any-return]
            "/v1/imports", options, file, parse_model(ImportJob), timeout, max_retries
        )

    async def preview(
        self,
        db: str,
        table: str,
        file: FileInput | None = None,
        file_url: str | None = None,
        *,
        schema_name: str | None = None,
        infer_header: InferHeader | None = None,
        file_format: ImportFormat | None = None,
        file_name: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        quote: str | None = None,
        sheet_name: str | None = None,
        column_types: dict[str, str] | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ImportPreview:
        """What :meth:`create` would do with these arguments — format, CSV dialect,
        header decision, columns with their types, first rows — without loading anything."""
        if (file is None) == (file_url is None):
            raise ValueError("give file or file_url (one of them)")
        options = self._options(
            db,
            table,
            schema_name=schema_name,
            file_url=file_url,
            infer_header=infer_header,
            file_format=file_format,
            file_name=file_name,
            encoding=encoding,
            delimiter=delimiter,
            quote=quote,
            sheet_name=sheet_name,
            column_types=column_types,
        )
        return await self._send(  # type: ignore[no-any-return]
            "/v1/imports/preview", options, file, parse_model(ImportPreview), timeout, max_retries
        )

    async def get(
        self, job_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ImportJob:
        """An import job's state, progress and, once finished, its tables or error."""
        call = Call("GET", f"/v1/imports/{segment(job_id)}", parse_model(ImportJob))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list(
        self,
        *,
        database: str | None = None,
        state: JobState | None = None,
        limit: int = 50,
        before: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> list[ImportJob]:
        """One page of your import jobs, newest first: of one ``database`` or ``state`` if
        given; at most ``limit`` (1-1000) older than the job ``before``. Every one:
        :meth:`iter`."""
        call = Call(
            "GET",
            "/v1/imports",
            parse_list(ImportJob),
            params=job_filter(database, state, limit, before),
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter(
        self,
        *,
        database: str | None = None,
        state: JobState | None = None,
        before: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[ImportJob]:
        """Every import job, newest first, as :meth:`list` but to the end: ``page_size``
        (1-1000) per request, each page fetched when the loop reaches it."""
        call = Call("GET", "/v1/imports", parse_list(ImportJob), params=job_filter(database, state))
        pages = Pages(call, job_id_of, param="before", size=page_size, start=before)
        async for job in self._transport.iterate(pages, timeout=timeout, max_retries=max_retries):
            yield job

    async def wait(
        self,
        job_id: str,
        *,
        progress: bool = False,
        poll_interval: float = 0.25,
        wait_timeout: float | None = None,
        raise_on_failure: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ImportJob:
        """Poll until the job is DONE or FAILED and return it. ``progress=True`` draws a
        progress bar on stderr; ``wait_timeout`` (seconds) gives up with ``TimeoutError``;
        ``raise_on_failure`` raises ``MillpondError`` for a FAILED job."""
        bar = ProgressBar(progress, "import")
        deadline = None if wait_timeout is None else monotonic() + wait_timeout
        try:
            while True:
                job = await self.get(job_id, timeout=timeout, max_retries=max_retries)
                bar.update(job)
                if job.state in TERMINAL_STATES:
                    break
                if deadline is not None and monotonic() > deadline:
                    raise TimeoutError(f"import {job_id} is still {job.state}")
                await asyncio.sleep(poll_interval)
        finally:
            bar.close()
        if raise_on_failure and job.state == "FAILED":
            raise failure("import", job)
        return job


class Exports:
    """``mp.exports``: create export jobs, wait for them, download their files."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self,
        db: str,
        query_string: str | None = None,
        table_name: str | None = None,
        *,
        schema_name: str | None = None,
        file_name: str | None = None,
        export_format: ExportFormat = "csv",
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ExportJob:
        """Start exporting the result of ``query_string`` or the whole table
        ``table_name`` of ``"owner/name"`` as csv, json, ndjson, xlsx, xls or parquet.
        Returns the job as accepted; :meth:`download` waits and fetches the file."""
        request = export_request(
            db, query_string, table_name, schema_name, file_name, export_format
        )
        call = Call("POST", "/v1/exports", parse_model(ExportJob), json=body(request))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def get(
        self, job_id: str, *, timeout: TimeoutTypes = None, max_retries: int | None = None
    ) -> ExportJob:
        """An export job; once DONE, ``download_url`` is a signed link to the file."""
        call = Call("GET", f"/v1/exports/{segment(job_id)}", parse_model(ExportJob))
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def list(
        self,
        *,
        database: str | None = None,
        state: JobState | None = None,
        limit: int = 50,
        before: str | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> list[ExportJob]:
        """One page of your export jobs, newest first (as :meth:`Imports.list`). Every
        one: :meth:`iter`."""
        call = Call(
            "GET",
            "/v1/exports",
            parse_list(ExportJob),
            params=job_filter(database, state, limit, before),
        )
        return await self._transport.request(call, timeout=timeout, max_retries=max_retries)

    async def iter(
        self,
        *,
        database: str | None = None,
        state: JobState | None = None,
        before: str | None = None,
        page_size: int = PAGE_SIZE,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[ExportJob]:
        """Every export job, newest first, as :meth:`list` but to the end."""
        call = Call("GET", "/v1/exports", parse_list(ExportJob), params=job_filter(database, state))
        pages = Pages(call, job_id_of, param="before", size=page_size, start=before)
        async for job in self._transport.iterate(pages, timeout=timeout, max_retries=max_retries):
            yield job

    async def wait(
        self,
        job_id: str,
        *,
        progress: bool = False,
        poll_interval: float = 0.25,
        wait_timeout: float | None = None,
        raise_on_failure: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> ExportJob:
        """Poll until the job is DONE or FAILED and return it (see ``imports.wait``)."""
        bar = ProgressBar(progress, "export")
        deadline = None if wait_timeout is None else monotonic() + wait_timeout
        try:
            while True:
                job = await self.get(job_id, timeout=timeout, max_retries=max_retries)
                bar.update(job)
                if job.state in TERMINAL_STATES:
                    break
                if deadline is not None and monotonic() > deadline:
                    raise TimeoutError(f"export {job_id} is still {job.state}")
                await asyncio.sleep(poll_interval)
        finally:
            bar.close()
        if raise_on_failure and job.state == "FAILED":
            raise failure("export", job)
        return job

    async def download(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        progress: bool = False,
        wait_timeout: float | None = None,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> Path:
        """Wait for the export, then stream its file to ``path`` (a directory: the
        export's ``file_name`` in it). Returns the path written; ``MillpondError`` if the
        export FAILED or its file expired."""
        job = await self.wait(
            job_id,
            progress=progress,
            wait_timeout=wait_timeout,
            raise_on_failure=True,
            timeout=timeout,
            max_retries=max_retries,
        )
        if not job.download_url:
            raise MillpondError(f"export {job_id} has no file any more (it expired)")
        target = Path(path)
        if target.is_dir():
            target = target / job.file_name
        spec = Attempts(
            self._transport.config, Call("GET", "/download", bytes), timeout=timeout
        ).request
        partial = target.with_name(target.name + ".part")
        async with self._transport._http.stream(
            "GET",
            job.download_url,
            headers={"Accept-Encoding": "identity", "User-Agent": spec.headers["User-Agent"]},
            timeout=spec.timeout,
        ) as response:
            raw: Any = response.stream  # the bytes as sent (we asked for no encoding)
            if response.status_code != 200:
                content = b""
                async for chunk in raw:
                    content += chunk
                try:
                    decoded: Any = json.loads(content)
                except ValueError:
                    decoded = content.decode(errors="replace")
                raise error_for_status(response.status_code, decoded)
            with partial.open("wb") as f:
                async for chunk in raw:
                    f.write(chunk)
        os.replace(partial, target)
        return target

    async def stream(
        self,
        db: str,
        path: str | os.PathLike[str],
        query_string: str | None = None,
        table_name: str | None = None,
        *,
        schema_name: str | None = None,
        file_name: str | None = None,
        progress: bool = False,
        timeout: TimeoutTypes = None,
        max_retries: int | None = None,
    ) -> StreamedExport:
        """Export the result of ``query_string`` or the table ``table_name`` of
        ``"owner/name"`` as CSV in one request, no job: the server sends the rows as
        Postgres writes them, and they are written to ``path`` (a directory: the export's
        file name in it) as they come. ``progress=True`` shows the bytes received.

        An error found before the first byte is the server's (``ApiError``: bad input,
        rights, unknown table, SQL error); an answer cut short (the export failed midway,
        the connection broke) is a ``TransportError``; either way no file is left (it is
        written to ``<path>.part``, renamed once complete). Retried only before the
        answer begins. A job (:meth:`create`) survives disconnects, keeps its file for
        downloads that resume, and has other formats."""
        request = export_request(db, query_string, table_name, schema_name, file_name, "csv")
        call = Call("POST", "/v1/exports/stream", bytes, json=body(request), idempotent=True)
        attempts = Attempts(self._transport.config, call, timeout=timeout, max_retries=max_retries)
        spec = attempts.request
        headers = {**spec.headers, "Accept": "text/csv", "Accept-Encoding": "identity"}
        started = monotonic()
        while True:
            outcome: bytes | Retry
            try:
                async with self._transport._http.stream(
                    "POST", spec.url, json=spec.json, headers=headers, timeout=spec.timeout
                ) as response:
                    if response.status_code == 200:
                        target, name = stream_target(path, response)
                        bar = ProgressBar(progress, f"export of {db}", rows=False)
                        try:
                            size = await _receive_csv(response, target, bar, db)
                        finally:
                            bar.close()
                        return StreamedExport(
                            db_name=db,
                            query_string=query_string,
                            table_name=table_name,
                            schema_name=schema_name,
                            file_name=name,
                            path=str(target),
                            size_bytes=size,
                            elapsed_ms=round((monotonic() - started) * 1000, 3),
                        )
                    await response.aread()
                    outcome = attempts.after_response(response)
            except httpx.TransportError as exc:  # before the answer (its body: _receive_csv)
                outcome = attempts.after_error(exc)
            if not isinstance(outcome, Retry):
                raise MillpondError(f"unexpected answer to POST {call.path}: not the CSV")
            await asyncio.sleep(outcome.delay)


async def _receive_csv(response: httpx.Response, target: Path, bar: ProgressBar, db: str) -> int:
    """Write a streamed export's answer to ``target`` through ``<target>.part``, renamed
    once the answer is complete; removed otherwise. Returns the bytes written."""
    partial = target.with_name(target.name + ".part")
    raw: Any = response.stream  # the bytes as sent (we asked for no encoding)
    size = 0
    try:
        with partial.open("wb") as f:
            async for chunk in raw:
                f.write(chunk)
                size += len(chunk)
                bar.received(size)
    except httpx.TransportError as exc:  # cut short: the export failed, or the connection
        partial.unlink(missing_ok=True)
        what = f"the streamed export of {db} stopped after {size} bytes"
        if isinstance(exc, httpx.TimeoutException):
            raise ReadTimeoutError(
                f"{what}: no data for too long ({exc}); nothing was kept"
            ) from exc
        raise TransportError(
            f"{what}, before its end: the export failed on the server (an error in the"
            f" query, its statement timeout; see the server log) or the connection broke"
            f" ({exc!r}); nothing was kept"
        ) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return size
