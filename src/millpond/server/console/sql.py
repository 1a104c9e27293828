"""The SQL editor: run a database's SQL (all of it, or the selection the page's script
sends) through the query service — the same transaction, role, limits and errors as
``POST /v1/query`` — and show the last statement's result as a grid with each column's
type, or the error at its position with Postgres' detail and hint. A read-only caller
(a read-only key, or read access to the database) sees the editor in read-only mode;
the database refuses what would write. The history is kept in the browser only."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ...models import Database, QueryRequest
from ..errors import ServiceError
from ..query.adapters import dumps
from .databases import database_url
from .pages import Console, form_session, platform_page, to_login

router = APIRouter(include_in_schema=False)

SHOWN_ROWS = 500
"""Rows the grid shows (the query service caps the result at ``query_max_rows``)."""


def cell(value: Any) -> str:
    """A JSON value of the API's answer as the grid shows it (NULL is styled apart)."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def error_at(sql_text: str, position: int | None) -> dict[str, Any] | None:
    """The line of ``sql_text`` that Postgres' 1-based character ``position`` falls on,
    its number and the column to put a caret under."""
    if not position or position < 1 or position > len(sql_text) + 1:
        return None
    before = sql_text[: position - 1]
    line_no = before.count("\n") + 1
    start = before.rfind("\n") + 1
    end = sql_text.find("\n", start)
    line = sql_text[start : end if end >= 0 else len(sql_text)]
    return {"line_no": line_no, "line": line, "column": position - 1 - start}


async def _editor(
    console: Console,
    db: Database,
    status: int = 200,
    sql_text: str = "",
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    ran: str = "",
) -> HTMLResponse:
    read_only = db.role == "read" or not console.who.can_write
    return console.render(
        "sql.html",
        status,
        title=f"SQL · {db.full_name}",
        section="databases",
        db=db,
        url=database_url(db.full_name),
        read_only=read_only,
        sql_text=sql_text,
        ran_text=ran or sql_text,
        result=result,
        error=error,
        cell=cell,
        shown_rows=SHOWN_ROWS,
    )


@router.get("/databases/{owner}/{name}/sql", response_class=HTMLResponse)
async def sql_page(request: Request, owner: str, name: str) -> Response:
    async def page(console: Console) -> Response:
        return await _editor(
            console, await console.svc.databases.get(console.who, f"{owner}/{name}")
        )

    return await platform_page(request, "SQL", "databases", page)


@router.post("/databases/{owner}/{name}/sql", response_class=HTMLResponse)
async def run_sql(request: Request, owner: str, name: str) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    full_name = f"{owner}/{name}"
    text = form.get("sql", "")
    ran = form.get("selection", "") or text
    try:
        console.require_platform()
        db = await console.svc.databases.get(console.who, full_name)  # 404 before anything
    except ServiceError as exc:
        return console.error(exc, "SQL", section="databases")
    if not ran.strip():
        error: dict[str, Any] = {"message": "there is no SQL to run", "code": "validation_error"}
        return await _editor(console, db, 422, text, error=error)
    try:
        raw = await console.svc.query.run(console.who, QueryRequest(database=full_name, sql=ran))
    except ServiceError as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        error = {
            "message": exc.message,
            "code": exc.code,
            "sqlstate": details.get("sqlstate"),
            "detail": details.get("detail"),
            "hint": details.get("hint"),
            "at": error_at(ran, details.get("position")),
            "selection": ran is not text,
        }
        return await _editor(console, db, exc.status, text, error=error)
    result = json.loads(dumps(raw))  # the values exactly as the API's JSON has them
    return await _editor(console, db, 200, text, result=result, ran=ran)
