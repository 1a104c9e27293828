"""``millpond user``: user accounts (an admin key is needed for all but seeing yourself)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models import User
from . import _profiles as profiles
from ._context import confirm, group, path_segment, state
from ._output import show_action, show_list, show_one
from ._paging import All, Limit, whole

app = group(
    "Users (admin): create, list, inspect and delete them. A new user comes with a first API "
    "key, shown once."
)

Username = Annotated[
    str,
    typer.Argument(help="The user's username.", callback=path_segment, show_default=False),
]


@app.command("list")
def list_(ctx: typer.Context, limit: Limit = 100, every: All = False) -> None:
    """List the users, oldest first (admin)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.users.list(), limit, every)
    show_list(st.format, found, User)


@app.command()
def create(
    ctx: typer.Context,
    username: Username,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    save_profile: Annotated[
        str | None,
        typer.Option(
            "--save-profile",
            metavar="NAME",
            help="Also save the new key as login profile NAME, to act as the user: "
            "`millpond --profile NAME …` or MILLPOND_PROFILE=NAME.",
        ),
    ] = None,
) -> None:
    """Create a user and their first API key (admin). Prints both; the key's secret is shown
    this once only: hand it to the user (or keep it as a profile: --save-profile)."""
    st = state(ctx)
    if save_profile is not None:
        profiles.check_name(save_profile)
    with st.client() as mp:
        created = mp.users.create(username, admin)
    if save_profile is not None:
        path = profiles.put(profiles.Profile(save_profile, st.url, created.api_key.secret))
        typer.echo(f"saved {username}'s key as profile {save_profile} in {path}", err=True)
    show_one(st.format, created)


@app.command()
def get(ctx: typer.Context, username: Username) -> None:
    """Show one user (admins see anyone; a user only themself)."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.users.get(username))


@app.command()
def delete(
    ctx: typer.Context,
    username: Username,
    delete_databases: Annotated[
        bool,
        typer.Option(
            "--delete-databases",
            help="Also delete the databases the user owns (without it, a user who owns "
            "databases is not deleted).",
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Do not ask for confirmation (needed without a terminal)."
        ),
    ] = False,
) -> None:
    """Delete a user, their keys and service accounts (admin). Asks first unless --yes."""
    what = f"user {username}" + (" and all their databases" if delete_databases else "")
    confirm(f"Delete {what}?", yes, f"delete {what}")
    st = state(ctx)
    with st.client() as mp:
        mp.users.delete(username, delete_databases)
    show_action(st.format, {"deleted": username}, f"Deleted {what}.")
