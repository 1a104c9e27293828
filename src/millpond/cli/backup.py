"""``millpond backup`` and ``millpond restore``: a whole installation (every database, the
control database, the data directory's keys and files) to one file and back, on the
machine that runs it (see ``server/postgres/backup.py``); or, with ``--database``, one
database over the API, from anywhere, for its owner and admins (``databases.backup`` and
``databases.restore`` of the SDK; docs/databases.md#backups)."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import Millpond
from ..errors import MillpondError, NotFoundError
from ..models.backups import BackupManifest
from ._context import State, database_name, fail, state
from ._output import OutputFormat

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="MILLPOND_DATA_DIR",
        help="The installation's data directory (as `millpond up` takes it).",
    ),
]
Database = Annotated[
    str | None,
    typer.Option(
        "-d",
        "--database",
        metavar="OWNER/NAME",
        help="Only this database, over the API (the server's URL and your key, as the other "
        "commands take them): needs admin access to it.",
    ),
]
NoProgress = Annotated[
    bool, typer.Option("--no-progress", help="No progress bar (there is one on a terminal).")
]


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    # compared by name: typer may bring its own copy of click's ParameterSource
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def _progress(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


def _summary(manifest: BackupManifest) -> dict[str, Any]:
    """The manifest as the commands print it (without the roles' grants)."""
    return manifest.model_dump(mode="json", exclude={"grants"})


def backup(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="The backup file to write (must not exist)."),
    ],
    data_dir: DataDir = Path(".millpond"),
    database: Database = None,
    no_progress: NoProgress = False,
) -> None:
    """Back up the whole installation while it runs: every database and the control
    database as of one moment (pg_basebackup of the embedded Postgres), and the data
    directory's keys and files. The file holds every secret: keep it like one.
    Restore with `millpond restore FILE --data-dir NEW`. Databases on other Postgres
    clusters are added one by one, over the API with your key (docs/clusters.md).

    With --database OWNER/NAME, back up that one database instead, through the server's
    API: its schema and rows as pg_dump writes them (docs/databases.md#backups); restore
    it with `millpond restore FILE --database OWNER/NAME`."""
    if database is not None:
        if _from_command_line(ctx, "data_dir"):
            raise typer.BadParameter("give --database or --data-dir, not both", param_hint="'-d'")
        _backup_database(state(ctx), database_name(database), output, _progress(no_progress))
        return
    from ..server.config import Settings
    from ..server.postgres.backup import BackupError, create

    st = state(ctx)
    control = Settings().control_database
    with tempfile.TemporaryDirectory(dir=output.resolve().parent, prefix=".millpond-") as tmp:
        copies = _copies(st, data_dir.resolve(), control, Path(tmp))
        try:  # pg_basebackup's progress on a terminal
            manifest = create(
                data_dir.resolve(), output.resolve(), sys.stderr.isatty(), control, copies
            )
        except BackupError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    size = output.stat().st_size
    _say_clusters(manifest.copies, manifest.elsewhere)
    fmt = st.format
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"file": str(output), "bytes": size, **manifest.as_json()}))
    else:
        typer.echo(f"backed up {data_dir} to {output} ({size:,} bytes)")


def _copies(st: State, data_dir: Path, control: str, folder: Path) -> dict[str, Path]:
    """Per-database backups, over the API, of the databases on other clusters than the
    embedded one (the base backup holds only that one): archive name → file. One the
    server cannot give (no key, not running) is left out, and said."""
    from ..server.postgres.backup import copy_name, elsewhere

    found = elsewhere(data_dir, control)
    if not found:
        return {}
    copies: dict[str, Path] = {}
    try:
        with st.client() as mp:
            for database, cluster in found:
                name = copy_name(database, cluster)
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                mp.databases.backup(database, path)
                copies[name] = path
    except (MillpondError, typer.Exit) as exc:
        typer.echo(f"warning: the server did not give the other clusters' backups: {exc}", err=True)
    return copies


def _say_clusters(copies: tuple[str, ...], missing: tuple[str, ...]) -> None:
    if copies:
        typer.echo(
            f"{len(copies)} database(s) of other Postgres clusters are in the file as"
            " per-database backups (clusters/…, each as of its own moment); to restore one,"
            " extract it (`tar -xf FILE clusters/…`) and run `millpond restore FILE.mpdb"
            " --database OWNER/NAME` (docs/clusters.md)",
            err=True,
        )
    if missing:
        typer.echo(
            f"warning: {len(missing)} database(s) live on other Postgres clusters and are not"
            f" in this backup: {', '.join(missing)}; back each up with"
            " `millpond backup --database OWNER/NAME -o FILE` (docs/clusters.md)",
            err=True,
        )


def _backup_database(st: State, database: str, output: Path, progress: bool) -> None:
    if output.exists():
        fail(f"{output} exists: give another file, or remove it first")
    st.database = database
    with st.client() as mp:
        manifest = mp.databases.backup(database, output, progress=progress)
    size = output.stat().st_size
    if st.format is OutputFormat.json:
        typer.echo(json.dumps({"file": str(output), "bytes": size, **_summary(manifest)}))
    else:
        typer.echo(f"backed up {database} to {output} ({size:,} bytes)")


def restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A file `millpond backup` wrote.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="The new data directory (must not exist, or be empty), for a backup of the "
            "whole installation.",
            show_default=False,
        ),
    ] = None,
    database: Database = None,
    no_progress: NoProgress = False,
) -> None:
    """Restore a backup into a new data directory, then start it with
    `millpond up --data-dir DIR` (Postgres replays the backup to its moment on start).
    Nothing existing is overwritten.

    With --database OWNER/NAME, restore a backup of one database (`millpond backup
    --database`) into that database, through the server's API: it is created (private,
    with the backup's storage limit) when it does not exist, and must hold no tables or
    other objects when it does. All or nothing: a failed restore changes nothing."""
    if (data_dir is None) == (database is None):
        raise typer.BadParameter(
            "give --data-dir DIR (a whole installation) or --database OWNER/NAME (one "
            "database), one of them",
            param_hint="'--data-dir' / '--database'",
        )
    if database is not None:
        _restore_database(state(ctx), database_name(database), file, _progress(no_progress))
        return
    assert data_dir is not None
    from ..server.postgres.backup import BackupError
    from ..server.postgres.backup import restore as restore_backup

    fmt = state(ctx).format
    try:
        manifest = restore_backup(file.resolve(), data_dir.resolve())
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"data_dir": str(data_dir), **manifest.as_json()}))
    else:
        typer.echo(
            f"restored the backup of {manifest.created} into {data_dir}:"
            f" start it with `millpond up --data-dir {data_dir}`"
        )


def _restore_database(st: State, database: str, file: Path, progress: bool) -> None:
    from ..client._backups import read_manifest

    if not file.is_file():
        raise typer.BadParameter(f"no file {str(file)!r}", param_hint="'FILE'")
    manifest = read_manifest(file)  # not a backup: said before anything is made
    st.database = database
    with st.client() as mp:
        created = _ensure_database(mp, database, manifest)
        try:
            result = mp.databases.restore(database, file, progress=progress)
        except BaseException:
            if created:  # nothing left behind: the database made for the restore goes too
                with contextlib.suppress(MillpondError):
                    mp.databases.delete(database)
            raise
    if st.format is OutputFormat.json:
        summary = {"source": manifest.database, **_summary(manifest)}
        del summary["database"]
        typer.echo(
            json.dumps(
                {
                    "database": result.database,
                    "created_database": created,
                    "bytes": result.bytes,
                    "elapsed_ms": result.elapsed_ms,
                    **summary,
                }
            )
        )
        return
    made = " (created it, private)" if created else ""
    typer.echo(f"restored the backup of {manifest.database} into {result.database}{made}")
    if not manifest.is_private and created:
        typer.echo(
            f"hint: {manifest.database} was public: make this one public too with"
            f" `millpond db update {database} --public`",
            err=True,
        )


def _ensure_database(mp: Millpond, database: str, manifest: BackupManifest) -> bool:
    """Whether the database had to be created (yours only: a database is its creator's)."""
    try:
        mp.databases.get(database)
        return False
    except NotFoundError:
        pass
    owner, _, name = database.partition("/")
    me = mp.me().user.username
    if owner.lower() != me.lower():
        raise MillpondError(
            f"no database {database} visible to you, and you can only create databases of"
            f" your own ({me}/…): create it as {owner} with `millpond db create {name}`"
        )
    mp.databases.create(name, is_private=True, storage_limit_bytes=manifest.storage_limit_bytes)
    return True
