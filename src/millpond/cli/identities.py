"""``millpond identities …``: the anonymous identities of a module's database."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models.modules import AnonymousIdentity, Connection
from ._context import database_name, group, state
from ._output import show_list, show_one
from ._paging import All, Limit, capped, whole

app = group(
    "Anonymous identities: clients without an account that a public database's module "
    "admits (turn that off with `millpond module settings OWNER/NAME --no-anonymous`)."
)

IDENTITIES_MOST = 1000
"""The most identities the server lists (it has no cursor to page further)."""

Database = Annotated[
    str,
    typer.Argument(metavar="OWNER/NAME", help="The database.", callback=database_name),
]


@app.command("list")
def list_(
    ctx: typer.Context,
    database: Database,
    revoked: Annotated[
        bool, typer.Option("--revoked", help="Include the revoked identities.")
    ] = False,
    limit: Limit = 100,
    every: All = False,
) -> None:
    """List the database's anonymous identities, newest first (owner and admins; the
    server lists the newest 1000 at most)."""
    st = state(ctx)
    with st.client() as mp:

        def fetch(n: int) -> list[AnonymousIdentity]:
            return mp.modules.identities(database, limit=n, revoked=revoked)

        found = capped(fetch, IDENTITIES_MOST, limit, every)
    show_list(st.format, found, AnonymousIdentity)


@app.command()
def create(ctx: typer.Context, database: Database) -> None:
    """Make a new anonymous identity and print its token (shown once). Clients normally
    get theirs themselves (`Millpond.anonymous(...)` in the SDK)."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.modules.create_identity(database))


@app.command()
def revoke(
    ctx: typer.Context,
    database: Database,
    identity: Annotated[
        str, typer.Argument(metavar="IDENTITY", help="The identity (64 hex digits).")
    ],
) -> None:
    """Revoke an anonymous identity: its token is refused and its realtime connections
    close at once, on every replica."""
    st = state(ctx)
    with st.client() as mp:
        mp.modules.revoke_identity(database, identity)
    typer.echo(f"revoked {identity} of {database}")


@app.command()
def connected(
    ctx: typer.Context, database: Database, limit: Limit = 100, every: All = False
) -> None:
    """Who is connected now: the database's open realtime connections, with their
    identities (a module with @client_connected or @client_disconnected records them)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.modules.connections(database), limit, every)
    show_list(st.format, found, Connection)
