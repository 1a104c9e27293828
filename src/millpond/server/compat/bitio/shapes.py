"""The bodies of bit.io's ``/v2beta`` API, built from millpond's models (no I/O).

Requests are the ones the ``bitdotio`` 2.2.1 package sends; answers carry the fields it
and its users read (``name`` of a database is its full ``owner/name``; jobs have
``id``, ``state``, ``status_url``, ``error_id``/``error_type``/``error_details`` and,
for a finished export, ``download_url``) and millpond's own fields beside them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ....models import ApiKeyCreated, Database, ServiceAccount
from ....models.common import RequestModel
from ....models.databases import MAX_BIGINT
from ....models.transfer import ExportFormat, ExportJob, ImportJob
from ...accounts.service import bitio_spelling

PREFIX = "/v2beta"


class BitQuery(RequestModel):
    """``POST /v2beta/query``."""

    database_name: str = Field(min_length=1, max_length=200, description="owner/name")
    query_string: str = Field(min_length=1)


BitDataFormat = Literal["list", "objects"]


class BitDatabaseCreate(RequestModel):
    """``POST /v2beta/db/``: ``name`` without the owner."""

    name: str = Field(min_length=1, max_length=200)
    is_private: bool = True
    storage_limit_bytes: int | None = Field(default=None, gt=0, le=MAX_BIGINT)


class BitDatabaseUpdate(RequestModel):
    """``PATCH /v2beta/db/{owner}/{name}``: a new ``name`` is without the owner."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    is_private: bool | None = None
    storage_limit_bytes: int | None = Field(default=None, gt=0, le=MAX_BIGINT)


class BitExportCreate(RequestModel):
    """``POST /v2beta/db/{owner}/{name}/export/``."""

    query_string: str | None = Field(default=None, min_length=1)
    table_name: str | None = Field(default=None, min_length=1, max_length=63)
    schema_name: str | None = Field(default=None, min_length=1, max_length=63)
    file_name: str | None = Field(default=None, min_length=1, max_length=255)
    export_format: ExportFormat = "csv"


def database(db: Database) -> dict[str, Any]:
    return {
        "name": db.full_name,
        "owner": db.owner,
        "is_private": db.is_private,
        "storage_limit_bytes": db.storage_limit_bytes,
        "storage_usage_bytes": db.size_bytes,
        "date_created": db.created_at.isoformat(),
        "date_updated": db.updated_at.isoformat(),
        "role": db.role,
    }


def query_result(result: dict[str, Any], query_string: str) -> dict[str, Any]:
    """millpond's ``QueryResult`` body as bit.io's: the rows in ``data``, the rest in
    ``metadata``."""
    columns = result["columns"]
    return {
        "query_string": query_string,
        "data": result["data"],
        "metadata": {
            "column_names": [c["name"] for c in columns],
            "column_types": [c["type"] for c in columns],
            "row_count": result["row_count"],
            "truncated": result["truncated"],
            "command": result["command"],
            "elapsed_ms": result["elapsed_ms"],
        },
    }


def import_job(job: ImportJob, base_url: str) -> dict[str, Any]:
    body = job.model_dump(mode="json")
    body["status_url"] = f"{base_url}{PREFIX}/import/{job.id}"
    return body


def export_job(job: ExportJob, base_url: str) -> dict[str, Any]:
    body = job.model_dump(mode="json")
    body["status_url"] = f"{base_url}{PREFIX}/export/{job.id}"
    return body


def credentials(created: ApiKeyCreated, username: str) -> dict[str, Any]:
    """A new key in bit.io's spelling: the API key is the database password too."""
    key = bitio_spelling(created.secret)
    return {
        "username": username,
        "api_key": key,
        "db_password": key,
        "id": created.id,
        "scope": created.scope,
        "service_account_id": created.service_account_id,
        "date_created": created.created_at.isoformat(),
    }


def service_account(account: ServiceAccount) -> dict[str, Any]:
    return {
        "id": str(account.id),
        "name": account.name,
        "owner": account.owner,
        "date_created": account.created_at.isoformat(),
        "key_count": account.key_count,
    }
