"""``millpond schedules OWNER/NAME``: the scheduled reducer runs of a module's database."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models.modules import Schedule
from ._context import database_name, state
from ._output import show_list
from ._paging import All, Limit, capped

SCHEDULES_MOST = 10000
"""The most schedules the server lists (it has no cursor to page further)."""


def schedules(
    ctx: typer.Context,
    database: Annotated[
        str,
        typer.Argument(metavar="OWNER/NAME", help="The database.", callback=database_name),
    ],
    limit: Limit = 100,
    every: All = False,
) -> None:
    """The database's scheduled reducer runs, soonest first: one-shot (`due`) and
    recurring rows of its schedule tables (@table(scheduled=...)), and, last, one-shot
    runs that failed every attempt (`failed`, with their last error; delete the row or
    update its scheduled_at to run it again). Owner and admins; the server lists 10000 at
    most."""
    st = state(ctx)
    with st.client() as mp:

        def fetch(n: int) -> list[Schedule]:
            return mp.modules.schedules(database, limit=n)

        found = capped(fetch, SCHEDULES_MOST, limit, every)
    show_list(st.format, found, Schedule)
