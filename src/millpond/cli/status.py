"""``millpond health`` and ``millpond me``: is the server up, and who am I."""

from __future__ import annotations

import typer

from ._context import state
from ._output import show_one


def health(ctx: typer.Context) -> None:
    """Check the server and its Postgres (needs no key). Exits 1 if the server is degraded."""
    st = state(ctx)
    with st.client(need_key=False) as mp:
        result = mp.health()
    show_one(st.format, result)
    if result.status != "ok":
        raise typer.Exit(1)


def me(ctx: typer.Context) -> None:
    """Show who the API key belongs to: the user, the service account if any, the key."""
    st = state(ctx)
    with st.client() as mp:
        show_one(st.format, mp.me())
