"""``millpond query``: run SQL on a database over the HTTP API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._context import database_name, state
from ._output import show_query


def _read_sql(sql: str | None, file: str | None) -> str:
    if sql is not None and file is not None:
        raise typer.BadParameter("give the SQL with -q or -f, not both", param_hint="'-q' / '-f'")
    if sql is None and file is None:
        raise typer.BadParameter(
            "give the SQL: -q 'SELECT …', -f FILE, or -f - to read standard input",
            param_hint="'-q' / '-f'",
        )
    if file == "-":
        text = sys.stdin.read()
    elif file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {file}: {exc.strerror or exc}", param_hint="'-f'"
            ) from exc
    else:
        text = sql or ""
    if not text.strip():
        raise typer.BadParameter("the SQL is empty", param_hint="'-q' / '-f'")
    return text


def query(
    ctx: typer.Context,
    database: Annotated[
        str,
        typer.Option(
            "-d",
            "--database",
            metavar="OWNER/NAME",
            help="The database to run it on, as OWNER/NAME.",
            callback=database_name,
            show_default=False,
        ),
    ],
    sql: Annotated[
        str | None,
        typer.Option("-q", "--query", metavar="SQL", help="The SQL to run."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "-f",
            "--file",
            metavar="FILE",
            help="Read the SQL from FILE; '-' reads standard input.",
        ),
    ] = None,
    objects: Annotated[
        bool,
        typer.Option(
            "--objects",
            help="Rows as JSON objects keyed by column name, instead of arrays in column "
            "order (data_format=objects).",
        ),
    ] = False,
) -> None:
    """Run SQL on a database and print the result of its last statement.

    All statements run in one transaction: if one fails, none has effect. JSON output is the
    whole result (columns, data, row_count, truncated, command, elapsed_ms); --format table
    prints the rows under their column names. The server caps the rows returned (truncated:
    true when there were more); for large results connect to the database directly.
    """
    text = _read_sql(sql, file)
    st = state(ctx)
    st.sql, st.database = text, database
    with st.client() as mp:
        result = mp.query(database, text, data_format="objects" if objects else None)
    show_query(st.format, result)
