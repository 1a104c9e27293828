"""A whole installation's backup, and its restore into a new data directory.

A backup is one tar file:

- ``millpond-backup.json``: what it is (format, millpond and Postgres versions, when);
- ``pg/base.tar.gz`` and ``pg/pg_wal.tar.gz``: ``pg_basebackup`` of the running embedded
  cluster — every database, the control database included, as of one moment (the WAL
  written meanwhile is in it), taken without stopping anything;
- ``data/…``: the data directory's own files (the admin key file, the cluster's password,
  the gateway's certificate, import and export files), not the cluster or its socket.

With several clusters (docs/clusters.md) the base backup holds the home cluster only. The
databases on other clusters are added as per-database backups (``clusters/<cluster>/
<owner>-<name>.mpdb``, each as of its own moment, listed in ``copies``: the CLI makes them
over the API first), and those that could not be are named in ``elsewhere``.

Restoring writes a new data directory (never over an existing one); ``millpond up
--data-dir`` then starts it, Postgres replaying the backup's WAL to that moment.
Replication slots are not in a base backup: the realtime hubs make theirs again.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..._version import __version__
from .embedded import PORT, SUPERUSER, EmbeddedPostgres, adopt, bin_dir

FORMAT = 1
MANIFEST = "millpond-backup.json"
_SKIPPED = ("pg", "run")  # the cluster (in pg/ as a base backup) and its socket


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says what to do."""


@dataclass(frozen=True)
class Manifest:
    format: int
    millpond: str
    postgres: str
    created: str
    elsewhere: tuple[str, ...] = ()
    """``owner/name (cluster)`` of each database on another cluster not in the backup."""
    copies: tuple[str, ...] = ()
    """The per-database backups in the archive (``clusters/…``) of those that are."""

    @classmethod
    def read(cls, text: str) -> Manifest:
        try:
            raw = json.loads(text)
            manifest = cls(
                int(raw["format"]),
                str(raw["millpond"]),
                str(raw["postgres"]),
                str(raw["created"]),
                tuple(str(e) for e in raw.get("elsewhere") or ()),
                tuple(str(e) for e in raw.get("copies") or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"not a millpond backup: its {MANIFEST} is unreadable") from exc
        if manifest.format != FORMAT:
            raise BackupError(
                f"a backup of format {manifest.format}; this millpond reads format {FORMAT}"
            )
        return manifest

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "elsewhere": list(self.elsewhere), "copies": list(self.copies)}


def elsewhere(data_dir: Path, control_database: str = "millpond") -> list[tuple[str, str]]:
    """(owner/name, cluster) of each database that lives on another cluster than the
    embedded one of ``data_dir``."""
    pg = EmbeddedPostgres(data_dir)
    if not (pg.pgdata / "PG_VERSION").exists() or not pg.is_running():
        return []  # no installation to back up: create() says so
    try:
        with psycopg.connect(pg.url(control_database)) as conn:
            rows = conn.execute(
                "SELECT u.username || '/' || d.name, d.cluster_id"
                " FROM public.databases d JOIN public.users u ON u.id = d.owner_id"
                " WHERE d.cluster_id <> 'default' ORDER BY 1"
            ).fetchall()
    except (psycopg.Error, OSError):  # one that never started: no control database yet
        return []
    return [(str(name), str(cluster)) for name, cluster in rows]


def copy_name(database: str, cluster: str) -> str:
    """Where the per-database backup of ``database`` (owner/name) on ``cluster`` goes in
    the archive."""
    owner, _, name = database.partition("/")
    return f"clusters/{cluster}/{owner}-{name}.mpdb"


def create(
    data_dir: Path,
    out: Path,
    progress: bool = False,
    control_database: str = "millpond",
    copies: dict[str, Path] | None = None,
) -> Manifest:
    """Back up the installation in ``data_dir`` (its embedded Postgres running) to ``out``;
    ``progress``: pg_basebackup shows its progress on stderr; ``copies``: per-database
    backups of databases on other clusters to add (:func:`copy_name` → file)."""
    pg = EmbeddedPostgres(data_dir)
    if not (pg.pgdata / "PG_VERSION").exists():
        raise BackupError(
            f"no millpond installation in {data_dir} (no embedded Postgres in {pg.pgdata});"
            " with an external Postgres (MILLPOND_DATABASE_URL), back it up with its own"
            " tools (pg_basebackup, pg_dump) and keep the data directory's files"
        )
    if not pg.is_running():
        raise BackupError(
            f"the embedded Postgres of {data_dir} is not running: start it with"
            f" `millpond up --data-dir {data_dir}`, then back up"
        )
    if out.exists():
        raise BackupError(f"{out} exists: give another file, or remove it first")
    copies = copies or {}
    manifest = Manifest(
        FORMAT,
        __version__,
        (pg.pgdata / "PG_VERSION").read_text().strip(),
        datetime.datetime.now(datetime.UTC).isoformat(),
        tuple(
            f"{name} ({cluster})"
            for name, cluster in elsewhere(data_dir, control_database)
            if copy_name(name, cluster) not in copies
        ),
        tuple(sorted(copies)),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".millpond-backup-") as tmp:
        base = Path(tmp) / "pg"
        _basebackup(pg, base, progress)
        partial = Path(tmp) / "backup.tar"
        with tarfile.open(partial, "w") as archive:
            _add_text(archive, MANIFEST, json.dumps(manifest.as_json(), indent=2) + "\n")
            for name in sorted(os.listdir(base)):
                archive.add(base / name, arcname=f"pg/{name}")
            for entry in sorted(data_dir.iterdir()):
                if entry.name not in _SKIPPED and not entry.is_symlink():
                    archive.add(entry, arcname=f"data/{entry.name}")
            for name in sorted(copies):
                archive.add(copies[name], arcname=name)
        os.replace(partial, out)  # whole or not at all
    out.chmod(0o600)  # it holds every secret of the installation
    return manifest


def restore(archive_path: Path, data_dir: Path) -> Manifest:
    """Write the installation of the backup ``archive_path`` into the new ``data_dir``."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(
            f"{data_dir} is not empty: restore into a new directory (nothing is overwritten)"
        )
    made = not data_dir.exists()
    try:
        with tarfile.open(archive_path, "r") as archive:
            manifest = Manifest.read(_read_text(archive, MANIFEST))
            members = archive.getmembers()
            names = {m.name for m in members}
            if not {"pg/base.tar.gz", "pg/pg_wal.tar.gz"} <= names:
                raise BackupError(f"{archive_path} holds no cluster (pg/base.tar.gz, pg_wal)")
            data_dir.mkdir(parents=True, exist_ok=True)
            data_dir.chmod(0o700)
            _restore_into(archive, members, data_dir)
    except BaseException as exc:
        if data_dir.exists():  # no half-restored installation left behind
            if made:
                shutil.rmtree(data_dir)
            else:
                _empty(data_dir)
        if isinstance(exc, (OSError, tarfile.TarError, KeyError)):
            raise BackupError(f"cannot restore {archive_path}: {exc}") from exc
        raise
    return manifest


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _restore_into(archive: tarfile.TarFile, members: list[tarfile.TarInfo], data_dir: Path) -> None:
    prefix = "data/"
    files = [m for m in members if m.name.startswith(prefix) and m.name != prefix]
    for member in files:
        member.name = member.name[len(prefix) :]
    archive.extractall(data_dir, members=files, filter="data")  # nothing outside data_dir
    pgdata = data_dir / "pg"
    pgdata.mkdir(mode=0o700)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        for name in ("base.tar.gz", "pg_wal.tar.gz"):
            archive.extract(f"pg/{name}", tmp, filter="data")
        with tarfile.open(Path(tmp) / "pg" / "base.tar.gz", "r:gz") as base:
            base.extractall(pgdata, filter="data")
        with tarfile.open(Path(tmp) / "pg" / "pg_wal.tar.gz", "r:gz") as wal:
            wal.extractall(pgdata / "pg_wal", filter="data")
    pgdata.chmod(0o700)
    adopt(pgdata)


def _basebackup(pg: EmbeddedPostgres, into: Path, progress: bool) -> None:
    command = [
        str(bin_dir() / "pg_basebackup"),
        "--host",
        str(pg.socket_dir),
        "--port",
        str(PORT),
        "--username",
        SUPERUSER,
        "--no-password",
        "--pgdata",
        str(into),
        "--format=tar",
        "--gzip",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-slot",
    ]
    if progress:
        command.append("--progress")
    env = {**os.environ, "PGPASSWORD": pg.password_file.read_text().strip()}
    done = subprocess.run(command, env=env, capture_output=not progress, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"pg_basebackup failed: {(done.stderr or '').strip()}")


def _add_text(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.datetime.now(datetime.UTC).timestamp())
    archive.addfile(info, io.BytesIO(data))


def _read_text(archive: tarfile.TarFile, name: str) -> str:
    member = archive.extractfile(name)
    if member is None:
        raise BackupError(f"not a millpond backup: no {name}")
    return member.read().decode()
