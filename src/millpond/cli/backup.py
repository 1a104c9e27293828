"""``millpond backup`` and ``millpond restore``: a whole installation (every database, the
control database, the data directory's keys and files) to one file and back, on the
machine that runs it (see ``server/postgres/backup.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._context import state
from ._output import OutputFormat

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="MILLPOND_DATA_DIR",
        help="The installation's data directory (as `millpond up` takes it).",
    ),
]


def backup(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="The backup file to write (must not exist)."),
    ],
    data_dir: DataDir = Path(".millpond"),
) -> None:
    """Back up the whole installation while it runs: every database and the control
    database as of one moment (pg_basebackup of the embedded Postgres), and the data
    directory's keys and files. The file holds every secret: keep it like one.
    Restore with `millpond restore FILE --data-dir NEW`."""
    from ..server.postgres.backup import BackupError, create

    fmt = state(ctx).format
    try:  # pg_basebackup's progress on a terminal
        manifest = create(data_dir.resolve(), output.resolve(), progress=sys.stderr.isatty())
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    size = output.stat().st_size
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"file": str(output), "bytes": size, **manifest.__dict__}))
    else:
        typer.echo(f"backed up {data_dir} to {output} ({size:,} bytes)")


def restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A file `millpond backup` wrote.")],
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", help="The new data directory (must not exist, or be empty)."),
    ],
) -> None:
    """Restore a backup into a new data directory, then start it with
    `millpond up --data-dir DIR` (Postgres replays the backup to its moment on start).
    Nothing existing is overwritten."""
    from ..server.postgres.backup import BackupError
    from ..server.postgres.backup import restore as restore_backup

    fmt = state(ctx).format
    try:
        manifest = restore_backup(file.resolve(), data_dir.resolve())
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"data_dir": str(data_dir), **manifest.__dict__}))
    else:
        typer.echo(
            f"restored the backup of {manifest.created} into {data_dir}:"
            f" start it with `millpond up --data-dir {data_dir}`"
        )
