"""The table browser: a database's schemas and tables, a table's columns (types,
defaults, keys), indexes and foreign keys, and its rows — paged, sorted, filtered —
with insert, edit and delete for callers who may write (rows are found by their
primary key; a table without one is read-only here).

Everything runs through the query service, as the caller's own database role (the
statement timeout, the row limit and Postgres' own privileges apply, exactly as for
``POST /v1/query``): a reader's writes are refused by Postgres, not by this page. The
SQL is composed with ``psycopg.sql`` (identifiers quoted, values as literals), never by
pasting text."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from psycopg import sql

from ...models import QueryRequest
from ..errors import ServiceError
from ..query.adapters import dumps
from .databases import database_url
from .pages import Console, form_session, platform_page, redirect, to_login
from .sql import cell

router = APIRouter(include_in_schema=False)

PAGE_ROWS = 50
OPERATORS = {
    "=": "=",
    "<>": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "contains": "contains",
    "is null": "is null",
    "is not null": "is not null",
}
"""The filter's operators, as the form names them."""

_TABLES = """
SELECT n.nspname AS schema, c.relname AS name,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
            WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END AS kind,
       GREATEST(c.reltuples, 0)::bigint AS estimated_rows,
       pg_catalog.pg_total_relation_size(c.oid) AS bytes
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname = 'public' DESC, n.nspname, c.relname
"""

_DESCRIBE = """
WITH rel AS (SELECT {oid}::pg_catalog.regclass::pg_catalog.oid AS oid)
SELECT pg_catalog.json_build_object(
  'columns', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
      'not_null', a.attnotnull, 'default', pg_catalog.pg_get_expr(d.adbin, d.adrelid),
      'generated', a.attgenerated <> '' OR a.attidentity = 'a') ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute a
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = (SELECT oid FROM rel) AND a.attnum > 0 AND NOT a.attisdropped),
  'primary_key', (SELECT pg_catalog.json_agg(a.attname ORDER BY k.ord)
    FROM pg_catalog.pg_index x
    CROSS JOIN LATERAL pg_catalog.unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
    WHERE x.indrelid = (SELECT oid FROM rel) AND x.indisprimary),
  'indexes', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', i.relname, 'definition', pg_catalog.pg_get_indexdef(i.oid),
      'primary', x.indisprimary, 'unique', x.indisunique) ORDER BY i.relname)
    FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = (SELECT oid FROM rel)),
  'foreign_keys', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', o.conname, 'definition', pg_catalog.pg_get_constraintdef(o.oid))
      ORDER BY o.conname)
    FROM pg_catalog.pg_constraint o
    WHERE o.conrelid = (SELECT oid FROM rel) AND o.contype = 'f'))
"""


def _relation(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}").format(sql.Identifier(schema, table))


def tables_url(full_name: str, schema: str | None = None, table: str | None = None) -> str:
    url = database_url(full_name, "tables")
    if schema is not None and table is not None:
        url += f"/{quote(schema, safe='')}/{quote(table, safe='')}"
    return url


async def _run(console: Console, full_name: str, statement: sql.Composable) -> dict[str, Any]:
    """``statement`` through the query service; the API's JSON answer."""
    text = statement.as_string(None)
    raw = await console.svc.query.run(console.who, QueryRequest(database=full_name, sql=text))
    answer: dict[str, Any] = json.loads(dumps(raw))
    return answer


def _records(answer: dict[str, Any]) -> list[dict[str, Any]]:
    names = [c["name"] for c in answer["columns"]]
    return [dict(zip(names, row, strict=True)) for row in answer["data"]]


async def describe(console: Console, full_name: str, schema: str, table: str) -> dict[str, Any]:
    """The table's columns, primary key, indexes and foreign keys (404 if it is not
    there, or the caller's role cannot see it)."""
    oid = sql.Literal(_relation(schema, table).as_string(None))
    try:
        answer = await _run(console, full_name, sql.SQL(_DESCRIBE).format(oid=oid))
    except ServiceError as exc:
        if exc.code == "sql_error" and (exc.details or {}).get("sqlstate") == "42P01":
            raise ServiceError(
                404, "table_not_found", f"no table {schema}.{table} in {full_name}"
            ) from None
        raise
    described: dict[str, Any] = answer["data"][0][0]
    for key in ("columns", "primary_key", "indexes", "foreign_keys"):
        described[key] = described.get(key) or []
    return described


def _filter(form: dict[str, str], columns: list[str]) -> tuple[sql.Composable, dict[str, str]]:
    """The WHERE clause of the filter in ``form`` (column, op, value) and the filter
    as it stays in the page's links; an unknown column or operator is a 422."""
    column, op, value = form.get("col", ""), form.get("op", ""), form.get("val", "")
    if not column:
        return sql.SQL(""), {}
    if column not in columns or op not in OPERATORS:
        raise ServiceError(422, "validation_error", "filter on one of the table's columns")
    ident = sql.Identifier(column)
    if op == "is null":
        where = sql.SQL(" WHERE {} IS NULL").format(ident)
    elif op == "is not null":
        where = sql.SQL(" WHERE {} IS NOT NULL").format(ident)
    elif op == "contains":
        pattern = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = sql.SQL(" WHERE {}::pg_catalog.text ILIKE {}").format(ident, sql.Literal(pattern))
    else:
        where = sql.SQL(" WHERE {} " + op + " {}").format(ident, sql.Literal(value))
    return where, {"col": column, "op": op, "val": value}


def _order(sort: str, columns: list[str], key: list[str]) -> tuple[sql.Composable, str]:
    """ORDER BY the column ``sort`` names (``-name``: descending), else the primary
    key, so that pages do not overlap."""
    name = sort.removeprefix("-")
    if name and name not in columns:
        raise ServiceError(422, "validation_error", f"no column {name!r} to sort by")
    by = [name] if name else key
    if not by:
        return sql.SQL(""), ""
    direction = sql.SQL(" DESC" if sort.startswith("-") else "")
    # qualified: the selected key columns (as text) have the same names
    parts = [sql.SQL("{}{}").format(sql.Identifier("t", c), direction) for c in by]
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(parts), sort


async def _rows(
    console: Console, full_name: str, schema: str, table: str, info: dict[str, Any], query: Any
) -> dict[str, Any]:
    columns = [c["name"] for c in info["columns"]]
    where, kept = _filter(dict(query), columns)
    order, sort = _order(query.get("sort", ""), columns, info["primary_key"])
    try:
        page = max(1, int(query.get("page", "1")))
    except ValueError:
        page = 1
    key_text = [
        sql.SQL("t.{}::pg_catalog.text").format(sql.Identifier(c)) for c in info["primary_key"]
    ]
    select = sql.SQL("SELECT {}t.* FROM {} AS t{}{} LIMIT {} OFFSET {}").format(
        sql.SQL(", ").join(key_text) + sql.SQL(", ") if key_text else sql.SQL(""),
        _relation(schema, table),
        where,
        order,
        sql.Literal(PAGE_ROWS + 1),
        sql.Literal((page - 1) * PAGE_ROWS),
    )
    answer = await _run(console, full_name, select)
    width = len(key_text)
    data = answer["data"]
    return {
        "columns": answer["columns"][width:],
        "rows": [{"key": json.dumps(r[:width]), "values": r[width:]} for r in data[:PAGE_ROWS]],
        "page": page,
        "more": len(data) > PAGE_ROWS,
        "filter": kept,
        "sort": sort,
    }


def _about(db: Any, schema: str, table: str, info: dict[str, Any]) -> dict[str, Any]:
    """What a table's pages (its rows, one row) show of it and link to."""
    return {
        "section": "databases",
        "db": db,
        "url": database_url(db.full_name),
        "tables_url": tables_url(db.full_name),
        "table_url": tables_url(db.full_name, schema, table),
        "schema": schema,
        "table": table,
        "info": info,
    }


async def _tables_page(
    console: Console, full_name: str, status: int = 200, flash: str | None = None
) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    tables = _records(await _run(console, full_name, sql.SQL(_TABLES)))
    return console.render(
        "tables.html",
        status,
        title=f"Tables · {db.full_name}",
        section="databases",
        db=db,
        url=database_url(db.full_name),
        tables=tables,
        tables_url=tables_url(db.full_name),
        flash=flash or await console.notice(),
        flash_kind="error" if flash else "ok",
    )


@router.get("/databases/{owner}/{name}/tables", response_class=HTMLResponse)
async def tables_page(request: Request, owner: str, name: str) -> Response:
    return await platform_page(
        request, "Tables", "databases", lambda console: _tables_page(console, f"{owner}/{name}")
    )


async def _table_page(
    console: Console,
    full_name: str,
    schema: str,
    table: str,
    query: Any,
    status: int = 200,
    flash: str | None = None,
) -> HTMLResponse:
    db = await console.svc.databases.get(console.who, full_name)
    info = await describe(console, full_name, schema, table)
    try:
        rows = await _rows(console, full_name, schema, table, info, query)
    except ServiceError as exc:  # a filter Postgres refused (e.g. 'x' for an integer)
        if exc.status != 422 and exc.code not in ("sql_error", "statement_timeout"):
            raise
        flash = flash or f"{exc.message} ({exc.code})"
        status = exc.status if status == 200 else status
        rows = await _rows(console, full_name, schema, table, info, {})
    writable = db.role != "read" and console.who.can_write and bool(info["primary_key"])
    return console.render(
        "table.html",
        status,
        title=f"{schema}.{table} · {db.full_name}",
        **_about(db, schema, table, info),
        data=rows,
        operators=list(OPERATORS),
        writable=writable,
        cell=cell,
        flash=flash or await console.notice(),
        flash_kind="error" if flash else "ok",
    )


@router.get("/databases/{owner}/{name}/tables/{schema}/{table}", response_class=HTMLResponse)
async def table_page(request: Request, owner: str, name: str, schema: str, table: str) -> Response:
    return await platform_page(
        request,
        "Table",
        "databases",
        lambda console: _table_page(
            console, f"{owner}/{name}", schema, table, request.query_params
        ),
    )


# -- writing rows ----------------------------------------------------------------------------


def _key_where(info: dict[str, Any], key_json: str) -> sql.Composable:
    """WHERE the primary key is the row's (its values as text, from the page: untyped
    literals, read by each column's type, so the key's index finds the row)."""
    try:
        values = json.loads(key_json)
    except ValueError:
        values = None
    key = info["primary_key"]
    if not key:
        raise ServiceError(
            422, "no_primary_key", "rows of a table without a primary key are read-only here"
        )
    if (
        not isinstance(values, list)
        or len(values) != len(key)
        or not all(isinstance(v, str) for v in values)
    ):
        raise ServiceError(422, "validation_error", "the row's key is missing or malformed: reload")
    parts = [
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(v))
        for c, v in zip(key, values, strict=True)
    ]
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)


def _assignments(info: dict[str, Any], form: dict[str, str]) -> list[tuple[str, sql.Composable]]:
    """(column, value) of each column the form sets: ``v:<col>`` its text, ``null:<col>``
    checked for NULL; columns left out (or generated) are not set."""
    chosen: list[tuple[str, sql.Composable]] = []
    for column in info["columns"]:
        name = column["name"]
        if column["generated"]:
            continue
        if form.get(f"null:{name}") == "on":
            chosen.append((name, sql.SQL("NULL")))
        elif f"v:{name}" in form and (form[f"v:{name}"] != "" or form.get("mode") == "edit"):
            chosen.append((name, sql.Literal(form[f"v:{name}"])))
    return chosen


def _write(
    schema: str, table: str, info: dict[str, Any], form: dict[str, str]
) -> tuple[sql.Composable, str]:
    action = form.get("action", "")
    relation = _relation(schema, table)
    if action == "insert":
        chosen = _assignments(info, {**form, "mode": "insert"})
        if not chosen:
            return sql.SQL("INSERT INTO {} DEFAULT VALUES").format(relation), "Inserted a row."
        names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in chosen)
        values = sql.SQL(", ").join(v for _, v in chosen)
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(relation, names, values)
        return statement, "Inserted a row."
    where = _key_where(info, form.get("key", ""))
    if action == "update":
        chosen = [c for c in _assignments(info, {**form, "mode": "edit"}) if _changed(c[0], form)]
        if not chosen:
            raise ServiceError(422, "nothing_changed", "no value was changed")
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c), v) for c, v in chosen
        )
        return sql.SQL("UPDATE {} SET {}{}").format(relation, sets, where), "Saved the row."
    if action == "delete":
        return sql.SQL("DELETE FROM {}{}").format(relation, where), "Deleted the row."
    raise ServiceError(422, "validation_error", "insert, update or delete")


def _changed(column: str, form: dict[str, str]) -> bool:
    """Whether the form's value differs from the one it was shown with."""
    was_null = form.get(f"was_null:{column}") == "on"
    now_null = form.get(f"null:{column}") == "on"
    return was_null != now_null or (
        not now_null and form.get(f"v:{column}") != form.get(f"was:{column}")
    )


@router.post("/databases/{owner}/{name}/tables/{schema}/{table}/rows")
async def write_row(request: Request, owner: str, name: str, schema: str, table: str) -> Response:
    console, form = await form_session(request)
    if console is None:
        return to_login(request)
    full_name = f"{owner}/{name}"
    try:
        console.require_platform()
        info = await describe(console, full_name, schema, table)
    except ServiceError as exc:
        return console.error(exc, "Table", section="databases")
    try:
        statement, done = _write(schema, table, info, form)
        answer = await _run(console, full_name, statement)
        if form.get("action") != "insert" and answer.get("row_count") == 0:
            raise ServiceError(409, "row_changed", "that row is no longer there: reload the page")
    except ServiceError as exc:
        return await _table_page(
            console, full_name, schema, table, {}, exc.status, f"{exc.message} ({exc.code})"
        )
    await console.notify(done)
    return redirect(tables_url(full_name, schema, table))


@router.get("/databases/{owner}/{name}/tables/{schema}/{table}/row", response_class=HTMLResponse)
async def row_page(
    request: Request, owner: str, name: str, schema: str, table: str, key: str = ""
) -> Response:
    """One row's edit form, its values as text (NULL apart)."""
    return await platform_page(
        request,
        "Row",
        "databases",
        lambda console: _row(console, f"{owner}/{name}", schema, table, key),
    )


async def _row(console: Console, full_name: str, schema: str, table: str, key: str) -> Response:
    db = await console.svc.databases.get(console.who, full_name)
    info = await describe(console, full_name, schema, table)
    texts = [
        sql.SQL("{}::pg_catalog.text").format(sql.Identifier(c["name"])) for c in info["columns"]
    ]
    select = sql.SQL("SELECT {} FROM {}{}").format(
        sql.SQL(", ").join(texts), _relation(schema, table), _key_where(info, key)
    )
    found = (await _run(console, full_name, select))["data"]
    if not found:
        raise ServiceError(404, "row_not_found", "that row is no longer there")
    return console.render(
        "row.html",
        title=f"A row of {schema}.{table}",
        **_about(db, schema, table, info),
        key=key,
        values=dict(zip([c["name"] for c in info["columns"]], found[0], strict=True)),
        writable=db.role != "read" and console.who.can_write,
    )
