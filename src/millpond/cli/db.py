"""``millpond db``: create, list, inspect, change, delete and share databases."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ..client._connections import conninfo, gateway_params
from ..models import Collaborator, Database
from ._context import confirm, database_name, group, path_segment, state
from ._output import show_action, show_list, show_one
from ._paging import All, Limit, whole

app = group(
    "Databases: create, list, inspect, change, delete and share them. Databases are named "
    "OWNER/NAME."
)


class Role(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"


DbArg = Annotated[
    str,
    typer.Argument(
        metavar="OWNER/NAME",
        help="The database, as OWNER/NAME (e.g. alice/shop).",
        callback=database_name,
        show_default=False,
    ),
]
StorageLimit = Annotated[
    int | None,
    typer.Option(
        "--storage-limit",
        metavar="BYTES",
        min=1,
        help="Cap the database's size at this many bytes; writes that would grow it "
        "beyond are rolled back.",
    ),
]


@app.command("list")
def list_(ctx: typer.Context, limit: Limit = 100, every: All = False) -> None:
    """List the databases you own or collaborate on."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.databases.list(), limit, every)
    show_list(st.format, found, Database)


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="Name of the new database, without the owner: it is created under your "
            "account, as YOU/NAME.",
            show_default=False,
        ),
    ],
    public: Annotated[
        bool,
        typer.Option(
            "--public",
            help="Let anyone with a key read it (databases are private by default).",
        ),
    ] = False,
    storage_limit: StorageLimit = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="NAME",
            help="Create it on this Postgres cluster (server admins only; "
            "`millpond clusters list` shows them) [default: the server's placement picks "
            "an active one].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a database owned by you; prints it."""
    if "/" in name:
        raise typer.BadParameter(
            "give the name without the owner: the database is created under your account",
            param_hint="'NAME'",
        )
    st = state(ctx)
    with st.client() as mp:
        created = mp.databases.create(name, not public, storage_limit, cluster=cluster)
        show_one(st.format, created)


@app.command()
def get(ctx: typer.Context, db: DbArg) -> None:
    """Show one database: owner, visibility, size, storage limit, your role."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.databases.get(db))


@app.command()
def update(
    ctx: typer.Context,
    db: DbArg,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NEW_NAME",
            help="Rename it (keeps the owner); clients must use the new name.",
        ),
    ] = None,
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private",
            help="Make it readable by anyone with a key, or only by its owner and collaborators.",
            show_default=False,
        ),
    ] = None,
    storage_limit: StorageLimit = None,
    no_storage_limit: Annotated[
        bool,
        typer.Option("--no-storage-limit", help="Remove the storage limit."),
    ] = False,
) -> None:
    """Rename a database, change its visibility or its storage limit; prints it. Options not
    given are left as they are."""
    if storage_limit is not None and no_storage_limit:
        raise typer.BadParameter(
            "give --storage-limit or --no-storage-limit, not both", param_hint="'--storage-limit'"
        )
    if name is None and public is None and storage_limit is None and not no_storage_limit:
        raise typer.BadParameter(
            "nothing to change: pass --name, --public/--private, --storage-limit or "
            "--no-storage-limit",
            param_hint="options",
        )
    is_private = None if public is None else not public
    st = state(ctx)
    with st.client() as mp:
        updated = mp.databases.update(
            db, name, is_private, storage_limit, clear_storage_limit=no_storage_limit
        )
        show_one(st.format, updated)


@app.command()
def delete(
    ctx: typer.Context,
    db: DbArg,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Do not ask for confirmation (needed without a terminal)."
        ),
    ] = False,
) -> None:
    """Delete a database and all its data, for good (owner only). Asks first unless --yes."""
    confirm(f"Delete database {db} and all its data?", yes, f"delete {db}")
    st = state(ctx)
    with st.client() as mp:
        mp.databases.delete(db)
    show_action(st.format, {"deleted": db}, f"Deleted database {db}.")


@app.command()
def collaborators(ctx: typer.Context, db: DbArg, limit: Limit = 100, every: All = False) -> None:
    """List who a database is shared with, and their roles."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.databases.collaborators(db), limit, every)
    show_list(st.format, found, Collaborator)


@app.command()
def share(
    ctx: typer.Context,
    db: DbArg,
    username: Annotated[
        str,
        typer.Argument(
            help="The user to share it with.", callback=path_segment, show_default=False
        ),
    ],
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="read: query read-only; write: also change data and tables; admin: also "
            "share it and change its settings.",
        ),
    ] = Role.read,
) -> None:
    """Share a database with a user (or change their role); prints the collaborator."""
    st = state(ctx)
    with st.client() as mp:
        show_one(
            st.format,
            mp.databases.add_collaborator(db, username, role.value),
        )


@app.command()
def unshare(
    ctx: typer.Context,
    db: DbArg,
    username: Annotated[
        str,
        typer.Argument(
            help="The collaborator to remove.", callback=path_segment, show_default=False
        ),
    ],
) -> None:
    """Stop sharing a database with a user."""
    st = state(ctx)
    with st.client() as mp:
        mp.databases.remove_collaborator(db, username)
    show_action(
        st.format,
        {"database": db, "removed": username},
        f"{username} no longer has access to {db}.",
    )


@app.command()
def connect(
    ctx: typer.Context,
    db: DbArg,
    port: Annotated[
        int,
        typer.Option(
            envvar="MILLPOND_GATEWAY_PORT", help="The gateway's port (`millpond up` prints it)."
        ),
    ] = 5433,
    host: Annotated[
        str | None, typer.Option(help="The gateway's host [default: the host of --url].")
    ] = None,
    sslmode: Annotated[
        str | None,
        typer.Option(help="libpq sslmode [default: prefer on loopback, else require]."),
    ] = None,
    with_password: Annotated[
        bool, typer.Option("--with-password", help="Put the API key in the printed DSN.")
    ] = False,
    psql: Annotated[
        bool, typer.Option("--psql", help="Run psql on the database instead of printing.")
    ] = False,
) -> None:
    """Connect directly, through the Postgres gateway: print a libpq connection string
    (JSON: its parts) or, with --psql, open psql on it.

    The password is your API key; it is left out of the printed string unless
    --with-password, and handed to psql in PGPASSWORD, never on its command line."""
    st = state(ctx)
    with st.client() as mp:
        mp.databases.get(db)  # a clear error now rather than a refused login later
        key = mp._transport.config.api_key
        parts = gateway_params(mp._transport.config, db, port, host=host, sslmode=sslmode)
    if psql:
        _run_psql(conninfo(**parts), key)
    shown = conninfo(**parts, **({"password": key} if with_password else {}))
    if st.format == "table":
        typer.echo(shown)
    else:
        typer.echo(json.dumps({**parts, "port": int(parts["port"]), "dsn": shown}, indent=2))


def _run_psql(dsn: str, key: str) -> NoReturn:
    found = shutil.which("psql")
    if found is None:
        spec = importlib.util.find_spec("pgserver")
        if spec is not None and spec.submodule_search_locations:
            bundled = Path(next(iter(spec.submodule_search_locations))) / "pginstall/bin/psql"
            found = str(bundled) if bundled.exists() else None
    if found is None:
        typer.echo(
            "error: psql is not installed (e.g. apt-get install postgresql-client);"
            " print the connection string without --psql instead",
            err=True,
        )
        raise typer.Exit(1)
    os.execve(found, [found, dsn], {**os.environ, "PGPASSWORD": key})
