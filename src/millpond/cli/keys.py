"""``millpond key``: the API keys of the principal the current key belongs to."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models import ApiKey, KeyScope
from ._context import confirm, group, path_segment, state
from ._output import plural, show_action, show_list, show_one
from ._paging import All, Limit, whole

app = group(
    "API keys: create, list and revoke them. They are the keys of whoever the current key "
    "belongs to (you, or a service account)."
)

KeyName = Annotated[
    str | None,
    typer.Option("--name", metavar="NAME", help="A label to recognise the key by in `key list`."),
]
ReadOnly = Annotated[
    bool,
    typer.Option(
        "--read-only",
        help="Read and query read-only, nothing else (default: the same rights as the "
        "current key's owner).",
    ),
]
ExpiresIn = Annotated[
    int | None,
    typer.Option(
        "--expires-in",
        metavar="SECONDS",
        min=1,
        help="Expire the key after this many seconds (default: never).",
    ),
]


def scope(read_only: bool) -> KeyScope:
    return "read" if read_only else "write"


@app.command()
def create(
    ctx: typer.Context,
    name: KeyName = None,
    read_only: ReadOnly = False,
    expires_in: ExpiresIn = None,
) -> None:
    """Create an API key; prints it with its secret, which is shown this once only."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.keys.create(name, scope(read_only), expires_in))


@app.command("list")
def list_(ctx: typer.Context, limit: Limit = 100, every: All = False) -> None:
    """List the keys (ids, names, prefixes, scopes; never the secrets)."""
    st = state(ctx)
    with st.client() as mp:
        found = whole(mp.keys.list(), limit, every)
    show_list(st.format, found, ApiKey)


@app.command()
def revoke(
    ctx: typer.Context,
    key_id: Annotated[
        str | None,
        typer.Argument(
            metavar="KEY_ID",
            help="The id of the key to revoke (from `millpond key list`).",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Revoke every key, including the one in use: you will need another way in "
            "(for the first admin, the server's admin key file is not renewed).",
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="With --all: do not ask for confirmation."),
    ] = False,
) -> None:
    """Revoke one key by its id, or every key with --all. Prints how many were revoked."""
    if (key_id is None) == (not all_):
        raise typer.BadParameter("give a KEY_ID or --all (not both)", param_hint="'KEY_ID'")
    st = state(ctx)
    if key_id is not None:
        path_segment(key_id)
        with st.client() as mp:
            mp.keys.revoke(key_id)
        count = 1
    else:
        confirm("Revoke every key, including the one in use?", yes, "revoke every key")
        with st.client() as mp:
            count = mp.keys.revoke_all()
    show_action(st.format, {"count": count}, f"Revoked {plural(count, 'key')}.")
