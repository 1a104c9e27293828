"""``millpond user``: user accounts (an admin key is needed for all but seeing yourself
and setting your own password)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..models import User
from . import _context
from . import _profiles as profiles
from ._context import confirm, fail, group, path_segment, state
from ._output import show_action, show_list, show_one
from ._paging import All, Limit, whole

app = group(
    "Users (admin): create, list, inspect and delete them. A new user comes with a first API "
    "key, shown once. Passwords (for the web console): set-password."
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


@app.command("set-password")
def set_password(
    ctx: typer.Context,
    username: Annotated[
        str | None,
        typer.Argument(
            help="Whose password (admin); without it, your own.",
            callback=lambda value: None if value is None else path_segment(value),
            show_default=False,
        ),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the new password from the first line of standard input (and, to "
            "change your own password when you have one, the current one from the second).",
        ),
    ] = False,
) -> None:
    """Set a password for logging in to the web console (10 to 1024 characters). Your
    own: asks for the current one if you have one. Another user's (admin): no current
    password needed. Asks twice, hidden, unless --password-stdin. All of the user's
    console sessions end.

    \b
        millpond user set-password                  # your own (e.g. the first admin's)
        millpond user set-password alice            # an admin resets alice's
    """
    st = state(ctx)
    with st.client() as mp:
        me = mp.me()
        own = username is None or username.lower() == me.user.username.lower()
        whose = username if username is not None and not own else me.user.username
        new, current = _read_passwords(password_stdin, own and me.has_password)
        if own:
            mp.users.set_my_password(new, current)
        else:
            mp.users.set_password(whose, new)
    show_action(
        st.format,
        {"password_set": whose},
        f"Password set for {whose}; their console sessions ended.",
    )


def _read_passwords(from_stdin: bool, need_current: bool) -> tuple[str, str | None]:
    """The new password and (when ``need_current``) the current one."""
    if from_stdin:
        lines = sys.stdin.read().splitlines()
        if not lines or (need_current and len(lines) < 2):
            then = ", then the current one on the second" if need_current else ""
            fail(f"--password-stdin: give the new password on the first line of stdin{then}")
        return lines[0], lines[1] if need_current else None
    if not _context.interactive():
        fail("no terminal to ask for the password: pipe it in with --password-stdin")
    current = typer.prompt("Current password", hide_input=True) if need_current else None
    new = typer.prompt("New password", hide_input=True, confirmation_prompt="Repeat it")
    return str(new), None if current is None else str(current)
