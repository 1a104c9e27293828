"""One database's backup (``GET /v1/databases/{owner}/{name}/backup``) and its restore
(``POST …/restore``): the file's layout, its manifest, and the restore's answer.

A database backup is one file (``.mpdb``; media type :data:`MEDIA_TYPE`), three parts:

1. the line ``millpond-database-backup`` (:data:`MAGIC`, with its ``\\n``);
2. the manifest: one line of JSON (:class:`BackupManifest`), at most
   :data:`MAX_MANIFEST_BYTES`, ending in ``\\n``;
3. to the end of the file: a ``pg_dump --format=custom`` archive of the database (it
   starts with ``PGDMP``), which ``pg_restore`` reads as it is
   (``tail -n +3 shop.mpdb > shop.dump``).

The manifest comes first so that the file streams as ``pg_dump`` writes it. The server
and the SDK read the head with :func:`parse_head`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationError

from .common import WireModel

MAGIC = b"millpond-database-backup\n"
FORMAT = 1
"""The version of the layout and manifest this millpond writes and reads."""
MEDIA_TYPE = "application/vnd.millpond.database-backup"
MAX_MANIFEST_BYTES = 1024 * 1024
ARCHIVE_MAGIC = b"PGDMP"
"""How a ``pg_dump`` custom-format archive begins."""
MAX_HEAD_BYTES = len(MAGIC) + MAX_MANIFEST_BYTES + 1 + len(ARCHIVE_MAGIC)
"""Bytes :func:`parse_head` may need before it can answer."""

GrantKind = Literal["table", "sequence", "function"]
Privilege = Literal[
    "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "USAGE", "EXECUTE"
]


class RoleGrants(WireModel):
    """What the database's own roles (``_ro``, ``_rw``, ``_reducer``) may do with one
    object, where that differs from what a new object of the database gives them: a
    module's private table, a function revoked from ``PUBLIC``. Each list holds the
    role's effective privileges (``SELECT``, ``INSERT``…, ``EXECUTE``)."""

    kind: GrantKind
    schema_name: str
    name: str = Field(description="The table's name; a function's name")
    arguments: str = Field(default="", description="A function's argument types")
    ro: list[Privilege] = Field(default_factory=list)
    rw: list[Privilege] = Field(default_factory=list)
    reducer: list[Privilege] = Field(default_factory=list)


class BackupManifest(WireModel):
    """What a database backup holds: the second line of the file."""

    format: int = Field(description=f"The file's format version ({FORMAT})")
    millpond: str = Field(description="The version of millpond that wrote it")
    postgres: str = Field(description="The Postgres server version of the database")
    database: str = Field(description="The database backed up, owner/name")
    created_at: datetime
    is_private: bool
    storage_limit_bytes: int | None = None
    grants: list[RoleGrants] = Field(
        default_factory=list,
        description="Privileges of the database's roles that differ from the defaults",
    )


class DatabaseRestore(WireModel):
    """The answer of a restore: into which database, from what."""

    database: str = Field(description="The database restored into, owner/name")
    manifest: BackupManifest
    bytes: int = Field(description="Size of the backup file received")
    elapsed_ms: float


class NotABackup(ValueError):
    """The bytes are not a millpond database backup (or of a format this one cannot read:
    ``unsupported`` is set)."""

    def __init__(self, message: str, unsupported: int | None = None) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def encode_head(manifest: BackupManifest) -> bytes:
    """The first two parts of the file: the magic line and the manifest's line."""
    text = json.dumps(manifest.model_dump(mode="json"), separators=(",", ":"))
    return MAGIC + text.encode() + b"\n"


def parse_head(data: bytes) -> tuple[BackupManifest, int] | None:
    """The manifest of a backup that begins with ``data``, and where its archive starts;
    ``None`` when more bytes are needed (up to :data:`MAX_HEAD_BYTES`). Raises
    :class:`NotABackup` as soon as the bytes cannot be a backup this millpond reads."""
    if not data.startswith(MAGIC[: len(data)]):
        raise NotABackup("not a millpond database backup (it does not begin with its magic line)")
    if len(data) < len(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        if len(data) - len(MAGIC) > MAX_MANIFEST_BYTES:
            raise NotABackup(f"the backup's manifest is longer than {MAX_MANIFEST_BYTES} bytes")
        return None
    manifest = _manifest(data[len(MAGIC) : end])
    start = end + 1
    archive = data[start : start + len(ARCHIVE_MAGIC)]
    if not ARCHIVE_MAGIC.startswith(archive):
        raise NotABackup("the backup holds no pg_dump archive after its manifest")
    if len(archive) < len(ARCHIVE_MAGIC):
        return None
    return manifest, start


def _manifest(line: bytes) -> BackupManifest:
    try:
        raw: Any = json.loads(line)
    except ValueError as exc:
        raise NotABackup(f"the backup's manifest is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or type(raw.get("format")) is not int:
        raise NotABackup("the backup's manifest has no format version")
    if raw["format"] != FORMAT:
        raise NotABackup(
            f"a backup of format {raw['format']}: this millpond reads format {FORMAT}",
            unsupported=raw["format"],
        )
    try:
        return BackupManifest.model_validate(raw)
    except ValidationError as exc:
        wrong = sorted({".".join(map(str, e["loc"])) or "?" for e in exc.errors()})
        raise NotABackup(f"the backup's manifest is invalid ({', '.join(wrong)})") from None
