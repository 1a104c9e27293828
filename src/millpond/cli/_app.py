"""The root Typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from . import up

app = typer.Typer(
    name="millpond",
    help="millpond: Postgres databases, realtime, reducers and feature flags, self-hosted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("up")(up.up)


def main() -> None:
    app()


@app.callback()
def _root() -> None:
    """millpond: Postgres databases, realtime, reducers and feature flags, self-hosted."""
