"""Job rows in the control database (``transfer_jobs``, migration 0003) and their wire
models."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from psycopg.rows import DictRow

from ...models.transfer import ExportJob, ImportColumn, ImportedTable, ImportJob

LOCK_SPACE = 0x7472 << 48
"""Advisory-lock keys of running jobs: this prefix plus the job's ``lock_key``."""

CHANNEL = "millpond_transfer"

JOB_SELECT = """
SELECT j.*, u.username AS db_owner, d.name AS db_short_name
FROM transfer_jobs j
JOIN databases d ON d.id = j.database_id
JOIN users u ON u.id = d.owner_id
"""


@dataclass(frozen=True)
class JobPage:
    """Which jobs a listing returns."""

    limit: int = 50
    before: str | None = None
    state: str | None = None
    database: str | None = None


def new_id(kind: str) -> str:
    return ("imp_" if kind == "import" else "exp_") + secrets.token_hex(12)


def lock_id(row: DictRow | dict[str, Any]) -> int:
    return LOCK_SPACE | int(row["lock_key"])


def _elapsed(row: DictRow) -> float | None:
    if row["started_at"] is None or row["finished_at"] is None:
        return None
    elapsed: float = (row["finished_at"] - row["started_at"]).total_seconds()
    return round(elapsed * 1000, 3)


def _db_name(row: DictRow) -> str:
    return f"{row['db_owner']}/{row['db_short_name']}"


def _error(row: DictRow) -> dict[str, Any]:
    return {
        "error_id": row["error_id"],
        "error_type": row["error_type"],
        "error_details": row["error_details"],
    }


def import_job(row: DictRow, base_url: str = "") -> ImportJob:
    params = row["params"]
    result = row["result"] or {}
    return ImportJob(
        id=row["id"],
        state=row["state"],
        db_name=_db_name(row),
        table_name=params["table_name"],
        schema_name=params.get("schema_name"),
        mode=params.get("mode", "create"),
        file_format=result.get("file_format") or params.get("file_format"),
        file_name=row["file_name"],
        file_url=params.get("file_url"),
        bytes_total=row["bytes_total"],
        bytes_done=row["bytes_done"],
        rows_done=row["rows_done"],
        attempts=row["attempts"],
        tables=[
            ImportedTable(
                schema_name=t["schema"],
                table_name=t["table"],
                source_name=t.get("source_name"),
                rows=t["rows"],
                columns=[
                    ImportColumn(name=c["name"], source=c.get("source", c["name"]), type=c["type"])
                    for c in t.get("columns", [])
                ],
            )
            for t in result.get("tables", [])
        ],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        elapsed_ms=_elapsed(row),
        status_url=f"{base_url}/v1/imports/{row['id']}",
        **_error(row),
    )


def export_job(row: DictRow, base_url: str = "", download_url: str | None = None) -> ExportJob:
    params = row["params"]
    result = row["result"] or {}
    return ExportJob(
        id=row["id"],
        state=row["state"],
        db_name=_db_name(row),
        export_format=params["export_format"],
        file_name=row["file_name"],
        query_string=params.get("query_string"),
        table_name=params.get("table_name"),
        schema_name=params.get("schema_name"),
        bytes_done=row["bytes_done"],
        rows_done=row["rows_done"],
        attempts=row["attempts"],
        columns=[
            ImportColumn(name=c["name"], source=c["name"], type=c["type"])
            for c in result.get("columns", [])
        ],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        elapsed_ms=_elapsed(row),
        expires_at=row["expires_at"],
        download_url=download_url,
        status_url=f"{base_url}/v1/exports/{row['id']}",
        **_error(row),
    )


CLAIM_SQL = """
SELECT * FROM transfer_jobs
WHERE state = 'RECEIVED' AND (node_id IS NULL OR node_id = %(node)s OR %(shared)s)
  AND NOT (id = ANY(%(skip)s))
ORDER BY created_at
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

START_SQL = """
UPDATE transfer_jobs
SET state = 'PROCESSING', attempts = attempts + 1, worker_id = %(worker)s,
    started_at = now(), heartbeat_at = now(), commit_xid = NULL,
    bytes_done = 0, rows_done = 0
WHERE id = %(id)s
RETURNING *
"""

ORPHANS_SQL = """
SELECT id, lock_key, kind, attempts, commit_xid, worker_id FROM transfer_jobs
WHERE state = 'PROCESSING'
ORDER BY created_at
FOR UPDATE SKIP LOCKED
"""
