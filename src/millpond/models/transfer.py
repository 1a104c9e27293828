"""Import and export jobs (``/v1/imports``, ``/v1/exports``), and streamed CSV exports
(``/v1/exports/stream``).

Field names follow the bit.io API (``db_name``, ``table_name``, ``schema_name``,
``infer_header``, ``file_url``, ``query_string``, ``export_format``), so code written
for it reads naturally here. A job's ``state`` moves RECEIVED → PROCESSING → DONE or
FAILED; a FAILED job has ``error_id``, ``error_type`` and ``error_details``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, Field

from .common import RequestModel, WireModel

JobState = Literal["RECEIVED", "PROCESSING", "DONE", "FAILED"]
InferHeader = Literal["auto", "first_row", "no_header"]
ImportMode = Literal["create", "append", "replace"]
ImportFormat = Literal["csv", "tsv", "json", "ndjson", "xlsx", "xls", "sqlite", "parquet"]
ExportFormat = Literal["csv", "json", "ndjson", "xlsx", "xls", "parquet"]

IMPORT_FORMATS: tuple[str, ...] = (
    "csv",
    "tsv",
    "json",
    "ndjson",
    "xlsx",
    "xls",
    "sqlite",
    "parquet",
)
EXPORT_FORMATS: tuple[str, ...] = ("csv", "json", "ndjson", "xlsx", "xls", "parquet")
TERMINAL_STATES: tuple[str, ...] = ("DONE", "FAILED")


class ImportOptions(RequestModel):
    """How to import: the JSON body of ``POST /v1/imports`` (with ``file_url``) and the
    form fields of its multipart form (with a ``file`` part)."""

    db_name: str = Field(
        description="owner/name", validation_alias=AliasChoices("db_name", "database")
    )
    table_name: str = Field(min_length=1, max_length=63)
    schema_name: str | None = Field(default=None, min_length=1, max_length=63)
    file_url: str | None = Field(default=None, max_length=8192)
    infer_header: InferHeader = "auto"
    mode: ImportMode = "create"
    file_format: ImportFormat | None = Field(
        default=None, description="Sniffed from the file name and content when unset."
    )
    file_name: str | None = Field(default=None, max_length=1024)
    encoding: str | None = Field(default=None, max_length=64)
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    quote: str | None = Field(default=None, min_length=1, max_length=1)
    sheet_name: str | None = Field(
        default=None,
        max_length=1024,
        description="The sheet (XLSX, XLS) or table (SQLite) to import; unset: all of them.",
    )
    column_types: dict[str, str] | None = Field(
        default=None, description="SQL types by column name, overriding inference."
    )


class ImportColumn(WireModel):
    name: str = Field(description="The column name in Postgres (normalised).")
    source: str = Field(description="The name in the file (the header), if any.")
    type: str


class CsvDialect(WireModel):
    encoding: str
    delimiter: str
    quote: str
    escape: str
    line_terminator: str
    postgres_reads_directly: bool = Field(
        description="True when Postgres's own CSV reader loads the file as is (fastest)."
    )


class PreviewTable(WireModel):
    table_name: str = Field(description="The table it would be imported into.")
    source_name: str | None = Field(description="Its sheet or table in the file, if any.")
    header: bool = Field(description="Whether the first row is taken as the header.")
    columns: list[ImportColumn]
    sample: list[list[Any]] = Field(description="The first data rows, as read.")


class ImportPreview(WireModel):
    """What an import would do, without loading anything."""

    file_format: ImportFormat
    compression: Literal["gzip"] | None = None
    file_name: str | None = None
    size_bytes: int
    dialect: CsvDialect | None = None
    tables: list[PreviewTable]


class ImportedTable(WireModel):
    schema_name: str
    table_name: str
    source_name: str | None = None
    rows: int
    columns: list[ImportColumn] = Field(default_factory=list)


class ImportJob(WireModel):
    id: str
    state: JobState
    db_name: str
    table_name: str
    schema_name: str | None = None
    mode: ImportMode
    file_format: str | None = None
    file_name: str | None = None
    file_url: str | None = None
    bytes_total: int | None = None
    bytes_done: int = 0
    rows_done: int = 0
    attempts: int = 0
    tables: list[ImportedTable] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_ms: float | None = None
    error_id: str | None = None
    error_type: str | None = None
    error_details: dict[str, Any] | None = None
    status_url: str | None = None


class ExportCreate(RequestModel):
    """``POST /v1/exports``: a query's or a table's rows into a file."""

    db_name: str = Field(
        description="owner/name", validation_alias=AliasChoices("db_name", "database")
    )
    query_string: str | None = Field(
        default=None, min_length=1, validation_alias=AliasChoices("query_string", "sql", "query")
    )
    table_name: str | None = Field(default=None, min_length=1, max_length=63)
    schema_name: str | None = Field(default=None, min_length=1, max_length=63)
    file_name: str | None = Field(default=None, min_length=1, max_length=255)
    export_format: ExportFormat = "csv"


class ExportJob(WireModel):
    id: str
    state: JobState
    db_name: str
    export_format: ExportFormat
    file_name: str
    query_string: str | None = None
    table_name: str | None = None
    schema_name: str | None = None
    bytes_done: int = 0
    rows_done: int = 0
    attempts: int = 0
    columns: list[ImportColumn] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_ms: float | None = None
    expires_at: datetime | None = Field(
        default=None, description="When the file is deleted (and download_url stops working)."
    )
    download_url: str | None = Field(
        default=None, description="A signed link to the file, valid until expires_at."
    )
    error_id: str | None = None
    error_type: str | None = None
    error_details: dict[str, Any] | None = None
    status_url: str | None = None


class StreamedExport(WireModel):
    """What ``mp.exports.stream`` wrote: a streamed export (``POST /v1/exports/stream``)
    is no job, its answer is the CSV itself; this is the SDK's account of it."""

    db_name: str
    export_format: Literal["csv"] = "csv"
    query_string: str | None = None
    table_name: str | None = None
    schema_name: str | None = None
    file_name: str = Field(description="The server's name for the file (Content-Disposition).")
    path: str = Field(description="Where the file was written.")
    size_bytes: int
    elapsed_ms: float
