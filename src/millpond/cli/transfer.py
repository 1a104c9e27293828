"""``millpond import`` and ``millpond export``: load a file (or URL) into a table, export a
query or table to a file. Both start a job on the server and wait for it (with a progress
bar when stderr is a terminal); ``--no-wait`` prints the accepted job instead.
``millpond export --stream`` is a CSV export with no job: the file is written as the
server reads it from Postgres (the bytes received shown on a terminal)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, cast, get_args

import typer

from ..models.transfer import (
    ExportFormat,
    ExportJob,
    ImportFormat,
    ImportJob,
    ImportMode,
    InferHeader,
    JobState,
)
from ._context import database_name, fail, state
from ._output import OutputFormat, show_list, show_one
from ._paging import All, Limit, page_size, shown

IMPORT_FORMATS = get_args(ImportFormat)
EXPORT_FORMATS = get_args(ExportFormat)


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered not in allowed:
        raise typer.BadParameter(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return lowered


def _column_types(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    types: dict[str, str] = {}
    for item in values:
        name, sep, sql_type = item.partition("=")
        if not sep or not name.strip() or not sql_type.strip():
            raise typer.BadParameter(
                f"give column types as COLUMN=TYPE (e.g. price=numeric), not {item!r}",
                param_hint="'--type'",
            )
        types[name.strip()] = sql_type.strip()
    return types


def _progress(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


def _finish(fmt: OutputFormat, job: ImportJob | ExportJob, what: str) -> None:
    show_one(fmt, job)
    if job.state == "FAILED":
        details = job.error_details or {}
        fail(f"the {what} failed: {details.get('message') or 'no details'} ({job.error_type})")


def import_(
    ctx: typer.Context,
    database: Annotated[
        str,
        typer.Argument(
            metavar="OWNER/NAME", help="The database to import into.", callback=database_name
        ),
    ],
    table: Annotated[str, typer.Argument(metavar="TABLE", help="The table to load.")],
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE|URL",
            help="A file to upload, or an http(s) URL the server fetches. Gzip files (.gz) "
            "are decompressed.",
        ),
    ],
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help=f"The file's format: {', '.join(IMPORT_FORMATS)}. Default: sniffed from "
            "its name and content.",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="create: a new table; append: add rows (columns matched by name); replace: "
            "swap the table for the file's contents.",
        ),
    ] = "create",
    schema: Annotated[
        str | None, typer.Option("--schema", metavar="SCHEMA", help="Default: public.")
    ] = None,
    header: Annotated[
        str,
        typer.Option(
            "--header",
            metavar="HEADER",
            help="auto (sniffed), first_row, or no_header (columns column_1, column_2, …).",
        ),
    ] = "auto",
    sheet: Annotated[
        str | None,
        typer.Option(
            "--sheet",
            metavar="NAME",
            help="Import only this sheet (XLSX/XLS) or table (SQLite); default: all of them, "
            "each into TABLE_<name>.",
        ),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option("--encoding", metavar="ENCODING", help="Default: sniffed.")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", metavar="CHAR", help="Default: sniffed.")
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            metavar="COLUMN=TYPE",
            help="Override an inferred column type (repeatable): --type zip=text.",
        ),
    ] = None,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview",
            help="Only show what the import would do (format, dialect, header, columns, "
            "types, first rows); load nothing.",
        ),
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the accepted job (JSON) and return.")
    ] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar while waiting.")
    ] = False,
) -> None:
    """Import a file into a table: CSV/TSV, JSON, NDJSON, XLSX, XLS, SQLite or Parquet.

    Column names become lower-case identifiers, types are inferred from the data (override
    with --type). The import is all or nothing: a failed one changes nothing. Waits for the
    job and prints it; exits 1 if it FAILED (the error says which row and line).
    """
    fmt = _choice(file_format, IMPORT_FORMATS, "--format")
    _choice(mode, ("create", "append", "replace"), "--mode")
    _choice(header, ("auto", "first_row", "no_header"), "--header")
    column_types = _column_types(types)
    is_url = source.lower().startswith(("http://", "https://"))
    path = None if is_url else Path(source)
    if path is not None and not path.is_file():
        raise typer.BadParameter(f"no file {source!r}", param_hint="'FILE|URL'")
    st = state(ctx)
    st.database = database
    url = source if is_url else None
    with st.client() as mp:
        if preview:
            result = mp.imports.preview(
                database,
                table,
                file=path,
                file_url=url,
                schema_name=schema,
                infer_header=cast(InferHeader, header),
                file_format=cast(ImportFormat | None, fmt),
                encoding=encoding,
                delimiter=delimiter,
                sheet_name=sheet,
                column_types=column_types,
            )
            show_one(st.format, result)
            return
        job = mp.imports.create(
            database,
            table,
            file=path,
            file_url=url,
            mode=cast(ImportMode, mode),
            schema_name=schema,
            infer_header=cast(InferHeader, header),
            file_format=cast(ImportFormat | None, fmt),
            encoding=encoding,
            delimiter=delimiter,
            sheet_name=sheet,
            column_types=column_types,
        )
        if no_wait:
            show_one(st.format, job)
            return
        job = mp.imports.wait(job.id, progress=_progress(no_progress))
    _finish(st.format, job, "import")


def export(
    ctx: typer.Context,
    database: Annotated[
        str,
        typer.Argument(
            metavar="OWNER/NAME", help="The database to export from.", callback=database_name
        ),
    ],
    query: Annotated[
        str | None, typer.Option("-q", "--query", metavar="SQL", help="Export this query's rows.")
    ] = None,
    table: Annotated[
        str | None, typer.Option("-t", "--table", metavar="TABLE", help="Export a whole table.")
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option("--schema", metavar="SCHEMA", help="The table's schema (default: public)."),
    ] = None,
    export_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help=f"{', '.join(EXPORT_FORMATS)}. Default: from the output file's extension, "
            "else csv.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="Where to write the file (a directory: the export's own file name in it).",
        ),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the accepted job (JSON) and return.")
    ] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar while waiting.")
    ] = False,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="CSV only: no job, the rows come in the answer and go to -o FILE as the "
            "server reads them (faster; prints what was written, not a job).",
        ),
    ] = False,
) -> None:
    """Export a query's result or a table to a file: CSV, JSON, NDJSON, XLSX, XLS or Parquet.

    The server streams the rows into the file, then this downloads it to -o FILE and prints
    the job. The job's download_url is a signed link that works without a key until it
    expires. With --stream (CSV), there is no job and no file on the server: the export is
    the answer itself, an interrupted one leaves no file.
    """
    if (query is None) == (table is None):
        raise typer.BadParameter("give --query SQL or --table TABLE", param_hint="'-q' / '-t'")
    if schema is not None and table is None:
        raise typer.BadParameter("--schema goes with --table", param_hint="'--schema'")
    fmt = _choice(export_format, EXPORT_FORMATS, "--format")
    if fmt is None and output is not None and output.suffix.lower().lstrip(".") in EXPORT_FORMATS:
        fmt = output.suffix.lower().lstrip(".")
    if output is None and not no_wait:
        raise typer.BadParameter("give -o FILE (or --no-wait)", param_hint="'-o'")
    st = state(ctx)
    st.database = database
    if stream:
        _check_stream(fmt, no_wait)
        assert output is not None
        with st.client() as mp:
            streamed = mp.exports.stream(
                database,
                output,
                query_string=query,
                table_name=table,
                schema_name=schema,
                file_name=None if output.is_dir() else output.name,
                progress=_progress(no_progress),
            )
        show_one(st.format, streamed)
        return
    with st.client() as mp:
        job = mp.exports.create(
            database,
            query_string=query,
            table_name=table,
            schema_name=schema,
            export_format=cast(ExportFormat, fmt or "csv"),
            file_name=output.name if output is not None and not output.is_dir() else None,
        )
        if no_wait:
            show_one(st.format, job)
            return
        job = mp.exports.wait(job.id, progress=_progress(no_progress))
        if job.state == "DONE" and output is not None:
            mp.exports.download(job.id, output)
    _finish(st.format, job, "export")


def _check_stream(fmt: str | None, no_wait: bool) -> None:
    if fmt not in (None, "csv"):
        raise typer.BadParameter(
            f"a streamed export is CSV, not {fmt}: leave out --stream for a job",
            param_hint="'--stream'",
        )
    if no_wait:
        raise typer.BadParameter(
            "--no-wait makes a job: a streamed export has none", param_hint="'--stream'"
        )


JOB_KINDS = ("import", "export")


def jobs(
    ctx: typer.Context,
    kind: Annotated[
        str, typer.Argument(metavar="KIND", help="import or export.", show_default=False)
    ],
    database: Annotated[
        str | None,
        typer.Option("-d", "--database", metavar="OWNER/NAME", help="Only this database's jobs."),
    ] = None,
    job_state: Annotated[
        str | None,
        typer.Option("--state", metavar="STATE", help="RECEIVED, PROCESSING, DONE or FAILED."),
    ] = None,
    before: Annotated[
        str | None,
        typer.Option("--before", metavar="JOB_ID", help="Only jobs older than this one."),
    ] = None,
    limit: Limit = 100,
    every: All = False,
) -> None:
    """List your import or export jobs, newest first.

    Finished jobs stay listed for the server's transfer_job_retention_days (30 by default).
    """
    what = _choice(kind, JOB_KINDS, "KIND")
    wanted = None if job_state is None else job_state.upper()
    if wanted is not None and wanted not in ("RECEIVED", "PROCESSING", "DONE", "FAILED"):
        raise typer.BadParameter(
            f"--state must be RECEIVED, PROCESSING, DONE or FAILED, not {job_state!r}"
        )
    if database is not None:
        database_name(database)
    st = state(ctx)
    with st.client() as mp:
        resource = mp.imports if what == "import" else mp.exports
        jobs = resource.iter(
            database=database,
            state=cast(JobState | None, wanted),
            before=before,
            page_size=page_size(limit, every),
        )
        found = shown(jobs, limit, every)
    show_list(st.format, found, ImportJob if what == "import" else ExportJob)
