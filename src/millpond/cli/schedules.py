"""``millpond schedules OWNER/NAME``: the scheduled reducer runs of a module's database."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models.modules import Schedule
from ._context import database_name, state
from ._output import show_list


def schedules(
    ctx: typer.Context,
    database: Annotated[
        str,
        typer.Argument(metavar="OWNER/NAME", help="The database.", callback=database_name),
    ],
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10000, help="Show at most this many.")
    ] = 1000,
) -> None:
    """The database's scheduled reducer runs, soonest first: one-shot (`due`) and
    recurring rows of its schedule tables (@table(scheduled=...)), and, last, one-shot
    runs that failed every attempt (`failed`, with their last error; delete the row or
    update its scheduled_at to run it again). Owner and admins."""
    st = state(ctx)
    with st.client() as mp:
        show_list(st.format, mp.modules.schedules(database, limit=limit), Schedule)
