"""``millpond clusters``: the Postgres clusters databases live on, and moving a database
between them (server admins only). See docs/clusters.md."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..models import ClusterInfo, DatabaseMoved
from ._context import database_name, fail, group, path_segment, state
from ._output import show_action, show_list, show_one, size
from ._paging import All, Limit, whole

app = group(
    "Postgres clusters (server admin): list, add, drain, activate and remove them, and move "
    "a database from one to another. The home cluster is the one the server starts on; new "
    "databases go to an active cluster, never to a draining one."
)

ClusterName = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The cluster's name (`millpond clusters list` shows them).",
        callback=path_segment,
        show_default=False,
    ),
]


@app.command("list")
def list_(ctx: typer.Context, limit: Limit = 100, every: All = False) -> None:
    """List the clusters, the home one first: their state, how many databases live on
    each, and whether the server reaches it now (with its Postgres version)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.clusters.list(), limit, every)
    show_list(st.format, found, ClusterInfo)


@app.command()
def get(ctx: typer.Context, name: ClusterName) -> None:
    """Show one cluster; when the server cannot reach it, `error` says why."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.clusters.get(name))


@app.command()
def add(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="A libpq URL or connection string of a role with CREATEDB and CREATEROLE "
            "(e.g. postgresql://admin:PASSWORD@10.0.0.2/postgres), or - to read it from "
            "the first line of standard input, which keeps its password out of `ps` and "
            "shell history.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="What to call it: 1-63 lowercase letters, digits, '_' or '-' "
            "[default: cluster-N].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Add a Postgres cluster by URL; prints it (never its URL: the server keeps that
    sealed). The server connects first and refuses, changing nothing, a Postgres it cannot
    reach, one that cannot host databases (the role's rights, wal_level, a standby) or one
    that already is a cluster.

    \b
        millpond clusters add "$NEW_CLUSTER_URL" --name pg2
        printf '%s\\n' "$NEW_CLUSTER_URL" | millpond clusters add - --name pg2
    """
    if name is not None:
        path_segment(name)
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.clusters.add(_url(url), name=name))


def _url(given: str) -> str:
    """The URL argument, or the first line of stdin for ``-``."""
    if given != "-":
        return given
    line = sys.stdin.readline().strip()
    if not line:
        fail("URL -: give the cluster's URL on the first line of standard input")
    return line


@app.command()
def drain(ctx: typer.Context, name: ClusterName) -> None:
    """Drain a cluster: no new database goes to it; those on it stay and keep working
    until they are moved (`millpond clusters move`). `millpond clusters activate` ends it."""
    st = state(ctx)
    with st.client() as mp:
        info = mp.clusters.drain(name)
    text = f"Cluster {name} is draining: it takes no new databases ({_count(info)} on it)."
    show_action(st.format, info.model_dump(mode="json"), text)


@app.command()
def activate(ctx: typer.Context, name: ClusterName) -> None:
    """Activate a cluster (end a drain): new databases may be placed on it again."""
    st = state(ctx)
    with st.client() as mp:
        info = mp.clusters.activate(name)
    text = f"Cluster {name} is active: it takes new databases ({_count(info)} on it)."
    show_action(st.format, info.model_dump(mode="json"), text)


def _count(info: ClusterInfo) -> str:
    return "1 database" if info.databases == 1 else f"{info.databases} databases"


@app.command()
def remove(ctx: typer.Context, name: ClusterName) -> None:
    """Remove a cluster no database lives on (move them first: `millpond clusters move`).
    The server forgets its URL; its Postgres and whatever else it holds are left as they
    are, and it can be added again. The home cluster cannot be removed."""
    st = state(ctx)
    with st.client() as mp:
        mp.clusters.remove(name)
    show_action(
        st.format,
        {"removed": name},
        f"Removed cluster {name}; its Postgres is left as it was.",
    )


@app.command()
def move(
    ctx: typer.Context,
    db: Annotated[
        str,
        typer.Argument(
            metavar="OWNER/NAME",
            help="The database to move, as OWNER/NAME (e.g. alice/shop).",
            callback=database_name,
            show_default=False,
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="CLUSTER",
            help="The cluster to move it to (an active one).",
            callback=path_segment,
            show_default=False,
        ),
    ],
) -> None:
    """Move a database to another cluster, with downtime: its requests answer 503 (the
    SDK retries) and its realtime clients reconnect, until the copy is served from the
    target. Prints where it was, where it is, the copy's size and the downtime in ms. A
    failed move leaves it where it was. A big database may take longer than --timeout:
    pass a longer one.

    \b
        millpond clusters move alice/shop --to pg2
    """
    st = state(ctx)
    with st.client() as mp:
        moved = mp.databases.move(db, to)
    show_action(st.format, moved.model_dump(mode="json"), _moved(moved))


def _moved(moved: DatabaseMoved) -> str:
    copied = f"{moved.bytes} bytes" + (f" ({size(moved.bytes)})" if moved.bytes >= 1024 else "")
    return (
        f"Moved {moved.database} from {moved.source} to {moved.target}: {copied} copied, "
        f"{moved.downtime_ms:.0f} ms of downtime."
    )
