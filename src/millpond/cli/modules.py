"""``millpond publish``, ``call``, ``logs`` and ``module …``: a database's module."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client._async.modules import read_module
from ..models.modules import LogLine, ModuleVersion
from ._context import database_name, fail, group, state
from ._output import OutputFormat, show_list, show_one, to_json
from ._paging import All, Limit, whole

app = group(
    "A database's module: its versions, one version's source, rolling back. Publish with "
    "`millpond publish`, call reducers with `millpond call`, read logs with `millpond logs`."
)

Database = Annotated[
    str,
    typer.Argument(metavar="OWNER/NAME", help="The database.", callback=database_name),
]
DeleteData = Annotated[
    bool,
    typer.Option(
        "--delete-data",
        help="Apply a migration that drops or rewrites data (a dropped table or column, a "
        "changed type or key). Without it such a publish is refused and the diff printed.",
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the migration; change nothing.")]


def publish(
    ctx: typer.Context,
    database: Database,
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="The module: a .py file, or a package folder (__init__.py)."
        ),
    ],
    entry: Annotated[
        str | None,
        typer.Option("--entry", metavar="MODULE", help="The module to import (default: PATH's)."),
    ] = None,
    delete_data: DeleteData = False,
    dry_run: DryRun = False,
) -> None:
    """Publish a module to a database: its tables are created or migrated, its reducers
    replace the running ones without dropping calls in flight.

    Additive changes (new tables, new columns with a default or nullable, new indexes) are
    applied; destructive ones need --delete-data. The first publish runs the module's @init.
    """
    st = state(ctx)
    try:
        files = read_module(path)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="'PATH'") from None
    with st.client() as mp:
        result = mp.modules.publish(
            database, files, entry=entry, allow_destructive=delete_data, dry_run=dry_run
        )
    if st.format is OutputFormat.json:
        typer.echo(to_json(result.model_dump(mode="json")))
        return
    what = "would change" if dry_run else f"published version {result.version}"
    typer.echo(f"{database}: {what}" + (" (first publish: @init ran)" if result.first else ""))
    typer.echo(result.diff or "no schema change")
    if result.swap_ms is not None:
        typer.echo(f"new workers ready in {result.swap_ms:.0f} ms")


def call(
    ctx: typer.Context,
    database: Database,
    reducer: Annotated[str, typer.Argument(metavar="REDUCER", help="The reducer to call.")],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[ARG]...",
            help="Its arguments, each a JSON value ('\"hi\"', 42, '{\"x\": 1}'); or one JSON "
            "object with --named.",
        ),
    ] = None,
    named: Annotated[
        bool, typer.Option("--named", help="The one ARG is a JSON object of arguments by name.")
    ] = False,
) -> None:
    """Call a reducer: one transaction, committed when it returns. Prints its outcome;
    exits 1 if it failed (with the reducer's message)."""
    st = state(ctx)
    values = [_json_arg(i, text) for i, text in enumerate(args or [])]
    with st.client() as mp:
        if named:
            if len(values) != 1 or not isinstance(values[0], dict):
                raise typer.BadParameter("--named takes one JSON object", param_hint="'ARG'")
            result = mp.modules.call(database, reducer, **values[0])
        else:
            result = mp.modules.call(database, reducer, *values)
    if st.format is OutputFormat.json:
        typer.echo(to_json(result.model_dump(mode="json", by_alias=True)))
    else:
        returned = "" if result.return_value is None else f": {json.dumps(result.return_value)}"
        typer.echo(f"{reducer} committed{returned}")


def _json_arg(index: int, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise typer.BadParameter(
            f"argument {index + 1} is not JSON: {text!r} (a string is '\"{text}\"')",
            param_hint="'ARG'",
        ) from None


def logs(
    ctx: typer.Context,
    database: Database,
    lines: Annotated[
        int, typer.Option("-n", "--lines", min=1, max=1000, help="How many recent lines.")
    ] = 100,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, help="Seconds between checks with --follow.")
    ] = 1.0,
) -> None:
    """Print the module's log lines (ctx.log, print) and reducer failures with their
    tracebacks, oldest first: JSON lines, or text with --format table."""
    st = state(ctx)
    with st.client() as mp:
        after = _show_lines(st.format, mp.modules.logs(database, last=lines), 0)
        while follow:
            try:
                time.sleep(poll)
            except KeyboardInterrupt:
                return
            after = _show_lines(st.format, mp.modules.logs(database, after=after), after)


def _show_lines(fmt: OutputFormat, items: list[LogLine], after: int) -> int:
    for line in items:
        if fmt is OutputFormat.json:  # one JSON document per line, for `| jq` and scripts
            typer.echo(json.dumps(line.model_dump(mode="json"), ensure_ascii=False))
        else:
            where = f" {line.reducer}" if line.reducer else ""
            typer.echo(
                f"{line.ts:%Y-%m-%d %H:%M:%S} {line.level:<7} v{line.version}{where}: "
                f"{line.message}"
            )
            if line.traceback:
                typer.echo(line.traceback.rstrip())
        after = max(after, line.id)
    return after


@app.command()
def versions(
    ctx: typer.Context, database: Database, limit: Limit = 100, every: All = False
) -> None:
    """List the module's published versions, newest (the running one) first."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.modules.versions(database), limit, every)
    show_list(st.format, found, ModuleVersion)


@app.command()
def show(
    ctx: typer.Context,
    database: Database,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, help="The version.")],
) -> None:
    """Show one version: its files and definition (JSON), or its source (table format)."""
    st = state(ctx)
    with st.client() as mp:
        detail = mp.modules.version(database, version)
    if st.format is OutputFormat.json:
        show_one(st.format, detail)
        return
    for name, text in sorted(detail.files.items()):
        typer.echo(f"# --- {name} (version {detail.version}) ---\n{text}")


@app.command()
def rollback(
    ctx: typer.Context,
    database: Database,
    version: Annotated[
        int, typer.Argument(metavar="VERSION", min=1, help="The version to publish again.")
    ],
    delete_data: DeleteData = False,
    dry_run: DryRun = False,
) -> None:
    """Publish an earlier version's files again, as a new version (its migration is
    checked like any publish)."""
    st = state(ctx)
    with st.client() as mp:
        result = mp.modules.rollback(
            database, version, allow_destructive=delete_data, dry_run=dry_run
        )
    if st.format is OutputFormat.json:
        typer.echo(to_json(result.model_dump(mode="json")))
        return
    if dry_run:
        typer.echo(f"rolling back to version {version} would change:")
    else:
        typer.echo(f"{database}: version {result.version} has version {version}'s files")
    typer.echo(result.diff or "no schema change")


@app.command()
def schema(ctx: typer.Context, database: Database) -> None:
    """Print the running version's definition (tables, reducers, records) as JSON."""
    st = state(ctx)
    with st.client() as mp:
        data = mp.modules.schema(database)
    if not data:
        fail(f"{database} has no module")
    typer.echo(to_json(data))


@app.command()
def settings(
    ctx: typer.Context,
    database: Database,
    anonymous: Annotated[
        bool | None,
        typer.Option(
            "--anonymous/--no-anonymous",
            help="Admit clients without an account as anonymous identities (public "
            "databases; on by default), or refuse them and close their connections.",
        ),
    ] = None,
) -> None:
    """Show the module's settings, or change them."""
    st = state(ctx)
    with st.client() as mp:
        if anonymous is None:
            found = mp.modules.settings(database)
        else:
            found = mp.modules.update_settings(database, anonymous_access=anonymous)
    show_one(st.format, found)
